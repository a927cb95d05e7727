#!/usr/bin/env bash
# Set up .venv (first run only) and run the agent's local stack on the embedded CPU default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh cpu,piper,bot,llm
# llama-server: on PATH, cached in ~/.cache, or built once from llama-cpp-python's sources (~7 min).
.venv/bin/python -m servers.llm.binary >/dev/null
exec .venv/bin/python -m servers.launch "$@"
