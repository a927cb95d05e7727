"""Streaming TTS WebSocket server: replies (contexts) in, audio out, cancel at any chunk boundary.

Run: `python -m servers.tts --engine piper` (embedded CPU default) or `--engine magpie` (NeMo).
The protocol is in `servers/tts/protocol.py`.

All model work runs on one worker thread per engine: sessions take turns chunk by chunk, so two
sessions can never corrupt shared model state, and a cancel stops a reply at the next chunk.
Every chunk is bounded whatever the text: segments are cut to a bounded length and their spoken
form into parts of at most the engine's `max_part_chars` (`servers/segmentation.py`'s
`split_bounded`), so a long reply delays another session's first audio by one part at most and the
engine's memory stays bounded.
Audio leaves through the WebSocket's flow control: a client that stops reading stops its own
reply, so nothing queues up for it. A reply is synthesized at most `max_lead_s` of audio ahead of
its playback (from its first audio on, in real time): a long text takes the engine a few parts per
few seconds instead of all of it at once, so other sessions find the engine free, and a barge-in
wastes at most that much synthesis.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from servers import metrics
from servers.cli import add_flag, add_limit_flags, add_server_flags, main_with_clear_errors, session_limits
from servers.nemo_loading import TTS_MODEL
from servers.ports import TTS_PORT
from servers.segmentation import ReplySegmentation, Segmenter, split_bounded
from servers.serving import ModelServer, SessionLimits
from servers.tts import protocol
from servers.tts.engines.base import TTSEngine
from servers.tts.protocol import ErrorCode, ProtocolError
from servers.tts.text import normalize

DEFAULT_PORT = TTS_PORT
MAX_LEAD_S = 10.0
"""Default of --max-lead-s: enough that playback never waits, even with a slow part now and then."""
MAX_OPEN_CONTEXTS = 16
SEND_CHUNK_S = 0.2
"""Audio goes out in frames of at most this much, whatever the engine's chunk size."""


@dataclass
class Context:
    """One reply: its text queue and where it stands."""

    id: str
    voice: str
    language: str
    segmenter: Segmenter = field(default_factory=Segmenter)
    segments: asyncio.Queue[str | protocol.Mark | None] = field(default_factory=asyncio.Queue)
    queued_chars: int = 0
    """Characters in `segments` not yet spoken: with the segmenter's, bounded by MAX_PENDING_CHARS."""
    flushed: bool = False
    cancelled: bool = False
    samples: int = 0
    first_text_at: float | None = None
    """When its first text arrived (loop time), until its first audio is sent: the first-audio metric."""
    first_audio_at: float | None = None
    """When its first audio was sent (loop time): playback, in real time, starts about then."""

    def queue(self, item: str | protocol.Mark | None) -> None:
        self.queued_chars += _chars(item)
        self.segments.put_nowait(item)

    async def next_segment(self) -> str | protocol.Mark | None:
        item = await self.segments.get()
        self.queued_chars -= _chars(item)
        return item


def _chars(item: str | protocol.Mark | None) -> int:
    return len(item) if isinstance(item, str) else len(item.id) + 1 if isinstance(item, protocol.Mark) else 0


class TTSServer(ModelServer):
    """The TTS server: sessions of contexts, one engine worker taking their segments in turn."""

    kind = "tts"

    def __init__(
        self,
        engine: TTSEngine,
        max_part_chars: int | None = None,
        limits: SessionLimits = SessionLimits(),
        max_lead_s: float = MAX_LEAD_S,
    ) -> None:
        super().__init__(engine, limits)
        self.max_part_chars = max_part_chars or engine.max_part_chars
        self.max_lead_s = max_lead_s
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tts-{engine.name}")

    async def load_engine(self) -> None:
        await self.run_on_worker(self.engine.load)

    async def warm_up(self) -> None:
        e = self.engine
        await self.run_on_worker(lambda: list(e.synthesize("Hello there.", e.voices[0], e.languages[0], True)))

    def ready_message(self) -> protocol.Ready:
        e = self.engine
        return protocol.Ready(
            engine=e.name, sample_rate=e.sample_rate, voices=list(e.voices), languages=list(e.languages)
        )

    async def run_on_worker(self, fn: Any, *args: Any) -> Any:
        depth = metrics.QUEUE_DEPTH.labels(self.kind)
        depth.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)
        finally:
            depth.dec()

    async def handle(self, ws: ServerConnection) -> None:
        await self.loaded.wait()
        await Session(self, ws, self.session_name()).serve()


class Session:
    """One connection: parses messages, keeps its contexts, speaks them in the order they started."""

    def __init__(self, server: TTSServer, ws: ServerConnection, name: str) -> None:
        self.server = server
        self.engine = server.engine
        self.ws = ws
        self.name = name
        self.contexts: dict[str, Context] = {}
        self.order: asyncio.Queue[Context] = asyncio.Queue()

    async def send_error(self, code: str, message: str, context_id: str | None) -> None:
        metrics.ERRORS.labels("tts", str(code)).inc()
        await self.send(protocol.Error(code=code, message=message, context_id=context_id))

    async def send(self, message: protocol.Message | bytes) -> None:
        try:
            await self.ws.send(message if isinstance(message, bytes) else message.to_json())
        except ConnectionClosed:
            pass

    async def serve(self) -> None:
        logger.info(f"{self.name}: connected from {self.ws.remote_address}")
        await self.send(self.server.ready_message())
        speaker = asyncio.create_task(self.speak_in_order())
        try:
            async for raw in self.ws:
                try:
                    if isinstance(raw, bytes):
                        raise ProtocolError(ErrorCode.BINARY_NOT_ACCEPTED, "send text as JSON messages")
                    await self.on_message(protocol.parse_client_message(raw))
                except ProtocolError as e:
                    logger.warning(f"{self.name}: {e.code}: {e}")
                    await self.send_error(e.code, str(e), e.context_id)
        except ConnectionClosed as e:
            logger.info(f"{self.name}: closed abruptly ({e})")
        finally:
            for context in self.contexts.values():
                context.cancelled = True
            speaker.cancel()
            logger.info(f"{self.name}: gone")

    async def on_message(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.Start):
            self.start(message.context_id, message.voice, message.language)
        elif isinstance(message, protocol.Text):
            context = self.contexts.get(message.context_id) or self.start(message.context_id, None, None)
            self.add_text(context, message.text)
        elif isinstance(message, protocol.Flush):
            self.flush(self.open_context(message.context_id))
        elif isinstance(message, protocol.Mark):
            context = self.open_context(message.context_id)
            self.check_room(context, len(message.id) + 1)
            for segment in context.segmenter.flush():
                context.queue(segment)
            context.queue(message)
        elif isinstance(message, protocol.Cancel):
            context = self.contexts.pop(message.context_id, None)
            if context is None:
                raise ProtocolError(ErrorCode.UNKNOWN_CONTEXT, "nothing to cancel", message.context_id)
            context.cancelled = True
            context.queue(None)
            await self.send(protocol.Done(context_id=context.id, audio_ms=self.audio_ms(context), cancelled=True))

    def start(self, context_id: str, voice: str | None, language: str | None) -> Context:
        if context_id in self.contexts:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "context already started", context_id)
        if len(self.contexts) >= MAX_OPEN_CONTEXTS:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"more than {MAX_OPEN_CONTEXTS} open contexts", context_id)
        voice = voice or self.engine.voices[0]
        language = language or self.engine.languages[0]
        if voice not in self.engine.voices:
            raise ProtocolError(
                ErrorCode.UNKNOWN_VOICE, f"unknown voice {voice!r}; have {self.engine.voices}", context_id
            )
        if language not in self.engine.languages:
            raise ProtocolError(
                ErrorCode.UNKNOWN_LANGUAGE, f"unknown language {language!r}; have {self.engine.languages}", context_id
            )
        for earlier in self.contexts.values():
            if not earlier.flushed:
                self.flush(earlier)
        rule = ReplySegmentation(first_words=self.engine.first_segment_words)
        context = Context(context_id, voice, language, Segmenter(rule))
        self.contexts[context_id] = context
        self.order.put_nowait(context)
        return context

    def flush(self, context: Context) -> None:
        context.flushed = True
        for segment in context.segmenter.flush():
            context.queue(segment)
        context.queue(None)

    def open_context(self, context_id: str) -> Context:
        context = self.contexts.get(context_id)
        if context is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_CONTEXT, "no such context (never started, or already done)", context_id
            )
        if context.flushed:
            raise ProtocolError(ErrorCode.CONTEXT_CLOSED, "context already flushed", context_id)
        return context

    def add_text(self, context: Context, text: str) -> None:
        self.open_context(context.id)
        self.check_room(context, len(text))
        if context.first_text_at is None:
            context.first_text_at = asyncio.get_running_loop().time()
        for segment in context.segmenter.add(text):
            context.queue(segment)

    def check_room(self, context: Context, chars: int) -> None:
        """Text is accepted faster than it is spoken; what waits is bounded (the client retries later)."""
        if context.segmenter.pending + context.queued_chars + chars > protocol.MAX_PENDING_CHARS:
            raise ProtocolError(
                ErrorCode.TEXT_TOO_LONG, f"more than {protocol.MAX_PENDING_CHARS} characters queued", context.id
            )

    def audio_ms(self, context: Context) -> float:
        return round(context.samples * 1000 / self.engine.sample_rate, 1)

    async def speak_in_order(self) -> None:
        while True:
            context = await self.order.get()
            try:
                await self.speak(context)
            except Exception as e:
                logger.exception(f"{self.name}: synthesis failed for {context.id}")
                await self.send_error(ErrorCode.INTERNAL, f"synthesis failed: {e}", context.id)
                self.contexts.pop(context.id, None)

    async def speak(self, context: Context) -> None:
        index = 0
        while (segment := await context.next_segment()) is not None and not context.cancelled:
            if isinstance(segment, protocol.Mark):
                await self.send(segment)
                continue
            text = normalize(segment)
            if not text:
                continue
            samples = 0
            for i, part in enumerate(split_bounded(text, self.server.max_part_chars)):
                await self.keep_pace(context)
                samples += await self.synthesize(context, part, first=index == 0 and i == 0)
                if context.cancelled:
                    return
            audio_ms = round(samples * 1000 / self.engine.sample_rate, 1)
            await self.send(protocol.SegmentDone(context.id, index, text, audio_ms, written=segment))
            index += 1
        if not context.cancelled:
            self.contexts.pop(context.id, None)
            await self.send(protocol.Done(context_id=context.id, audio_ms=self.audio_ms(context)))

    async def synthesize(self, context: Context, text: str, first: bool) -> int:
        """Stream one part's audio; stop at the next chunk once the context is cancelled."""
        chunks: Iterator[np.ndarray] = self.engine.synthesize(text, context.voice, context.language, first)
        step = int(SEND_CHUNK_S * self.engine.sample_rate)
        samples = 0
        try:
            while not context.cancelled:
                chunk = await self.server.run_on_worker(next, chunks, None)
                if chunk is None or context.cancelled:
                    break
                for i in range(0, len(chunk), step):
                    if context.cancelled:
                        break
                    piece = chunk[i : i + step]
                    samples += len(piece)
                    context.samples += len(piece)  # before the send: a cancel's `done` counts every piece sent
                    self.count_audio(context, len(piece))
                    await self.send(protocol.pack_audio(context.id, piece.astype("<i2").tobytes()))
        finally:
            await self.server.run_on_worker(chunks.close)
        return samples

    async def keep_pace(self, context: Context) -> None:
        """Wait while the reply is more than `max_lead_s` of audio ahead of its playback."""
        if context.first_audio_at is None or self.server.max_lead_s <= 0:
            return
        played_s = asyncio.get_running_loop().time() - context.first_audio_at
        ahead_s = context.samples / self.engine.sample_rate - played_s
        if ahead_s > self.server.max_lead_s:
            await asyncio.sleep(ahead_s - self.server.max_lead_s)

    def count_audio(self, context: Context, samples: int) -> None:
        metrics.AUDIO_SECONDS.labels("tts").inc(samples / self.engine.sample_rate)
        if context.first_audio_at is None:
            context.first_audio_at = asyncio.get_running_loop().time()
        if context.first_text_at is not None:
            metrics.TTS_FIRST_AUDIO.observe(context.first_audio_at - context.first_text_at)
            context.first_text_at = None


def build_engine(args: argparse.Namespace) -> TTSEngine:
    if args.engine == "piper":
        from servers.tts.engines.piper import PiperEngine

        return PiperEngine(model_path=args.piper_model, config_path=args.piper_config)
    from servers.tts.engines.magpie import MagpieEngine

    return MagpieEngine(model=args.magpie_model)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_flags(parser, "TTS", DEFAULT_PORT)
    add_limit_flags(parser, "TTS")
    add_flag(parser, "--engine", "TTS_ENGINE", "piper", "engine", choices=["piper", "magpie"])
    add_flag(parser, "--piper-model", "TTS_PIPER_MODEL", None, "Piper .onnx voice (default: packaged en_US joe)")
    add_flag(parser, "--piper-config", "TTS_PIPER_CONFIG", None, "Piper voice .onnx.json (default: next to the model)")
    add_flag(
        parser,
        "--max-part-chars",
        "TTS_MAX_PART_CHARS",
        None,
        "longest text synthesized in one engine call (default: the engine's); shorter: fairer, longer: smoother",
        type=int,
    )
    add_flag(
        parser,
        "--max-lead-s",
        "TTS_MAX_LEAD_S",
        MAX_LEAD_S,
        "synthesize a reply at most this many seconds of audio ahead of its playback (0: as fast as possible)",
    )
    add_flag(
        parser,
        "--magpie-model",
        "TTS_MAGPIE_MODEL",
        TTS_MODEL,
        "Hugging Face name or local .nemo path",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    server = TTSServer(build_engine(args), args.max_part_chars, session_limits(args), args.max_lead_s)
    await server.serve(args.host, args.port, protocol.MAX_MESSAGE_BYTES)


def main(argv: list[str] | None = None) -> None:
    main_with_clear_errors("tts server", serve, parse_args(argv))
