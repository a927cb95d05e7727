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
    """A stand-in stream that counts what it is fed."""

    samples = 0

    async def feed(self, samples: np.ndarray) -> None:
        self.samples += len(samples)

    async def finalize(self, hard: bool) -> str:
        return f"{self.samples} samples"

    async def reset(self) -> None:
        self.samples = 0


class HeldBackEngine(ASREngine):
    """A stand-in engine whose load waits until the test lets it go."""

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


class HeldFinalizeStream(CountingStream):
    """A stand-in stream whose finalize waits until the test lets it go."""

    def __init__(self, on_interim, finalizing: threading.Event, release: asyncio.Event) -> None:
        super().__init__(on_interim)
        self.finalizing, self.release = finalizing, release

    async def finalize(self, hard: bool) -> str:
        self.finalizing.set()
        await self.release.wait()
        return await super().finalize(hard)


class WarmUpEngine(ASREngine):
    """A stand-in engine whose streams' finalize the test holds: its warm-up inference can be caught midway."""

    name = "warm-up"

    def __init__(self) -> None:
        self.streams: list[HeldFinalizeStream] = []
        self.finalizing = threading.Event()
        self.release = asyncio.Event()

    def load(self) -> None:
        pass

    def open_stream(self, on_interim) -> ASRStream:
        self.streams.append(HeldFinalizeStream(on_interim, self.finalizing, self.release))
        return self.streams[-1]


async def test_ready_only_after_one_inference():
    """/health turns ready once the loaded engine has transcribed a second of audio, not at load."""
    engine = WarmUpEngine()
    server = ASRServer(engine)
    loading = asyncio.create_task(server.load())
    assert await asyncio.to_thread(engine.finalizing.wait, 5)
    assert server.health()[0] is False
    engine.release.set()
    await asyncio.wait_for(loading, 5)
    assert server.health()[0] is True
    assert [s.samples for s in engine.streams] == [engine.sample_rate]
