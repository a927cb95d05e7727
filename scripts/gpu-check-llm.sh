#!/usr/bin/env bash
# llama-server on the borrowed GPU machine: built for CUDA sm_90 from our pinned llama.cpp sources,
# serving a random-weight model of the packaged 1.5B's exact shape, timed over plain HTTP.
#
#   scripts/gpu-check-llm.sh OUT_DIR [--build-only | --serve]
#
#   (default)     build, make the GGUF, start llama-server, time it (OUT_DIR/llm.json), stop it
#   --build-only  build and make the GGUF, nothing else (start it early, in the background; wait for it
#                 before the next call, which then finds both done)
#   --serve       as the default, but leave llama-server running: prints its URL, pid in OUT_DIR/llama.pid
#                 (stop it with `kill $(cat OUT_DIR/llama.pid)`)
#
# Needs what `scripts/gpu-llama-sources.sh` put in .gpu/ (the sources tarball, the model's metadata),
# nvcc, cmake and a python3 with numpy. Each step is skipped when its result is already there (in
# $LLAMA_GPU_WORK, default /tmp/llama-gpu), so a second call after --build-only only serves and times.
# Logs: OUT_DIR/llama-build.log, OUT_DIR/llama-server.log. Env: LLAMA_GPU_JOBS (12), LLAMA_GPU_PORT
# (8002), LLM_RUNS (5), LLM_PROMPT_TOKENS (300), LLM_N_PREDICT (256); LLAMA_SERVER=PATH skips the build
# (to try the rest on a machine without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -ge 1 ]] || { sed -n '5,11p' "$0"; exit 2; }
OUT=$(realpath -m "$1")
MODE=${2:-}
[[ -z $MODE || $MODE == --build-only || $MODE == --serve ]] || { echo "unknown option $MODE" >&2; exit 2; }
WORK=${LLAMA_GPU_WORK:-/tmp/llama-gpu}
JOBS=${LLAMA_GPU_JOBS:-12}
PORT=${LLAMA_GPU_PORT:-8002}
PY=${PYTHON:-python3}
SRC=$WORK/llama.cpp
BUILD=$WORK/build
BIN=${LLAMA_SERVER:-$BUILD/bin/llama-server}
META=.gpu/qwen2.5-1.5b-meta.json.xz
GGUF=$WORK/qwen2.5-1.5b-random.gguf
mkdir -p "$OUT" "$WORK"

unpack() {
    [[ -f $SRC/CMakeLists.txt ]] && return
    tar -xJf .gpu/llama.cpp.tar.xz -C "$WORK"
}

cuda_flags() {
    # The toolkit's own cuBLAS and libcuda when it has them; otherwise the pip wheels' cuBLAS
    # (PyTorch's, nvidia/cu13/...) and the driver's libcuda.so.1.
    local nvcc roots inc lib driver
    nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    roots=("$(dirname "$(dirname "$(readlink -f "$nvcc")")")" "${CUDA_HOME:-/usr/local/cuda}" /usr/local/cuda)
    echo "-DCMAKE_CUDA_COMPILER=$nvcc"
    if [[ -z $(find "${roots[@]}" -name cublas_v2.h -path '*include*' -print -quit 2>/dev/null) ]]; then
        inc=$($PY -c 'import glob, nvidia; print(next(iter(sorted(h for p in nvidia.__path__ for h in glob.glob(p + "/*/include/cublas_v2.h"))), ""))' 2>/dev/null || true)
        [[ -n $inc ]] || { echo "no cuBLAS headers in ${roots[*]} nor in python3's nvidia packages" >&2; return 1; }
        inc=$(dirname "$inc")
        lib=$(dirname "$inc")/lib
        echo "-DCMAKE_CUDA_FLAGS=-I$inc"
        echo "-DCUDA_cublas_LIBRARY=$(ls "$lib"/libcublas.so* | head -1)"
        echo "-DCUDA_cublasLt_LIBRARY=$(ls "$lib"/libcublasLt.so* | head -1)"
    fi
    if [[ -z $(find "${roots[@]}" -name libcuda.so -print -quit 2>/dev/null) ]]; then
        driver=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
        echo "-DCUDA_cuda_driver_LIBRARY=${driver:-/usr/local/nvidia/lib64/libcuda.so.1}"
    fi
}

build() {
    [[ -x $BIN ]] && return
    unpack
    local flags no_amx start
    cuda_flags >"$WORK/cuda-flags" || exit 1
    mapfile -t flags <"$WORK/cuda-flags"
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # as servers/llm/binary.py (llama.cpp#20824)
    flags+=(
        -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF
        "-DCMAKE_C_FLAGS=$no_amx" "-DCMAKE_CXX_FLAGS=$no_amx"
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90
        # Lean: flash attention's vector kernels only for the f16 KV cache we use (not 4 type pairs),
        # and no fatbin compression (~10 % of each CUDA compile). Measured on a 2-core AMD EPYC: 2,610
        # core-seconds (141 CUDA objects 2,030, 191 C/C++ 580; the longest 59 s): ~4.5 min at -j 10.
        -DGGML_CUDA_FA_QUANTS=f16-f16 -DGGML_CUDA_COMPRESSION_MODE=none
    )
    command -v ninja >/dev/null && flags+=(-G Ninja)
    echo "building llama-server (CUDA sm_90, -j $JOBS), log: $OUT/llama-build.log"
    start=$(date +%s)
    if ! { cmake -S "$SRC" -B "$BUILD" "${flags[@]}" &&
           cmake --build "$BUILD" --target llama-server -j "$JOBS"; } >"$OUT/llama-build.log" 2>&1; then
        grep -E "error:|Error|FAILED:" "$OUT/llama-build.log" | tail -20 || tail -20 "$OUT/llama-build.log"
        echo "llama-server build failed (log: $OUT/llama-build.log)" >&2
        exit 1
    fi
    echo $(($(date +%s) - start)) >"$WORK/build-seconds"
    echo "llama-server built in $(cat "$WORK/build-seconds") s"
}

model() {
    [[ -f $GGUF ]] && return
    unpack
    PYTHONPATH="$SRC/gguf-py${PYTHONPATH:+:$PYTHONPATH}" $PY -m benchmarks.random_gguf "$META" "$GGUF"
}

serve() {
    # The flags servers/llm/server.py gives llama-server on a GPU (llama_server_command), default sizes.
    setsid "$BIN" --host 127.0.0.1 --port "$PORT" --model "$GGUF" --alias qwen2.5-1.5b-random \
        --ctx-size 4096 --parallel 1 --threads "$(nproc)" --gpu-layers 999 --flash-attn on \
        --cache-reuse 256 --cache-ram 512 --jinja --reasoning off --no-webui --cors-origins localhost \
        --metrics --log-colors off >"$OUT/llama-server.log" 2>&1 </dev/null &
    echo $! >"$OUT/llama.pid"
}

model
build
[[ $MODE == --build-only ]] && exit 0

serve
PID=$(cat "$OUT/llama.pid")
trap 'kill "$PID" 2>/dev/null || true' EXIT  # kept running only with --serve, once timed
URL=http://127.0.0.1:$PORT
GPU=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
$PY -m benchmarks.llm_load "$URL" --pid "$PID" --json "$OUT/llm.json" \
    --runs "${LLM_RUNS:-5}" --prompt-tokens "${LLM_PROMPT_TOKENS:-300}" --n-predict "${LLM_N_PREDICT:-256}" \
    --info "model=$(basename "$GGUF") (random weights, the packaged 1.5B's shape and quant types)" \
    --info "gpu=${GPU:-none}" --info "build_s=$(cat "$WORK/build-seconds" 2>/dev/null || echo prebuilt)" \
    --info "llama_server=$("$BIN" --version 2>&1 | grep -m1 version || true)"
if [[ $MODE == --serve ]]; then
    trap - EXIT
    echo "llama-server serving at $URL (pid $PID, in $OUT/llama.pid)"
fi
