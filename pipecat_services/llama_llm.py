"""Pipecat LLM service for llama-server: exact KV-cache reuse, optionally interleaved with the TTS.

Every turn: the context's messages go through the model's own chat template (`/apply-template`),
the rendered prompt becomes tokens through the conversation's `TokenHistory` (exact prefix of
what the server already holds), and generation streams token ids back into the history; the first
token's timings report the cache hit. At pipeline start the system prompt is prefilled, so the
first turn finds it cached too.

Interleaved (a `TurnTaking` given): the reply is generated in segments. The first ends at the
first clause or sentence boundary, so the TTS can start on a few words; later ones at the first
sentence end after `segment_tokens`. A segment is pushed whole, followed by a mark, and the next
one starts only when the TTS has synthesized it: exactly one wait per segment, so LLM and TTS
never run at the same time. Without a `TurnTaking` the reply streams token by token.

On an interruption Pipecat cancels the turn: the open stream closes (the server stops), and the
next prompt, rendered from a context that keeps only what was spoken, reuses the history up to
that point and drops the rest.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    MetricsFrame,
    StartFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage, MetricsData
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.types import is_given

from pipecat_services.llama_client import LlamaServerClient
from pipecat_services.token_history import TokenHistory
from pipecat_services.turn_taking import TurnTaking
from servers.tts.text import phrase_cut

SENTENCE_END = re.compile(r"[.!?…][\"')\]]*\s*$|\n\s*$")
CLAUSE_END = re.compile(r"[,;:—–]\s*$")


class PromptCacheMetricsData(MetricsData):
    """llama-server's KV-cache reuse for a turn's prompt.

    `value` (the cache hit ratio) = cached_tokens / reusable_tokens: of the prompt tokens the server
    has already seen in this conversation (everything but the new user turn), the share it served
    from its cache. cached_tokens / prompt_tokens is the share of the whole prompt, which can never
    reach 1 because the new user turn is always new.
    """

    value: float
    cached_tokens: int
    reusable_tokens: int
    prompt_tokens: int


@dataclass
class Segmenting:
    """When a segment ends: the first at any clause or, with `first_words`, at a phrase boundary
    (`phrase_cut`); later ones at a sentence end after `min_tokens`; any at `max_tokens`."""

    first: bool
    min_tokens: int
    max_tokens: int
    first_words: tuple[int, int] | None = None

    def done(self, text: str, n_tokens: int) -> bool:
        if n_tokens >= self.max_tokens:
            return True
        if self.first:
            if self.first_words and phrase_cut(text, *self.first_words) is not None:
                return True
            return n_tokens >= 2 and bool(SENTENCE_END.search(text) or CLAUSE_END.search(text))
        return n_tokens >= self.min_tokens and bool(SENTENCE_END.search(text))

    def split(self, text: str) -> tuple[str, str]:
        """(text to speak now, text held back for the next segment) of a segment that ended
        mid-sentence: the words after the phrase cut, or a last word that may still be growing."""
        if SENTENCE_END.search(text) or CLAUSE_END.search(text):
            return text, ""
        cut = phrase_cut(text, *self.first_words) if self.first and self.first_words else None
        if cut is None:
            cut = text.rstrip().rfind(" ")
        return (text[:cut], text[cut:]) if cut and cut > 0 else (text, "")


class LlamaServerLLMService(LLMService):
    """Chat with llama-server, reusing its KV cache exactly; interleaves with our TTS if asked."""

    def __init__(
        self,
        *,
        base_url: str = "http://127.0.0.1:8002",
        turn_taking: TurnTaking | None = None,
        segment_tokens: int = 32,
        max_segment_tokens: int = 96,
        first_segment_words: tuple[int, int] | None = (3, 6),
        interleaved_segments: int | None = None,
        slot: int = -1,
        settings: LLMSettings | None = None,
        **kwargs: Any,
    ) -> None:
        """`turn_taking`: interleave with the TTS (None streams freely). Later segments end at the first
        sentence end after `segment_tokens` tokens, and at `max_segment_tokens` at the latest; the
        first at a phrase boundary after `first_segment_words` = (min, max) words. `interleaved_segments`:
        how many segments wait for the TTS (None: all; 1: only the first, then the reply streams). `slot`:
        llama-server's slot; -1 lets it pick the one whose cache matches best, so with `--parallel N`
        each conversation keeps its own slot."""
        defaults = LLMSettings(
            model="llama-server",
            system_instruction=None,
            temperature=0.7,
            max_tokens=400,
            top_p=None,
            top_k=None,
            frequency_penalty=None,
            presence_penalty=None,
            seed=None,
            filter_incomplete_user_turns=False,
            user_turn_completion_config=None,
        )
        if settings is not None:
            defaults.apply_update(settings)
        super().__init__(settings=defaults, **kwargs)
        self.client = LlamaServerClient(base_url, slot)
        self.history = TokenHistory()
        self.turn_taking = turn_taking
        self.segment_tokens = segment_tokens
        self.max_segment_tokens = max_segment_tokens
        self.first_segment_words = first_segment_words
        self.interleaved_segments = interleaved_segments
        self.last_turn: dict[str, Any] = {}
        self._history_lock = asyncio.Lock()

    def can_generate_metrics(self) -> bool:
        return True

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self.create_task(self._warm_up(), "warm_up")

    async def _warm_up(self) -> None:
        """Prefill the system prompt while the user is still speaking, so turn 1 finds it cached."""
        try:
            async with self._history_lock:
                if self.history.blocks:
                    return
                rendered = await self.client.apply_template(await self._messages(LLMContext()))
                prompt, _ = await self.history.prompt(rendered, self.client.tokenize)
                await self.client.prefill(prompt)
        except Exception as e:
            logger.warning(f"{self}: warm-up failed ({e}); the first turn will prefill the system prompt")

    async def cleanup(self) -> None:
        await super().cleanup()
        await self.client.close()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            await self.start_processing_metrics()
            try:
                await self.respond(frame.context)
            except Exception as e:
                await self.push_error(error_msg=f"llama-server: {e}", exception=e)
            finally:
                await self.stop_processing_metrics()
                await self.push_frame(LLMFullResponseEndFrame())
        elif isinstance(frame, InterruptionFrame):
            if self.turn_taking is not None:
                self.turn_taking.cancel_all()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    def _sampling(self) -> dict[str, Any]:
        s = self._settings
        values = {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "seed": s.seed}
        return {k: v for k, v in values.items() if is_given(v) and v is not None}

    async def _messages(self, context: LLMContext) -> list[dict[str, Any]]:
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context, system_instruction=self._settings.system_instruction, convert_developer_to_user=True
        )
        return params["messages"]

    async def respond(self, context: LLMContext) -> None:
        async with self._history_lock:
            await self._respond(context)

    async def _respond(self, context: LLMContext) -> None:
        await self.start_ttfb_metrics()
        rendered = await self.client.apply_template(await self._messages(context))
        prompt, reused = await self.history.prompt(rendered, self.client.tokenize)
        self.last_turn = {"prompt_tokens": len(prompt), "reusable_tokens": reused}
        completion = await (self._interleaved() if self.turn_taking else self._streamed())
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=len(prompt),
                completion_tokens=completion,
                total_tokens=len(prompt) + completion,
                cache_read_input_tokens=self.last_turn.get("cache_n", 0),
            )
        )
        logger.debug(f"{self}: turn {self.last_turn}, {completion} tokens generated")

    async def _generate(self, budget: int, segmenting: Segmenting | None) -> tuple[str, int, bool]:
        """Stream from the history's end; stop at the segment boundary. Returns (text, tokens, finished).

        Without `segmenting` every piece is pushed as it arrives (free streaming).
        """
        text, n_tokens = "", 0
        async for piece in self.client.stream(self.history.tokens, budget, self._sampling()):
            if "cache_n" not in self.last_turn and piece.timings:
                await self._report_cache(piece.timings)
            if piece.tokens:
                self.history.add_generated(piece.text, piece.tokens)
                n_tokens += len(piece.tokens)
                text += piece.text
                if segmenting is None and piece.text:
                    await self.stop_ttfb_metrics()
                    await self._push_llm_text(piece.text)
            if piece.stop:
                return text, n_tokens, True
            if segmenting is not None and segmenting.done(text, n_tokens):
                return text, n_tokens, False
        return text, n_tokens, True

    async def _report_cache(self, timings: dict[str, Any]) -> None:
        """The turn's KV-cache reuse, from the timings of its first streamed token."""
        cached, evaluated = timings.get("cache_n", 0), timings.get("prompt_n", 0)
        reused = self.last_turn["reusable_tokens"]
        hit = min(1.0, cached / reused) if reused else 0.0
        self.last_turn.update(
            cache_n=cached,
            prompt_n=evaluated,
            cache_hit_ratio=round(hit, 4),
            prompt_cached_share=round(cached / max(1, cached + evaluated), 4),
        )
        data = PromptCacheMetricsData(
            processor=self.name,
            model=self._settings.model,
            value=hit,
            cached_tokens=cached,
            reusable_tokens=reused,
            prompt_tokens=self.last_turn["prompt_tokens"],
        )
        await self.push_frame(MetricsFrame(data=[data]))

    async def _streamed(self) -> int:
        _, n_tokens, _ = await self._generate(self._settings.max_tokens, None)
        return n_tokens

    async def _interleaved(self) -> int:
        assert self.turn_taking is not None
        total, segments, carry = 0, 0, ""
        while total < self._settings.max_tokens:
            if segments == self.interleaved_segments:
                if carry:
                    await self._push_llm_text(carry)
                return total + (await self._generate(self._settings.max_tokens - total, None))[1]
            started = time.perf_counter()
            segmenting = Segmenting(
                segments == 0, self.segment_tokens, self.max_segment_tokens, self.first_segment_words
            )
            text, n_tokens, finished = await self._generate(self._settings.max_tokens - total, segmenting)
            self.turn_taking.llm_busy(started, time.perf_counter())
            total += n_tokens
            spoken, carry = (carry + text, "") if finished else segmenting.split(carry + text)
            if spoken:
                await self.stop_ttfb_metrics()
                await self._push_llm_text(spoken)
            if finished:
                break
            mark = self.turn_taking.new_mark()
            await self.push_frame(mark)
            if not await self.turn_taking.wait(mark):
                logger.warning(f"{self}: the TTS did not answer mark {mark.mark_id}; going on")
            segments += 1
        if carry:
            await self._push_llm_text(carry)
        return total
