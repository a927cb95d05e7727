"""Session logic of the ASR server that needs a controllable engine: audio before `ready`.

The engine here is a stand-in whose load we can hold back; everything else (server class,
WebSocket transport, protocol) is real.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from servers.asr import protocol
from servers.asr.engines.base import ASREngine, ASRStream
from servers.asr.server import ASRServer


class CountingStream(ASRStream):
    samples = 0

    async def feed(self, samples: np.ndarray) -> None:
        self.samples += len(samples)

    async def finalize(self, hard: bool) -> str:
        return f"{self.samples} samples"

    async def reset(self) -> None:
        self.samples = 0


class HeldBackEngine(ASREngine):
    name = "held-back"

    def __init__(self) -> None:
        self.release = threading.Event()

    def load(self) -> None:
        self.release.wait(10)

    def open_stream(self, on_interim) -> ASRStream:
        return CountingStream(on_interim)


async def test_audio_before_ready_is_refused_then_accepted():
    engine = HeldBackEngine()
    server = ASRServer(engine)
    async with serve(server.handle, "127.0.0.1", 0) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        loading = asyncio.create_task(server.load())
        assert server.health() == (False, {"engine": "held-back", "sessions": 0})
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send(b"\x00\x00" * 160)
            error = protocol.parse_server_message(await asyncio.wait_for(ws.recv(), 5))
            assert error == protocol.Error(code="not_ready", message="wait for the ready message")
            engine.release.set()
            await loading
            ready = protocol.parse_server_message(await asyncio.wait_for(ws.recv(), 5))
            assert isinstance(ready, protocol.Ready) and ready.engine == "held-back"
            await ws.send(b"\x00\x00" * 160)
            await ws.send(protocol.Finalize(hard=True).to_json())
            final = protocol.parse_server_message(await asyncio.wait_for(ws.recv(), 5))
            assert isinstance(final, protocol.Final) and final.text == "160 samples"
            assert final.audio_ms == 10.0
