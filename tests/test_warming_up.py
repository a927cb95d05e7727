"""Ready means ready, and a call never waits in silence: a bot whose llama-server is not up yet (loading,
starting late, restarting) says it is warming up on /status and the Playground page, a call that
connects hears "One moment, please." (without the TTS server), and its question is answered once
llama-server is up."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest

from benchmarks.webrtc_client import WebRTCVoiceClient
from pipecat_services.model_readiness import ModelServers, health_url
from servers.processes import LocalServer, free_port
from tests.conftest import RestartableServer

pytestmark = [pytest.mark.servers, pytest.mark.timeout(300)]


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def until_listening(url: str, timeout: float = 120.0) -> tuple[int, str]:
    """The first answer of a server that is starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await get(url)
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def transcribe(whisper, audio: np.ndarray) -> str:
    return (await whisper.transcribe(audio.astype(np.float32) / 32768)).lower()


async def test_a_call_before_the_llm_is_up_hears_one_moment_then_its_answer(
    tmp_path_factory, asr_server, tts_server, whisper, say_wav
):
    logs = tmp_path_factory.mktemp("warming_up")
    llm = RestartableServer("servers.llm", ["--model", "smollm2-135m"], logs / "llm.log")  # not started yet
    env = {"BOT_ASR_URL": asr_server.url, "BOT_TTS_URL": tts_server.url, "BOT_LLM_URL": llm.http_url,
           "BOT_TEMPERATURE": "0"}  # fmt: skip
    bot = LocalServer("bot", ["-t", "webrtc", "--host", "127.0.0.1"], logs / "bot.log", health="/status", env=env)
    bot.start()
    client = WebRTCVoiceClient(bot.http_url)
    try:
        status, body = await until_listening(f"{bot.http_url}/status")
        assert status == 503 and '"waiting_for":["LLM"]' in body, body
        status, page = await get(f"{bot.http_url}/client/")
        assert status == 503 and "warming up" in page and "LLM" in page

        connected = time.monotonic()
        await client.connect()
        moment = await client.wait_for_reply(connected, timeout=30)
        assert moment is not None, "the call started in silence"
        assert "one moment" in await transcribe(whisper, client.audio.between(moment[0] - 0.1, moment[1] + 0.1))

        speech_end = await client.say(say_wav("What is the capital of France?"))  # llama-server still down
        llm.start()
        reply = await client.wait_for_reply(speech_end, timeout=120)
        assert reply is not None, "the question asked before llama-server was up got no answer"
        said = await transcribe(whisper, client.audio.between(reply[0] - 0.1, reply[1] + 0.1))
        assert "paris" in said, said

        await asyncio.to_thread(llm.wait_healthy)
        assert (await get(f"{bot.http_url}/status"))[0] == 200
        assert (await get(f"{bot.http_url}/client/"))[0] == 200
    finally:
        await client.close()
        bot.stop()
        llm.stop()


async def test_readiness_names_each_server_that_is_not_ready(asr_server, tts_server):
    unused = LocalServer("servers.llm", [])  # a port nothing listens on
    servers = ModelServers(asr_server.url, tts_server.url, unused.http_url)
    assert await servers.waiting_for() == ["LLM"]
    assert await ModelServers(asr_server.url, tts_server.url, None).waiting_for() == []
    assert health_url("wss://x--asr-serve.modal.run") == "https://x--asr-serve.modal.run/health"


async def test_a_request_answered_loading_waits_for_the_model_and_is_sent_again():
    """The backend's rule in isolation (a stand-in answering as llama-server does while it loads: 503
    "Loading model" everywhere, /health included): the request waits for /health and goes again."""
    from aiohttp import web

    from pipecat_services.llm.llama_server.client import LlamaServerBackend, LlamaServerError

    loaded = asyncio.Event()
    asked: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(request.path)
        if not loaded.is_set():
            return web.json_response({"error": {"code": 503, "message": "Loading model"}}, status=503)
        if request.path == "/health":
            return web.json_response({"status": "ok"})
        return web.json_response({"prompt": "<|im_start|>user"})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    backend, impatient = LlamaServerBackend(url, server_wait_s=30), LlamaServerBackend(url, server_wait_s=0)
    try:
        render = asyncio.create_task(backend.render([{"role": "user", "content": "hi"}]))
        while asked.count("/health") < 2:  # it asked, was told "loading", and is waiting on /health
            await asyncio.sleep(0.05)
        assert not render.done()
        loaded.set()
        assert await render == "<|im_start|>user"
        assert asked.count("/apply-template") == 2
        loaded.clear()
        with pytest.raises(LlamaServerError, match="not loaded after 0 s"):
            await impatient.render([{"role": "user", "content": "hi"}])
    finally:
        await backend.close()
        await impatient.close()
        await runner.cleanup()
