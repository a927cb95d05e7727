"""One bot per call (call_signalling.py, Modal's shape): a real signalling app on loopback, a real
aiortc client, and call workers running our real bot against the loopback model servers.

Only the mailbox is a stand-in: on Modal it is a `modal.Queue`; here an in-memory one with the same
semantics (partitions, receive with a timeout), and `start_call` starts the worker as a task where
Modal would spawn a container.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import uvicorn

from call_signalling import inbox, serve_call, signalling_app
from servers.processes import free_port
from tests.test_bot import one_question

pytestmark = pytest.mark.timeout(300)


class MemoryMailbox:
    """call_signalling's Mailbox in memory, as one process stands in for Modal's Queue."""

    def __init__(self) -> None:
        self.partitions: defaultdict[str, asyncio.Queue] = defaultdict(asyncio.Queue)

    async def send(self, partition: str, message: dict[str, Any]) -> None:
        self.partitions[partition].put_nowait(message)

    async def receive(self, partition: str, timeout: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.partitions[partition].get(), timeout)
        except TimeoutError:
            return None

    async def clear(self, partition: str) -> None:
        self.partitions.pop(partition, None)


class Deployment:
    """The signalling app on a loopback port; each call's worker a task of its own."""

    def __init__(self, answer_timeout_s: float = 60.0, offer_wait_s: float = 30.0) -> None:
        import bot

        self.mailbox = MemoryMailbox()
        self.workers: dict[str, asyncio.Task] = {}
        self.offer_wait_s = offer_wait_s
        self.bot = bot.bot
        self.app = signalling_app(self.mailbox, self.start_call, ice_servers=[], answer_timeout_s=answer_timeout_s)
        self.url = f"http://127.0.0.1:{free_port()}"

    async def start_call(self, session_id: str, body: dict[str, Any]) -> None:
        work = serve_call(self.mailbox, session_id, body, [], self.bot, offer_wait_s=self.offer_wait_s)
        self.workers[session_id] = asyncio.create_task(work)


@contextlib.asynccontextmanager
async def deployed(**options: float) -> AsyncIterator[Deployment]:
    deployment = Deployment(**options)
    port = int(deployment.url.rsplit(":", 1)[1])
    server = uvicorn.Server(uvicorn.Config(deployment.app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield deployment
    finally:
        server.should_exit = True
        await serving
        for worker in deployment.workers.values():
            worker.cancel()
        await asyncio.gather(*deployment.workers.values(), return_exceptions=True)


@pytest.fixture
def bot_env(monkeypatch, asr_server, tts_server, llm_server) -> None:
    """The worker's bot reads its settings from the environment, as in its Modal container."""
    for name, value in (("BOT_ASR_URL", asr_server.url), ("BOT_TTS_URL", tts_server.url),
                        ("BOT_LLM_URL", llm_server.http_url), ("BOT_TEMPERATURE", "0")):  # fmt: skip
        monkeypatch.setenv(name, value)


async def test_two_calls_two_workers_each_answered(bot_env, whisper, say_wav):
    """The Playground's flow (/start, then the session's offer) and a one-request offer at once: each
    call gets its own worker, media flows, each question gets its own spoken answer; hanging up ends
    the worker and clears its inbox."""
    async with deployed() as deployment:
        a, b = await asyncio.gather(
            one_question(deployment.url, whisper, say_wav("What is the capital of France?"), via_start=True),
            one_question(deployment.url, whisper, say_wav("How many legs does a spider have?")),
        )
        assert len(deployment.workers) == 2
        assert "france" in (a.latency or {}).get("user_text", "").lower(), a
        assert "spider" in (b.latency or {}).get("user_text", "").lower(), b
        assert "paris" in a.text and "spider" not in a.text, a
        assert any(w in b.text for w in ("eight", "8")) and "paris" not in b.text, b
        assert a.said and "spider" not in a.said and b.said and "paris" not in b.said, (a, b)
        await asyncio.wait_for(asyncio.gather(*deployment.workers.values()), 30)
        assert not any(inbox(s) in deployment.mailbox.partitions for s in deployment.workers)


async def test_signalling_errors_are_clear_and_bounded():
    """No worker answers: 504 after the bound; a worker nobody offers to ends by itself; bad bodies,
    malformed candidates and made-up session ids are refused (400); ICE candidates for an unknown
    connection are ignored without harm."""
    async with deployed(answer_timeout_s=1.0, offer_wait_s=0.5) as deployment, aiohttp.ClientSession() as http:
        async with http.post(f"{deployment.url}/start", json={"transport": "daily"}) as response:
            assert response.status == 400 and "webrtc only" in (await response.json())["detail"]
        async with http.post(f"{deployment.url}/start", json={}) as response:
            session_id = (await response.json())["sessionId"]
        await asyncio.wait_for(deployment.workers[session_id], 10)  # gave up waiting for an offer
        offer = {"sdp": "v=0", "type": "offer"}
        async with http.post(f"{deployment.url}/sessions/{session_id}/api/offer", json=offer) as response:
            assert response.status == 504 and "did not answer" in (await response.json())["detail"]
        async with http.post(f"{deployment.url}/api/offer", data=b"not json") as response:
            assert response.status == 400
        async with http.post(f"{deployment.url}/api/offer", json={"sdp": 1}) as response:
            assert response.status == 400

        async with http.post(f"{deployment.url}/start", json={}) as response:
            live = (await response.json())["sessionId"]
        patch = {"pc_id": "nobody", "candidates": [{"candidate": "", "sdp_mid": "0", "sdp_mline_index": 0}]}
        async with http.patch(f"{deployment.url}/sessions/{live}/api/offer", json=patch) as response:
            assert response.status == 200
        malformed = {"pc_id": "nobody", "candidates": [{"candidate": 7}]}
        async with http.patch(f"{deployment.url}/sessions/{live}/api/offer", json=malformed) as response:
            assert response.status == 400
        async with http.post(f"{deployment.url}/sessions/{'x' * 80}/api/offer", json=offer) as response:
            assert response.status == 400 and "session id" in (await response.json())["detail"]
        async with http.get(f"{deployment.url}/status") as response:
            assert (await response.json())["status"] == "ready"
        await asyncio.wait_for(deployment.workers[live], 10)
