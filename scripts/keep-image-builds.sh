#!/usr/bin/env bash
# Print pip constraints that keep a container's own builds: the lines of its pip constraint file
# (PIP_CONSTRAINT, if any), and every installed package whose version has a local part (`+...`),
# which no package index serves. Used by docker/nemo.Dockerfile, modal_app.py's NeMo image and
# scripts/nemo_image_resolve.py.
set -euo pipefail
python="${PYTHON:-python}"
for file in ${PIP_CONSTRAINT:-}; do
    if [[ -f "$file" ]]; then grep -v '^\s*#' "$file" | grep -v '^\s*$' || true; fi
done
"$python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null | grep -F '+' || true
