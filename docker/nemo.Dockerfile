# syntax=docker/dockerfile:1
# The NVIDIA engines, one image for both GPU model servers (Nemotron Speech ASR, Magpie TTS): they
# need the same NeMo stack, which is nearly all of the image, so one build serves both services.
#
# Base: NVIDIA's PyTorch container. It is multi-arch (linux/amd64 for an RTX 5090, linux/arm64 for
# a DGX Spark; `docker build` picks the host's), its CUDA 13.0 build of PyTorch has kernels for
# sm_120 and sm_121, and it runs on both hosts' drivers (CUDA 13.0 and 13.1). No framework is built:
# pip adds NeMo and our code on top (only pyopenjtalk, a small C++ extension of the `magpie` extra,
# compiles, with the container's compilers). The container's pip constraints
# (/etc/pip/constraint.txt) keep its PyTorch, so NeMo installs around it.
# For another release, e.g. CUDA 13.1 on a Spark: --build-arg BASE_IMAGE=nvcr.io/nvidia/pytorch:25.12-py3
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.10-py3
FROM ${BASE_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY servers servers
COPY pipecat_services pipecat_services
COPY benchmarks benchmarks
# hadolint ignore=DL3013
RUN pip install ".[nemo,magpie]"
WORKDIR /app
# Checkpoints go to the `models` volume the compose file mounts at /cache (first start downloads).
ENV HF_HOME=/cache/huggingface NEMO_CACHE_DIR=/cache/nemo
