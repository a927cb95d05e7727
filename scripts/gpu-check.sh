#!/usr/bin/env bash
# The GPU check: one prepared command for a borrowed NVIDIA machine (one H200, 16 cores, Python 3.12
# with torch + CUDA, nvcc, cmake; no NeMo, no pipecat, no network). Under 8 minutes it measures:
#   1. the real-size NVIDIA engines (random weights) on CUDA: python -m benchmarks.nvidia_engines
#   2. llama-server built for CUDA (sm_90) from our pinned llama.cpp, serving a random-weight model
#      of the packaged 1.5B's shape: TTFT and decode speed (scripts/gpu-check-llm.sh)
#   3. Magpie's first audio with that llama-server idle vs decoding on the same GPU
# Results as JSON (and the printed tables) in $1, else $OUT, else ./gpu-check-results.
#
# What must travel with the repository (made on a machine with PyPI, both git-ignored):
#   scripts/gpu-wheels.sh          NeMo and the packages it needs, as wheels, into .whl/
#   scripts/gpu-llama-sources.sh   trimmed llama.cpp sources + the 1.5B's metadata, into .gpu/
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:-gpu-check-results}}")
mkdir -p "$out"
started=$(date +%s)
left() { echo $((started + ${GPU_CHECK_BUDGET_S:-450} - $(date +%s))); }
until_left() { local s=$(($(left) - $1)); echo $((s > 1 ? s : 1)); }  # seconds to spend, keeping $1 for later steps
log() { echo "gpu-check [$(($(date +%s) - started)) s] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

site=/tmp/gpu-check-site
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || log "installing .whl/ failed"
fi
export PYTHONPATH="$site:$PWD"
export PYTHONUNBUFFERED=1

if [ -f .gpu/llama.cpp.tar.xz ]; then
  log "building llama-server in the background (log: $out/llama-build.log)"
  LLAMA_GPU_JOBS=10 setsid scripts/gpu-check-llm.sh "$out" --build-only >"$out/llama-prepare.txt" 2>&1 &
  builder=$!  # its own process group (no job control here: setsid runs in place), so a build that runs out of time can be stopped whole
else
  log "no .gpu/llama.cpp.tar.xz (scripts/gpu-llama-sources.sh): skipping llama-server"
  builder=""
fi

log "real-size NVIDIA engines on CUDA"
if python3 -c "import nemo.collections.asr, nemo.collections.tts" >"$out/nemo-import.txt" 2>&1; then
  timeout $(until_left 150) python3 -m benchmarks.nvidia_engines --device cuda --jsonl "$out/nvidia_engines.jsonl" \
    2>"$out/nvidia_engines.log" | tee "$out/nvidia_engines.txt"
else
  log "NeMo does not import (carried wheels: scripts/gpu-wheels.sh):"
  tail -5 "$out/nemo-import.txt"
fi

if [ -n "$builder" ]; then
  log "waiting for the llama-server build"
  timeout $(until_left 90) tail --pid="$builder" -f /dev/null
  if kill -0 "$builder" 2>/dev/null; then
    kill -- "-$builder"
    log "llama-server build did not finish in time: $(tail -3 "$out/llama-prepare.txt")"
  elif wait "$builder"; then
    log "llama-server: timing (and leaving it up for the shared-GPU measurement)"
    timeout "$(until_left 10)" scripts/gpu-check-llm.sh "$out" --serve | tee "$out/llm.txt"
    if [ -f "$out/llama.pid" ] && [ "$(left)" -gt 30 ]; then
      timeout $(until_left 10) python3 -m benchmarks.nvidia_engines --device cuda --parts tts --sessions 1 --quick \
        --llm-url "http://127.0.0.1:${LLAMA_GPU_PORT:-8002}" --jsonl "$out/shared_gpu.jsonl" \
        2>"$out/shared_gpu.log" | tee "$out/shared_gpu.txt"
    fi
    [ -f "$out/llama.pid" ] && kill "$(cat "$out/llama.pid")" 2>/dev/null
  else
    log "llama-server build failed: $(tail -3 "$out/llama-prepare.txt")"
  fi
fi
log "done; results in $out"
ls -la "$out"
