"""A minimal asyncio client of the ASR server, for benchmarks, tests and scripts.

The bot uses `pipecat_services.asr_stt.ASRServerSTTService` instead; both speak `protocol`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect

from servers.asr import protocol
from servers.auth import auth_headers

MAX_INTERIMS_KEPT = 1000
"""The latest interims are kept for callers to inspect; a session that never ends must not grow."""


class ASRClient:
    """A client of the ASR server (benchmarks and tests; the bot uses `ASRServerSTTService`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.ready: protocol.Ready | None = None
        self.interims: deque[str] = deque(maxlen=MAX_INTERIMS_KEPT)
        self.errors: asyncio.Queue[protocol.Error] = asyncio.Queue()
        self._finals: asyncio.Queue[protocol.Final] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ASRClient:
        self.ws = await connect(
            self.url, max_size=protocol.MAX_MESSAGE_BYTES, additional_headers=auth_headers(self.url)
        )
        message = protocol.parse_server_message(await self.ws.recv())
        if not isinstance(message, protocol.Ready):
            raise RuntimeError(f"expected ready, got {message}")
        self.ready = message
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            message = protocol.parse_server_message(raw)
            if isinstance(message, protocol.Interim):
                self.interims.append(message.text)
            elif isinstance(message, protocol.Final):
                await self._finals.put(message)
            elif isinstance(message, protocol.Error):
                await self.errors.put(message)

    async def send_audio(self, pcm: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(pcm)

    async def soft_finalize(self) -> None:
        assert self.ws is not None
        await self.ws.send(protocol.Finalize(hard=False).to_json())

    async def finalize(self, timeout: float = 10.0) -> protocol.Final:
        """Send a hard finalize and wait for its final transcript."""
        assert self.ws is not None
        await self.ws.send(protocol.Finalize(hard=True).to_json())
        return await asyncio.wait_for(self._finals.get(), timeout)

    async def reopen(self) -> None:
        """The last final was not the turn's end: the next one covers its words too."""
        assert self.ws is not None
        await self.ws.send(protocol.Reopen().to_json())

    async def reset(self) -> None:
        assert self.ws is not None
        await self.ws.send(protocol.Reset().to_json())
