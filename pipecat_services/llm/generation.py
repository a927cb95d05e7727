"""One reply streamed from the backend into the token history and out to the TTS: `ReplyGenerator`.

The reply goes on from its first token (sampled by itself: it decides whether the reply is a call),
every token's id going back into the history. Text that may start a tool call is held back from the
TTS (`tool_calls.call_start`).

Interleaved (`Interleaving` given): the reply is generated in segments (`segments.py`). A segment is
pushed whole, followed by a mark, and the next one starts only when the TTS has synthesized it:
exactly one wait per segment, so LLM and TTS never run at the same time. Without it the reply
streams token by token.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from loguru import logger
from pipecat.frames.frames import Frame

from pipecat_services.interleaving import Interleaver
from pipecat_services.llm.backend import LLMBackend, Piece
from pipecat_services.llm.segments import Segmenting
from pipecat_services.llm.token_history import TokenHistory
from pipecat_services.llm.tool_calls import call_start
from servers.segmentation import FIRST_SEGMENT_WORDS


@dataclass(frozen=True)
class Interleaving:
    """How a reply is cut into segments that wait for the TTS."""

    interleaver: Interleaver
    segment_tokens: int = 32
    """Later segments end at the first sentence end after this many tokens..."""
    max_segment_tokens: int = 96
    """...and at this many at the latest."""
    first_segment_words: tuple[int, int] | None = FIRST_SEGMENT_WORDS
    """The first ends at a phrase boundary after (min, max) words."""
    waiting_segments: int | None = None
    """How many segments wait for the TTS (None: all; 1: only the first, then the reply streams)."""

    def segmenting(self, index: int) -> Segmenting:
        """Where segment number `index` of a reply ends."""
        return Segmenting(index == 0, self.segment_tokens, self.max_segment_tokens, self.first_segment_words)


@dataclass(frozen=True)
class ServerSpeed:
    """Milliseconds per token the server took to evaluate a prompt and to generate."""

    prompt_ms: float
    decode_ms: float

    @classmethod
    def from_timings(cls, timings: dict[str, Any]) -> ServerSpeed | None:
        """From llama-server's `timings` (None unless both were measured)."""
        prompt, decode = timings.get("prompt_per_token_ms"), timings.get("predicted_per_token_ms")
        return cls(prompt, decode) if prompt and decode else None


@dataclass(frozen=True)
class Streamed:
    """What one request generated: the speech, and what was held back from it as a possible call."""

    speech: str
    held: str
    tokens: int
    finished: bool


@dataclass(frozen=True)
class Generated:
    """A whole reply: the tokens it took, and the text held back from the TTS as a possible call."""

    tokens: int
    held: str


class ReplyOutput(Protocol):
    """Where a reply goes: the LLM service."""

    async def speak(self, text: str) -> None:
        """Push `text` to the TTS."""

    async def push_frame(self, frame: Frame) -> None:
        """Push a frame downstream (an interleaving mark)."""

    async def report_cache(self, timings: dict[str, Any]) -> None:
        """The turn's cache use, from the first response that carries timings."""


class ReplyGenerator:
    """Streams replies of one conversation, free or interleaved with the TTS."""

    def __init__(self, backend: LLMBackend, history: TokenHistory, interleaving: Interleaving | None) -> None:
        self.backend = backend
        self.history = history
        self.interleaving = interleaving
        self.speed: ServerSpeed | None = None
        """The server's latest speed, as its timings say (None until a reply streamed)."""

    async def generate(
        self, out: ReplyOutput, max_tokens: int, fields: dict[str, Any], first: Piece | None, watch_calls: bool
    ) -> Generated:
        """The reply after the history's end, from `first` (a token already sampled) if given."""
        if self.interleaving is None:
            streamed = await self._stream(out, max_tokens, None, fields, first, watch_calls)
            return Generated(streamed.tokens, streamed.held)
        return await self._interleaved(out, self.interleaving, max_tokens, fields, first, watch_calls)

    async def _pieces(self, budget: int, fields: dict[str, Any], first: Piece | None) -> AsyncIterator[Piece]:
        """`first`, then the stream from the history's end, which by then holds it."""
        if first is not None:
            yield first
            if first.stop:
                return
            budget -= len(first.tokens)
        async with aclosing(self.backend.stream(self.history.tokens, budget, fields)) as stream:
            async for piece in stream:
                yield piece

    async def _stream(
        self,
        out: ReplyOutput,
        budget: int,
        segmenting: Segmenting | None,
        fields: dict[str, Any],
        first: Piece | None,
        watch_calls: bool,
    ) -> Streamed:
        """Stream from `first` and the history's end; stop at the segment boundary, never inside a
        possible call. Without `segmenting` the speech is pushed as it arrives (free streaming)."""
        text, n_tokens, pushed, speech_end = "", 0, 0, 0
        async with aclosing(self._pieces(budget, fields, first)) as pieces:
            async for piece in pieces:
                if piece.timings:
                    await out.report_cache(piece.timings)
                    self.speed = ServerSpeed.from_timings(piece.timings) or self.speed
                if piece.tokens:
                    self.history.add_generated(piece.text, piece.tokens)
                    n_tokens += len(piece.tokens)
                    text += piece.text
                speech_end = call_start(text) if watch_calls else len(text)
                if segmenting is None and speech_end > pushed:
                    await out.speak(text[pushed:speech_end])
                    pushed = speech_end
                if piece.stop:
                    break
                if segmenting is not None and speech_end == len(text) and segmenting.done(text, n_tokens):
                    return Streamed(text, "", n_tokens, False)
        return Streamed(text[:speech_end], text[speech_end:], n_tokens, True)

    async def _interleaved(
        self,
        out: ReplyOutput,
        interleaving: Interleaving,
        max_tokens: int,
        fields: dict[str, Any],
        first: Piece | None,
        watch_calls: bool,
    ) -> Generated:
        """Segments that each wait for the TTS to reach their mark, the first `waiting_segments` of them."""
        interleaver = interleaving.interleaver
        total, segments, carry = 0, 0, ""
        while total < max_tokens:
            if segments == interleaving.waiting_segments:
                if carry:
                    await out.speak(carry)
                streamed = await self._stream(out, max_tokens - total, None, fields, first, watch_calls)
                return Generated(total + streamed.tokens, streamed.held)
            started = time.perf_counter()
            segmenting = interleaving.segmenting(segments)
            streamed = await self._stream(out, max_tokens - total, segmenting, fields, first, watch_calls)
            first = None
            interleaver.llm_busy(started, time.perf_counter())
            total += streamed.tokens
            text = carry + streamed.speech
            spoken, carry = (text, "") if streamed.finished else segmenting.split(text)
            if spoken:
                await out.speak(spoken)
            if streamed.finished:
                return Generated(total, streamed.held)
            mark = interleaver.new_mark()
            await out.push_frame(mark)
            if not await interleaver.wait(mark):
                logger.warning(f"{self.backend}: the TTS did not answer mark {mark.mark_id}; going on")
            segments += 1
        if carry:
            await out.speak(carry)
        return Generated(total, "")
