"""Shared fixtures: spoken test sentences (espeak-ng) and real servers on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.audio import NaturalVoice, read_wav, speak
from servers.processes import LocalServer

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [
    "What is the capital of France?",
    "Please turn on the lights in the kitchen.",
    "How many legs does a spider have?",
    "Tell me a short story about a brave little dog.",
    "The weather today is sunny and warm.",
    "Can you remind me to call my mother tomorrow?",
]


class RestartableServer(LocalServer):
    """A model server started as its own process, the way users run it."""

    async def crash_and_restart(self, after: Awaitable) -> None:
        """Once `after` is done, kill the server (no clean close), then start it again on the same port."""
        await after
        self.kill()
        await asyncio.to_thread(self.run)


SERVER_FIXTURES = {
    "asr_server",
    "tts_server",
    "llm_server",
    "tool_llm_server",
    "bot_server",
    "tool_bot_server",
    "whisper",
}
"""The shared fixtures that start a server or load a model: a test using one (directly or through another
fixture) is marked `servers`, which `scripts/test.sh --fast` leaves out. Modules whose own fixtures do
the same say `pytestmark = pytest.mark.servers`."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


BOT_VOICE = "en-us+m3"
"""The espeak-ng voice Whisper tiny.en hears best ("of France", not "and friends")."""


@pytest.fixture(scope="session")
def say_wav(tmp_path_factory: pytest.TempPathFactory):
    """Speech for the bot to hear: text → 16 kHz int16 audio."""
    folder = tmp_path_factory.mktemp("bot_speech")

    def make(text: str) -> np.ndarray:
        return read_wav(speak(text, folder / f"{abs(hash(text))}.wav", voice=BOT_VOICE, words_per_minute=150))

    return make


@pytest.fixture(scope="session")
def say_natural():
    """Speech in Piper's neural voice, text → 16 kHz int16: a phone line's 4 kHz leaves its words
    intelligible, and espeak-ng's formant voices' not (docs/phone.md)."""
    return NaturalVoice().say


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray]]:
    """(text, 16 kHz int16 audio) for each test sentence."""
    folder = tmp_path_factory.mktemp("speech")
    return [(text, read_wav(speak(text, folder / f"{i}.wav"))) for i, text in enumerate(SENTENCES)]


def serve_for_session(
    factory: pytest.TempPathFactory, module: str, args: list[str], **kwargs
) -> Iterator[RestartableServer]:
    server = RestartableServer(module, args, factory.mktemp("logs") / f"{module}.log", **kwargs)
    server.run()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def asr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableServer]:
    yield from serve_for_session(tmp_path_factory, "servers.asr", ["--engine", "whisper"])


@pytest.fixture(scope="session")
def tts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableServer]:
    yield from serve_for_session(tmp_path_factory, "servers.tts", ["--engine", "piper"])


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableServer]:
    """llama-server with SmolLM2-135M from its package: small enough for CI, real enough for the protocol."""
    yield from serve_for_session(tmp_path_factory, "servers.llm", ["--model", "smollm2-135m"])


@pytest.fixture(scope="session")
def tool_llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableServer]:
    """llama-server with the packaged Qwen2.5 1.5B, the embedded default: the 0.5B calls tools but
    rarely speaks their results."""
    yield from serve_for_session(tmp_path_factory, "servers.llm", ["--model", "qwen2.5-1.5b"])


def serve_bot(
    factory: pytest.TempPathFactory,
    asr: RestartableServer,
    tts: RestartableServer,
    llm: RestartableServer,
    settings: dict[str, str] | None = None,
    transport: tuple[str, ...] = ("-t", "webrtc"),
) -> Iterator[RestartableServer]:
    """The bot on Pipecat's runner (by default the Playground's, /api/offer), wired to these model
    servers, greedy; `settings`: more BOT_* variables (or others)."""
    env = {"BOT_ASR_URL": asr.url, "BOT_TTS_URL": tts.url, "BOT_LLM_URL": llm.http_url, "BOT_TEMPERATURE": "0"}
    env |= settings or {}
    yield from serve_for_session(factory, "bot", [*transport, "--host", "127.0.0.1"], health="/status", env=env)


@pytest.fixture(scope="session")
def bot_server(
    tmp_path_factory: pytest.TempPathFactory,
    asr_server: RestartableServer,
    tts_server: RestartableServer,
    llm_server: RestartableServer,
) -> Iterator[RestartableServer]:
    """The bot on SmolLM2 (CI-sized)."""
    yield from serve_bot(tmp_path_factory, asr_server, tts_server, llm_server)


@pytest.fixture(scope="session")
def tool_bot_server(
    tmp_path_factory: pytest.TempPathFactory,
    asr_server: RestartableServer,
    tts_server: RestartableServer,
    tool_llm_server: RestartableServer,
) -> Iterator[RestartableServer]:
    """The bot with its default tools on the embedded 1.5B (SmolLM2 cannot call tools), writing
    call transcripts (its `env["BOT_TRANSCRIPTS"]`)."""
    transcripts = {"BOT_TRANSCRIPTS": str(tmp_path_factory.mktemp("transcripts"))}
    yield from serve_bot(tmp_path_factory, asr_server, tts_server, tool_llm_server, transcripts)


@pytest.fixture(scope="session")
def mcp_bot_server(
    tmp_path_factory: pytest.TempPathFactory,
    asr_server: RestartableServer,
    tts_server: RestartableServer,
    tool_llm_server: RestartableServer,
) -> Iterator[RestartableServer]:
    """The bot on the embedded 1.5B with `get_weather` from a real MCP server (benchmarks/mcp_server.py,
    stdio: one process per call), besides its own tools."""
    config = tmp_path_factory.mktemp("mcp") / "mcp.json"
    server = {"command": sys.executable, "args": ["-m", "benchmarks.mcp_server"], "env": {"PYTHONPATH": str(ROOT)}}
    config.write_text(json.dumps({"mcpServers": {"bench": {**server, "tools": ["get_weather"]}}}))
    yield from serve_bot(tmp_path_factory, asr_server, tts_server, tool_llm_server, {"BOT_MCP": str(config)})


@pytest.fixture(scope="session")
def whisper():
    """The embedded ASR engine, in process: transcribes what the TTS says."""
    from servers.asr.engines.whisper import WhisperEngine

    engine = WhisperEngine()
    engine.load()
    return engine
