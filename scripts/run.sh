#!/usr/bin/env bash
# Set up .venv (first run only) and run the agent's local stack on the embedded CPU default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh cpu,piper,bot
exec .venv/bin/python -m servers.launch "$@"
