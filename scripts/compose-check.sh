#!/usr/bin/env bash
# Build the compose stack's cpu profile, bring it up, ask the bot one spoken question through its
# published port, take it down (scripts/compose_check.py). --probe: is a container engine usable here?
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/compose_check.py "$@"
