# syntax=docker/dockerfile:1
# The NVIDIA engines, one image for both GPU model servers (Nemotron Speech ASR, Magpie TTS): they
# need the same NeMo stack, which is nearly all of the image, so one build serves both services.
#
# Base: NVIDIA's PyTorch container, multi-arch (linux/amd64 for an RTX 5090, linux/arm64 for a DGX
# Spark; `docker build` picks the host's): Python 3.12, PyTorch 2.9.0a0+145a3a7bda.nv25.10 built for
# CUDA 13.0 with kernels for sm_120 and sm_121, Ubuntu 24.04. No framework is built: pip adds NeMo and
# our code on top; only pyopenjtalk (a C++ extension of the `magpie` extra, sdist only) compiles, with
# the container's compilers.
#
# Keeping NVIDIA's builds: since 25.10 the container's own pip constraint file no longer pins them, so
# a requirement that wants another torch would quietly replace NVIDIA's CUDA build with PyPI's. Every
# installed package with a local version (`+...`: torch, torchvision, triton, flash-attn...) is a build
# no index has; those are added to the constraints, and pip fails loudly instead.
# scripts/nemo_image_resolve.py runs this resolution without Docker or the NGC image (PyPI only),
# against a stand-in of the image.
# For another release, e.g. CUDA 13.1 on a Spark: --build-arg BASE_IMAGE=nvcr.io/nvidia/pytorch:25.12-py3
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.10-py3
FROM ${BASE_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY pyproject.toml README.md ./
COPY servers servers
COPY pipecat_services pipecat_services
COPY benchmarks benchmarks
COPY scripts/keep-image-builds.sh scripts/keep-image-builds.sh
# hadolint ignore=DL3013
RUN scripts/keep-image-builds.sh > /tmp/keep-image-builds.txt \
    && PIP_CONSTRAINT=/tmp/keep-image-builds.txt pip install ".[nemo,magpie]" \
    && python -c "import pyopenjtalk; pyopenjtalk.g2p('テスト')"
# The last line fetches pyopenjtalk's dictionary (a GitHub download at first use) into the image now,
# not in a running server. Checkpoints come from the `models` volume (servers/model_fetch.py), offline.
WORKDIR /app
ENV HF_HOME=/models/huggingface HF_HUB_OFFLINE=1
