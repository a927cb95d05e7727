"""A minimal asyncio client of the TTS server, for benchmarks, tests and scripts.

The bot uses `pipecat_services.tts.TTSServerTTSService` instead; both speak `protocol`. Frames are
read only when the caller asks (`receive`, `collect`), so a caller that stops reading exerts the
WebSocket's backpressure on the server, as a slow real client would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from websockets.asyncio.client import ClientConnection, connect

from servers.auth import auth_headers
from servers.tts import protocol


@dataclass(frozen=True)
class Audio:
    """One binary frame: PCM s16le mono at the server's sample rate, for `context_id`."""

    context_id: str
    pcm: bytes


class TTSServerError(RuntimeError):
    """The TTS server sent an error."""

    def __init__(self, error: protocol.Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


@dataclass
class Reply:
    """What one context produced, in order of arrival."""

    context_id: str
    audio: bytearray = field(default_factory=bytearray)
    messages: list[protocol.Message] = field(default_factory=list)
    first_audio_at: float | None = None
    """`time.perf_counter()` when its first audio arrived."""

    @property
    def segments(self) -> list[protocol.SegmentDone]:
        return [m for m in self.messages if isinstance(m, protocol.SegmentDone)]

    @property
    def done(self) -> protocol.Done | None:
        return next((m for m in self.messages if isinstance(m, protocol.Done)), None)


OnAudio = Callable[[Reply], Awaitable[None]]


class TTSClient:
    """A client of the TTS server (benchmarks and tests; the bot uses `TTSServerTTSService`)."""

    def __init__(self, url: str, open_timeout: float = 10.0) -> None:
        self.url = url
        self.open_timeout = open_timeout
        self.ws: ClientConnection | None = None
        self.ready: protocol.Ready | None = None

    async def __aenter__(self) -> TTSClient:
        self.ws = await connect(
            self.url, max_size=None, open_timeout=self.open_timeout, additional_headers=auth_headers(self.url)
        )
        message = await self.receive(timeout=self.open_timeout)
        if not isinstance(message, protocol.Ready):
            raise RuntimeError(f"expected ready, got {message}")
        self.ready = message
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.ws is not None:
            await self.ws.close()

    @property
    def sample_rate(self) -> int:
        assert self.ready is not None, "not connected"
        return self.ready.sample_rate

    async def send(self, message: protocol.Message) -> None:
        assert self.ws is not None, "not connected"
        await self.ws.send(message.to_json())

    async def start(self, context_id: str, voice: str | None = None, language: str | None = None) -> None:
        await self.send(protocol.Start(context_id, voice, language))

    async def text(self, context_id: str, text: str) -> None:
        await self.send(protocol.Text(context_id, text))

    async def flush(self, context_id: str) -> None:
        await self.send(protocol.Flush(context_id))

    async def cancel(self, context_id: str) -> None:
        await self.send(protocol.Cancel(context_id))

    async def mark(self, context_id: str, mark_id: str) -> None:
        await self.send(protocol.Mark(context_id, mark_id))

    async def receive(self, timeout: float | None = 60.0) -> Audio | protocol.Message:
        """The next frame: `Audio` or a server message (errors included, not raised)."""
        assert self.ws is not None, "not connected"
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(raw, bytes):
            return Audio(*protocol.unpack_audio(raw))
        return protocol.parse_server_message(raw)

    async def collect(self, context_id: str, on_audio: OnAudio | None = None, timeout: float = 60.0) -> Reply:
        """Read until `done` for `context_id`. Anything for another context is a protocol violation
        here (contexts are spoken in order), and an error message raises `TTSServerError`."""
        reply = Reply(context_id)
        while reply.done is None:
            frame = await self.receive(timeout)
            if isinstance(frame, protocol.Error):
                raise TTSServerError(frame)
            if getattr(frame, "context_id", context_id) != context_id:
                raise RuntimeError(f"{frame!r:.100} while reading {context_id!r}")
            if isinstance(frame, Audio):
                reply.first_audio_at = reply.first_audio_at or time.perf_counter()
                reply.audio += frame.pcm
                if on_audio is not None:
                    await on_audio(reply)
            else:
                reply.messages.append(frame)
        return reply

    async def speak(
        self, context_id: str, *texts: str, on_audio: OnAudio | None = None, timeout: float = 60.0
    ) -> Reply:
        """One whole reply: start, each text as its own message (as an LLM sends them), flush, collect."""
        await self.start(context_id)
        for text in texts:
            await self.text(context_id, text)
        await self.flush(context_id)
        return await self.collect(context_id, on_audio, timeout)
