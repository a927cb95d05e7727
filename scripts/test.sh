#!/usr/bin/env bash
# Set up everything the tests need, then run them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh cpu,piper,bot,nemo,dev
exec .venv/bin/python -m pytest "$@"
