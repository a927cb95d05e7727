#!/usr/bin/env bash
# Create .venv and install the project with the given extras (default: cpu,piper,bot).
# Usage: scripts/setup.sh [extras]      e.g. scripts/setup.sh cpu,bot,nemo,dev
# Idempotent: reinstalls only when pyproject.toml or the extras change.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,piper,bot}"
python="${PYTHON:-python3}"

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
# The Playground browser test drives Debian's chromium (Playwright never downloads a browser here).
if [[ ",$extras," == *",dev,"* ]]; then command -v chromium >/dev/null || need_apt+=(chromium); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else sudo="none"; fi
  if [ "$sudo" = none ]; then
    echo "setup: please install ${need_apt[*]} (Debian/Ubuntu: apt-get install ${need_apt[*]})" >&2
  else
    echo "setup: installing ${need_apt[*]}"
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$(echo "$extras" | tr ',' '-')"
digest="$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  exit 0
fi
echo "setup: installing .[${extras}] into .venv (first time takes a few minutes; log: .venv/pip.log)"
pip_install() { .venv/bin/pip install "$@" >> .venv/pip.log 2>&1 || { tail -30 .venv/pip.log >&2; exit 1; }; }
: > .venv/pip.log
pip_install --upgrade pip
if [[ ",$extras," == *",nemo,"* ]] && ! command -v nvidia-smi >/dev/null; then
  # No GPU: the CPU build of torch. An unpinned torch would pull several GB of CUDA wheels.
  echo "torch==2.13.0" > .venv/constraints.txt
  pip_install "torch==2.13.0"
  constraint=(--constraint .venv/constraints.txt)
else
  constraint=()
fi
pip_install "${constraint[@]}" -e ".[${extras}]"
echo "$digest" > "$stamp"
