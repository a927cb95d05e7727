# syntax=docker/dockerfile:1
# The GPU LLM (docker/compose.yaml's llm-gpu): llama-server built for one CUDA architecture from the
# llama.cpp sources that llama-cpp-python 0.3.36 vendors (the version servers/llm/binary.py builds and
# the tests run), on CUDA 13.0, which driver 580.65.06 and newer run on an RTX 5090 and a DGX Spark
# alike (servers/gpu_driver.py checks the host first). llama.cpp's prebuilt image is on a newer CUDA
# (docker/compose.llama-prebuilt.yaml).
#   CUDA_ARCH=120a-real   RTX 5090 (sm_120): the default on amd64
#   CUDA_ARCH=121a-real   DGX Spark GB10 (sm_121): the default on arm64
#   CUDA_ARCH="120a-real;121a-real"   both, for an image shared by the two
# One architecture keeps the build to minutes (llama.cpp's default list compiles seven).
# The platform follows the host (nvidia/cuda images are multi-arch); builds need no GPU.
ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
# Empty: chosen by the platform being built (TARGETARCH, set by BuildKit).
ARG CUDA_ARCH=
ARG TARGETARCH
ARG LLAMA_CPP_PYTHON=0.3.36
ARG LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# Distribution packages follow the base image release (pinning their versions breaks on updates).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ libssl-dev python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The sdist is the one copy of llama.cpp a package registry serves; its hash is pinned.
RUN pip3 download --no-deps --no-binary :all: --dest /tmp "llama-cpp-python==${LLAMA_CPP_PYTHON}" \
    && echo "${LLAMA_CPP_PYTHON_SHA256}  /tmp/llama_cpp_python-${LLAMA_CPP_PYTHON}.tar.gz" | sha256sum -c - \
    && tar -xzf "/tmp/llama_cpp_python-${LLAMA_CPP_PYTHON}.tar.gz" --strip-components=3 \
        "llama_cpp_python-${LLAMA_CPP_PYTHON}/vendor/llama.cpp"
# Same options as servers/llm/binary.py (static, no prebuilt web UI), plus CUDA for one architecture;
# --allow-shlib-undefined: libcuda comes from the host driver at run time, not from this image.
RUN arch="${CUDA_ARCH:-$([ "${TARGETARCH}" = arm64 ] && echo 121a-real || echo 120a-real)}" \
    && echo "CUDA architectures: ${arch}" \
    && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF \
        -DGGML_NATIVE=OFF -DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${arch}" \
        -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined \
    && cmake --build build --target llama-server -j"$(nproc)"

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libgomp1 libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/llama-server /usr/local/bin/llama-server
ENTRYPOINT ["llama-server"]
