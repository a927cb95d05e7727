#!/usr/bin/env bash
# What the borrowed GPU machine needs for llama-server, small enough to travel (64 MB in all):
#
#   scripts/gpu-llama-sources.sh [SDIST]
#
#   .gpu/llama.cpp.tar.xz          llama.cpp as vendored by our pinned llama-cpp-python sdist, cut
#                                  down to what `cmake --target llama-server` needs with the CPU and
#                                  CUDA backends, plus gguf-py (benchmarks/random_gguf.py writes with it)
#   .gpu/qwen2.5-1.5b-meta.json.xz the packaged 1.5B's metadata, tokenizer and tensor table, from which
#                                  benchmarks/random_gguf.py makes a random-weight GGUF of its exact shape
#
# SDIST (default $LLAMA_SDIST, else /tmp/lcp/..., else `pip download`) is llama-cpp-python's sdist at
# the version servers/llm/binary.py pins. Nothing here is edited: the tarball holds the files as they
# are, only fewer of them. The machine cannot reach a model hub or PyPI, so all of this is carried.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
VERSION=$($PY -c 'from servers.llm.binary import LLAMA_CPP_PYTHON; print(LLAMA_CPP_PYTHON)')
TOP="llama_cpp_python-$VERSION"
SDIST=${1:-${LLAMA_SDIST:-/tmp/lcp/$TOP.tar.gz}}
OUT=.gpu
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >>.git/info/exclude
mkdir -p "$OUT"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [[ ! -f $SDIST ]]; then
    echo "downloading llama-cpp-python $VERSION sources (76 MB)"
    $PY -m pip download -q --no-deps --no-binary :all: --dest "$WORK" "llama-cpp-python==$VERSION"
    SDIST="$WORK/$TOP.tar.gz"
fi
tar -xzf "$SDIST" -C "$WORK" "$TOP/vendor/llama.cpp"
SRC="$WORK/$TOP/vendor/llama.cpp"
STAGE="$WORK/llama.cpp"
mkdir -p "$STAGE"

# Whole folders the build reads. ggml/src keeps its own files and two backends: CPU and CUDA
# (CMake adds a backend's folder only when it is on; the CUDA one globs its .cu files, so it goes whole).
# tools/ goes nearly whole: tools/CMakeLists.txt adds every tool, and llama-app (on by default) links
# their libraries. scripts/ui-assets.cmake writes the (empty) web UI the server embeds.
KEEP=(CMakeLists.txt LICENSE licenses cmake include src common vendor app tools
      ggml/CMakeLists.txt ggml/cmake ggml/include ggml/src/ggml-cpu ggml/src/ggml-cuda
      scripts/ui-assets.cmake gguf-py/gguf gguf-py/LICENSE gguf-py/pyproject.toml)
(cd "$SRC" && cp -r --parents "${KEEP[@]}" "$STAGE")
find "$SRC/ggml/src" -maxdepth 1 -type f -exec cp {} "$STAGE/ggml/src/" \;

# Not needed to build or to run the server: the web UI's sources (its CMake files stay), tests,
# sample media, docs.
find "$STAGE/tools/ui" -mindepth 1 -maxdepth 1 \
    ! -name CMakeLists.txt ! -name sources.cmake ! -name '*.in' -exec rm -rf {} +
rm -rf "$STAGE"/tools/server/{tests,bench} "$STAGE"/tools/mtmd/{tests,test-*} "$STAGE"/gguf-py/gguf/scripts
find "$STAGE" \( -name '*.md' -o -name '*.png' -o -name '*.jpg' -o -name '*.gguf' \) -delete

tar -C "$WORK" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - llama.cpp |
    xz -T0 -9 >"$OUT/llama.cpp.tar.xz.tmp"
mv "$OUT/llama.cpp.tar.xz.tmp" "$OUT/llama.cpp.tar.xz"

PYTHONPATH="$STAGE/gguf-py" $PY -m benchmarks.random_gguf --extract qwen2.5-1.5b "$OUT/qwen2.5-1.5b-meta.json.xz"
ls -l "$OUT/llama.cpp.tar.xz" "$OUT/qwen2.5-1.5b-meta.json.xz"
