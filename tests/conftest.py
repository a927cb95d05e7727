"""Shared fixtures: spoken test sentences (espeak-ng) and real servers on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.audio import read_wav, speak
from benchmarks.servers import ROOT, free_port
from servers.common import wait_healthy

SENTENCES = [
    "What is the capital of France?",
    "Please turn on the lights in the kitchen.",
    "How many legs does a spider have?",
    "Tell me a short story about a brave little dog.",
    "The weather today is sunny and warm.",
    "Can you remind me to call my mother tomorrow?",
]


class ServerProcess:
    """A model server started as its own process, the way users run it."""

    def __init__(
        self, module: str, args: list[str], log: Path, health: str = "/health", env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.module, self.args, self.log, self.health, self.env = module, args, log, health, env or {}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", self.module, "--port", str(self.port), *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        wait_healthy(f"http://127.0.0.1:{self.port}{self.health}", self.process)

    async def crash_and_restart(self, after: Awaitable) -> None:
        """Once `after` is done, kill the server (no clean close), then start it again on the same port."""
        await after
        self.process.kill()
        await asyncio.to_thread(self.start)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray]]:
    """(text, 16 kHz int16 audio) for each test sentence."""
    folder = tmp_path_factory.mktemp("speech")
    return [(text, read_wav(speak(text, folder / f"{i}.wav"))) for i, text in enumerate(SENTENCES)]


def serve_for_session(
    factory: pytest.TempPathFactory, module: str, args: list[str], **kwargs
) -> Iterator[ServerProcess]:
    server = ServerProcess(module, args, factory.mktemp("logs") / f"{module}.log", **kwargs)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def asr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_for_session(tmp_path_factory, "servers.asr", ["--engine", "whisper"])


@pytest.fixture(scope="session")
def tts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_for_session(tmp_path_factory, "servers.tts", ["--engine", "piper"])


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """llama-server with SmolLM2-135M from its package: small enough for CI, real enough for the protocol."""
    yield from serve_for_session(tmp_path_factory, "servers.llm", ["--model", "smollm2-135m"])


@pytest.fixture(scope="session")
def tool_llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """llama-server with the packaged Qwen2.5 1.5B, the embedded default: the 0.5B calls tools but
    rarely speaks their results."""
    yield from serve_for_session(tmp_path_factory, "servers.llm", ["--model", "qwen2.5-1.5b"])


def serve_bot(
    factory: pytest.TempPathFactory, asr: ServerProcess, tts: ServerProcess, llm: ServerProcess
) -> Iterator[ServerProcess]:
    """The bot on Pipecat's runner (Playground, /api/offer), wired to these model servers, greedy."""
    env = {"BOT_ASR_URL": asr.url, "BOT_TTS_URL": tts.url, "BOT_LLM_URL": llm.http_url, "BOT_TEMPERATURE": "0"}
    yield from serve_for_session(factory, "bot", ["-t", "webrtc", "--host", "127.0.0.1"], health="/status", env=env)


@pytest.fixture(scope="session")
def bot_server(
    tmp_path_factory: pytest.TempPathFactory,
    asr_server: ServerProcess,
    tts_server: ServerProcess,
    llm_server: ServerProcess,
) -> Iterator[ServerProcess]:
    """The bot on SmolLM2 (CI-sized)."""
    yield from serve_bot(tmp_path_factory, asr_server, tts_server, llm_server)


@pytest.fixture(scope="session")
def tool_bot_server(
    tmp_path_factory: pytest.TempPathFactory,
    asr_server: ServerProcess,
    tts_server: ServerProcess,
    tool_llm_server: ServerProcess,
) -> Iterator[ServerProcess]:
    """The bot with its default tools on the embedded 1.5B (SmolLM2 cannot call tools)."""
    yield from serve_bot(tmp_path_factory, asr_server, tts_server, tool_llm_server)


@pytest.fixture(scope="session")
def whisper():
    """The embedded ASR engine, in process: transcribes what the TTS says."""
    from servers.asr.engines.whisper import WhisperEngine

    engine = WhisperEngine()
    engine.load()
    return engine
