"""Safe to expose: the model servers' token, bind refusal, per-client limits, and /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from servers.asr import protocol as asr_protocol
from servers.asr.client import ASRClient
from servers.processes import ROOT, LocalServer, free_port
from servers.tts.client import TTSClient
from tests.conftest import serve_for_session
from tests.test_bot import one_question

pytestmark = pytest.mark.servers

TOKEN = "test-token-0123456789"
SECURED = {"MODEL_SERVER_TOKEN": TOKEN}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def secured_asr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve_for_session(
        tmp_path_factory, "servers.asr", ["--engine", "whisper", "--max-sessions-per-client", "2"], env=SECURED
    )


@pytest.fixture(scope="module")
def secured_tts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    yield from serve_for_session(
        tmp_path_factory,
        "servers.tts",
        ["--engine", "piper", "--max-sessions", "2", "--idle-timeout", "5"],
        env=SECURED,
    )


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def handshake_status(url: str, headers: dict[str, str]) -> int:
    """101 if the WebSocket opens (and the server greets it), else the HTTP status that refused it."""
    try:
        async with connect(url, additional_headers=headers) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            return 101
    except InvalidStatus as e:
        return e.response.status_code


@pytest.mark.parametrize("server", ["secured_asr", "secured_tts"])
async def test_the_token_is_checked_at_the_handshake(server, request):
    url = request.getfixturevalue(server).url
    assert await handshake_status(url, {}) == 401
    assert await handshake_status(url, {"Authorization": "Bearer not-the-token"}) == 401
    assert await handshake_status(url, {"Authorization": TOKEN}) == 401  # not a bearer token
    assert await handshake_status(url, BEARER) == 101
    http = url.replace("ws://", "http://")
    assert get(f"{http}/health")[0] == 200  # open: it says nothing
    assert get(f"{http}/metrics")[0] == 401
    assert get(f"{http}/metrics", BEARER)[0] == 200


@pytest.mark.parametrize("module", ["servers.asr", "servers.tts", "servers.llm"])
def test_a_lan_address_without_a_token_refuses_to_start(module):
    cmd = [sys.executable, "-m", module, "--host", "0.0.0.0", "--port", str(free_port())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SERVER_TOKEN")}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr and "--insecure" in result.stderr
    assert "Traceback" not in result.stderr


def test_llama_server_started_with_the_token_refuses_requests_without_it(tmp_path):
    server = LocalServer("servers.llm", ["--model", "smollm2-135m"], tmp_path / "llm.log", env=SECURED)
    server.run(timeout=120)
    try:
        body = json.dumps({"prompt": "Hello", "n_predict": 2}).encode()
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401), (BEARER, 200)):
            request = urllib.request.Request(f"{server.http_url}/completion", body, headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    assert response.status == status
            except urllib.error.HTTPError as e:
                assert e.code == status, e.read()
        assert get(f"{server.http_url}/health")[0] == 200
    finally:
        server.stop()


async def test_one_client_cannot_take_every_session(secured_asr, speech, monkeypatch):
    monkeypatch.setenv("MODEL_SERVER_TOKEN", TOKEN)
    text, audio = speech[0]
    async with ASRClient(secured_asr.url) as first, ASRClient(secured_asr.url) as second:
        with pytest.raises(InvalidStatus) as refused:
            async with ASRClient(secured_asr.url):
                pass
        assert refused.value.response.status_code == 429
        assert b"too many sessions" in refused.value.response.body
        # The sessions already open are not disturbed.
        for client in (first, second):
            for i in range(0, len(audio), 1600):
                await client.send_audio(audio[i : i + 1600].tobytes())
            final = await client.finalize(timeout=60)
            assert "capital" in final.text.lower(), final
    deadline = asyncio.get_running_loop().time() + 30
    while json.loads(get(f"{secured_asr.http_url}/health")[1])["sessions"]:
        assert asyncio.get_running_loop().time() < deadline, "the server never noticed they left"
        await asyncio.sleep(0.05)
    async with ASRClient(secured_asr.url) as again:  # room again
        assert again.ready is not None


async def test_a_full_server_and_an_idle_session(secured_tts, monkeypatch):
    """Two sessions fill the server: a third is refused (503), the two are served; a session with
    nothing going either way is closed (4008), and that makes room again."""
    monkeypatch.setenv("MODEL_SERVER_TOKEN", TOKEN)
    async with TTSClient(secured_tts.url) as first, TTSClient(secured_tts.url) as idle:
        with pytest.raises(InvalidStatus) as refused:
            async with TTSClient(secured_tts.url):
                pass
        assert refused.value.response.status_code == 503
        reply = await first.speak("c1", "Still here.")
        assert reply.done is not None and len(reply.audio) > 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # the idle session sends nothing and is sent nothing: closed after the timeout
                await asyncio.wait_for(idle.ws.recv(), timeout=60)
        assert closed.value.rcvd.code == 4008


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    return sum(
        sample.value for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )  # fmt: skip


async def test_metrics_move_with_real_sessions(secured_asr, secured_tts, speech, monkeypatch):
    monkeypatch.setenv("MODEL_SERVER_TOKEN", TOKEN)
    asr_metrics = lambda: get(f"{secured_asr.http_url}/metrics", BEARER)[1]  # noqa: E731
    tts_metrics = lambda: get(f"{secured_tts.http_url}/metrics", BEARER)[1]  # noqa: E731
    asr_before, tts_before = asr_metrics(), tts_metrics()
    text, audio = speech[1]
    async with ASRClient(secured_asr.url) as client:
        assert metric(asr_metrics(), "model_server_sessions", server="asr") >= 1
        for i in range(0, len(audio), 1600):
            await client.send_audio(audio[i : i + 1600].tobytes())
        await client.finalize(timeout=60)
        await client.ws.send(b"\x00\x00\x00")  # an odd-sized frame: an error code
        assert (await asyncio.wait_for(client.errors.get(), 30)).code == asr_protocol.ErrorCode.BAD_AUDIO
    async with TTSClient(secured_tts.url) as tts:
        await tts.speak("m1", "Metrics, please.")
    asr_after, tts_after = asr_metrics(), tts_metrics()
    assert (
        metric(asr_after, "asr_final_latency_seconds_count")
        == metric(asr_before, "asr_final_latency_seconds_count") + 1
    )
    heard = metric(asr_after, "model_server_audio_seconds_total", server="asr")
    heard -= metric(asr_before, "model_server_audio_seconds_total", server="asr")
    assert heard == pytest.approx(len(audio) / 16000, rel=0.01)
    assert metric(asr_after, "model_server_errors_total", server="asr", code="bad_audio") == 1
    assert metric(tts_after, "tts_first_audio_seconds_count") == metric(tts_before, "tts_first_audio_seconds_count") + 1
    assert metric(tts_after, "model_server_audio_seconds_total", server="tts") > 0


@pytest.fixture(scope="module")
def secured_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """The whole stack with the token: servers check it, the bot's three clients send it."""
    asr, tts, llm = (
        LocalServer(module, args, tmp_path_factory.mktemp("logs") / f"{module}.log", env=SECURED)
        for module, args in (
            ("servers.asr", ["--engine", "whisper"]), ("servers.tts", ["--engine", "piper"]),
            ("servers.llm", ["--model", "smollm2-135m"]),
        )
    )  # fmt: skip
    servers = [asr, tts, llm]
    for server in servers:
        server.run()
    env = {
        **SECURED,
        "BOT_ASR_URL": asr.url,
        "BOT_TTS_URL": tts.url,
        "BOT_LLM_URL": llm.http_url,
        "BOT_TEMPERATURE": "0",
    }
    bot = LocalServer("bot", ["-t", "webrtc", "--host", "127.0.0.1"], tmp_path_factory.mktemp("logs") / "bot.log",
                      health="/status", env=env)  # fmt: skip
    bot.run()
    yield bot
    for server in (bot, *servers):
        server.stop()


async def test_the_right_token_works_end_to_end_through_the_bot(secured_bot, whisper, say_wav):
    answer = await one_question(secured_bot.http_url, whisper, say_wav("What is the capital of France?"))
    assert answer.latency is not None and "capital" in answer.latency["user_text"].lower(), answer
    assert "paris" in answer.text and "capital" in answer.said, answer  # its answer, and heard over WebRTC
