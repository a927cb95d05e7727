"""Pipecat LLM service with exact cache reuse, optionally interleaved with the TTS, on any
`LLMBackend` (`llm_backend.py`; llama-server: `llama_llm.py`).

Every turn: the context's messages go through the model's own chat template (`backend.render`),
the rendered prompt becomes tokens through the conversation's `TokenHistory` (exact prefix of
what the server already holds). The reply's first token is sampled by itself (its distribution
decides whether the reply is a tool call) and the stream goes on from it, its token ids going back
into the history; the first response's timings report the cache hit. Evaluating the conversation
ahead of the turn (the system prompt, the user's words while they speak) is `prefilling_llm.py`'s.

Interleaved (an `Interleaver` given): the reply is generated in segments. The first ends at the
first clause or sentence boundary, so the TTS can start on a few words; later ones at the first
sentence end after `segment_tokens`. A segment is pushed whole, followed by a mark, and the next
one starts only when the TTS has synthesized it: exactly one wait per segment, so LLM and TTS
never run at the same time. Without an `Interleaver` the reply streams token by token.

A conversation of any length: when the next prompt plus `max_tokens` would not fit the window
(the server's slot, or `context_tokens`), the oldest turns leave the context itself
(`context_budget.py`), so the aggregators, the history and the prompt stay one and the same.

On an interruption Pipecat cancels the turn: the open stream closes (the server stops), and the
next prompt, rendered from a context that keeps only what was spoken, reuses the history up to
that point and drops the rest.

Tools: the context's tools are rendered by the model's own template; while generating, text that
may start a call is held back from the TTS, and the backend's constraints make the reply speech or
a well-formed call, as the model's first token decides (`tool_calls.py`; later in a conversation an
unlikely call is judged again on the user's last words alone, in a prompt of its own); at the end
of the reply the calls are checked against their schemas and run through Pipecat's function-calling
machinery, exactly as `OpenAILLMService` does, so the assistant aggregator records call and result
and asks for the next reply. A call that cannot run goes back to the model as an error result. One
user turn gets one call that succeeds (after its result the model must answer in words: small
models otherwise call on and on) and one retry after a failure.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    FunctionCallFromLLM,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    MetricsFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.tracing.service_decorators import traced_llm
from pipecat.utils.types import is_given

from pipecat_services.interleaving import Interleaver
from pipecat_services.llm import tool_calls
from pipecat_services.llm.backend import FirstToken, LLMBackend, Piece
from pipecat_services.llm.context_budget import ContextBudget, ContextBudgetError, trimmed
from pipecat_services.llm.prepared_prompt import PreparedPrompt, messages_key
from pipecat_services.llm.segments import Segmenting
from pipecat_services.llm.token_history import TokenHistory
from pipecat_services.turn_metrics import PromptCacheMetricsData
from servers.tts.text import FIRST_SEGMENT_WORDS


@dataclass(frozen=True)
class Generated:
    """What one request generated: the speech, and what was held back from it as a possible call."""

    speech: str
    held: str
    tokens: int
    finished: bool


class TokenLLMService(LLMService):
    """Chat through an `LLMBackend`, reusing its cache exactly; interleaves with our TTS if asked."""

    # Failures reach the model as {"error": ...}, like our own rejections (`tool_calls.is_error`).
    FUNCTION_CALL_ERROR_MESSAGE_TEMPLATE = '{{"error": "the function {function_name} failed and returned no result"}}'
    MISSING_FUNCTION_CALL_MESSAGE_TEMPLATE = '{{"error": "the function {function_name} is not available"}}'

    def __init__(
        self,
        *,
        backend: LLMBackend,
        interleaver: Interleaver | None = None,
        segment_tokens: int = 32,
        max_segment_tokens: int = 96,
        first_segment_words: tuple[int, int] | None = FIRST_SEGMENT_WORDS,
        interleaved_segments: int | None = None,
        call_threshold: float | None = tool_calls.CALL_THRESHOLD,
        context_tokens: int | None = None,
        settings: LLMSettings | None = None,
        **kwargs: Any,
    ) -> None:
        """`interleaver`: interleave with the TTS (None streams freely). Later segments end at the first
        sentence end after `segment_tokens` tokens, and at `max_segment_tokens` at the latest; the
        first at a phrase boundary after `first_segment_words` = (min, max) words. `interleaved_segments`:
        how many segments wait for the TTS (None: all; 1: only the first, then the reply streams).
        `call_threshold`: how likely the model's first tokens must open a tool call for the reply to
        be one (see `_reply_fields`; measure with `python -m benchmarks.tools`). `context_tokens`: the
        conversation's window (prompt and reply; None: the slot size the backend reports)."""
        defaults = LLMSettings(
            model=str(backend),
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
        self.backend = backend
        self.history = TokenHistory()
        self.interleaver = interleaver
        self.segment_tokens = segment_tokens
        self.max_segment_tokens = max_segment_tokens
        self.first_segment_words = first_segment_words
        self.interleaved_segments = interleaved_segments
        self.last_turn: dict[str, Any] = {}
        self._history_lock = asyncio.Lock()
        """Held by a turn, and by a prefill (`prefilling_llm.py`): one request on the history at a time."""
        self.call_threshold = call_threshold
        self.context_tokens = context_tokens
        self.trims = 0
        """How many times the oldest turns left the context."""

    def can_generate_metrics(self) -> bool:
        return True

    async def cleanup(self) -> None:
        await super().cleanup()
        await self.backend.close()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            await self.start_processing_metrics()
            try:
                await self.respond(frame.context)
            except Exception as e:
                await self.push_error(error_msg=f"{self.backend}: {e}", exception=e)
            finally:
                await self.stop_processing_metrics()
                await self.push_frame(LLMFullResponseEndFrame())
        elif isinstance(frame, InterruptionFrame):
            if self.interleaver is not None:
                self.interleaver.cancel_all()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    def _sampling(self) -> dict[str, Any]:
        s = self._settings
        values = {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "seed": s.seed}
        return {k: v for k, v in values.items() if is_given(v) and v is not None}

    async def _invocation(self, context: LLMContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, Any]:
        """(messages, tools, tool_choice) in OpenAI's format, as the template renders them."""
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context, system_instruction=self._settings.system_instruction, convert_developer_to_user=True
        )
        tools = params.get("tools")
        tools = tools if is_given(tools) and tools else None
        return tool_calls.without_earlier_calls(params["messages"]), tools, params.get("tool_choice")

    async def _budget(self) -> ContextBudget | None:
        """The conversation's budget; the window is asked of the server once (None if it cannot say)."""
        if self.context_tokens is None:
            try:
                self.context_tokens = await self.backend.context_size()
            except Exception as e:
                logger.warning(f"{self}: no context size from the server ({e}); asking again next turn")
        if not self.context_tokens:
            return None
        return ContextBudget(self.context_tokens, self._settings.max_tokens)

    async def _prompt(
        self, context: LLMContext, prepared: PreparedPrompt | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, Any, list[int], int]:
        """(messages, tools, tool_choice, prompt tokens, reused tokens) of this turn, the oldest turns
        left out of `context` if the prompt would not fit the budget. Each pass drops at least one
        turn; counts are exact, so one pass is the rule. The new turn, tokenized in the pass that did
        not fit, is not counted as reused: the server has never seen it."""
        budget, unsent = await self._budget(), 0
        while True:
            messages, tools, tool_choice = await self._invocation(context)
            if prepared is not None and prepared.messages != messages_key(messages, tools):
                prepared = None
            if prepared is None:
                rendered, tokenize = await self.backend.render(messages, tools), self.backend.tokenize
            else:
                rendered, tokenize = prepared.rendered, partial(prepared.tokenize, backend=self.backend)
            prompt, reused = await self.history.prompt(rendered, tokenize)
            if budget is None or budget.fits(len(prompt)):
                return messages, tools, tool_choice, prompt, max(0, reused - unsent)
            unsent = unsent or len(prompt) - reused
            kept = trimmed(context.messages, len(prompt), budget)
            if kept is None:
                raise ContextBudgetError(
                    f"this turn needs {len(prompt)} prompt tokens + {budget.reply_tokens} for the reply; "
                    f"the window holds {budget.window}"
                )
            logger.info(
                f"{self}: {len(prompt)} prompt tokens + {budget.reply_tokens} do not fit {budget.window}; "
                f"the {len(context.messages) - len(kept)} oldest messages leave"
            )
            context.set_messages(kept)
            self.trims += 1

    @traced_llm
    async def respond(self, context: LLMContext) -> None:
        async with self._history_lock:
            await self._respond(context)

    def _take_prepared(self) -> PreparedPrompt | None:
        """What a prefill prepared for this turn, if anything (`prefilling_llm.py`)."""
        return None

    async def _respond(self, context: LLMContext) -> None:
        await self.start_ttfb_metrics()
        trims, prepared = self.trims, self._take_prepared()
        messages, tools, tool_choice, prompt, reused = await self._prompt(context, prepared)
        self.last_turn = {"prompt_tokens": len(prompt), "reusable_tokens": reused, "trimmed": self.trims > trims}
        fields, decides_call = self._reply_fields(messages, tools, tool_choice)
        first = await self._first_token(prompt, fields, prepared)
        # A token that ends inside a character comes back as U+FFFD: the stream then starts over.
        piece: Piece | None = first.piece if "\ufffd" not in first.piece.text else None
        if decides_call and tools:
            probability = tool_calls.call_probability(first.top)
            unlikely = self.call_threshold > probability >= tool_calls.RECHECK_FLOOR
            if unlikely and (alone := tool_calls.last_request_alone(messages)) is not None:
                self.last_turn["call_probability_in_conversation"] = round(probability, 4)
                probability = await self._call_probability(alone, tools, fields)
            self.last_turn["call_probability"] = round(probability, 3)
            if probability >= self.call_threshold:
                call = self.backend.call_fields(tool_calls.tool_names(tools), forced=True)
                fields, piece = self._sampling() | call, None
        generate = self._interleaved if self.interleaver else self._streamed
        completion, held = await generate(fields, piece, watch_calls=bool(tools))
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=len(prompt),
                completion_tokens=completion,
                total_tokens=len(prompt) + completion,
                cache_read_input_tokens=self.last_turn.get("cache_n", 0),
            )
        )
        logger.debug(f"{self}: turn {self.last_turn}, {completion} tokens generated")
        if held:
            await self._end_reply(held, context, tools or [])

    def _reply_fields(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tool_choice: Any
    ) -> tuple[dict[str, Any], bool]:
        """The sampling settings and constraints of the reply unless it turns out a call, and whether
        its first token decides that: a call when the tokens that open one are at least
        `call_threshold` likely (None: the model may speak and then call)."""
        fields = self._sampling()
        if not tools:
            return fields, False
        if not tool_calls.calls_allowed(messages, tool_choice):
            return fields | self.backend.speech_fields(), False
        if self.call_threshold is None:
            return fields | self.backend.call_fields(tool_calls.tool_names(tools), forced=False), False
        return fields | self.backend.speech_fields(), True

    async def _call_probability(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], fields: dict[str, Any]
    ) -> float:
        """How likely the model opens a call for `messages` (a request judged alone), sampled on
        the side: the conversation's history is left as it is."""
        tokens = await self._side_tokens(messages, tools)
        return tool_calls.call_probability((await self.backend.first_token(tokens, fields)).top)

    async def _side_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
        """The tokens of a prompt outside the conversation's history (a request judged alone)."""
        return await self.backend.tokenize(await self.backend.render(messages, tools))

    async def _first_token(
        self, prompt: list[int], fields: dict[str, Any], prepared: PreparedPrompt | None
    ) -> FirstToken:
        """The reply's first token: the one the prefill sampled if it had this very prompt and
        fields (the turn's cache use is then reported from its stream, or from the prefill if the
        reply ends there), else sampled now."""
        if prepared is not None and prepared.prompt == tuple(prompt) and prepared.fields == fields:
            self.last_turn["first_token_prefilled"] = True
            first = prepared.first
            if first.piece.stop:
                await self._report_cache(first.piece.timings)
        else:
            first = await self.backend.first_token(prompt, fields)
            await self._report_cache(first.piece.timings)
        return replace(first, piece=replace(first.piece, timings={}))

    async def _end_reply(self, held: str, context: LLMContext, tools: list[dict[str, Any]]) -> None:
        """The text held back as a possible call: run the calls in it, or speak it if it was none.
        A tool's name never reaches the TTS (a small model sometimes describes a call in words)."""
        _, calls = tool_calls.parse(held)
        if not calls:
            if any(t["function"]["name"] in held for t in tools):
                logger.warning(f"{self}: dropped a reply that talks about a tool instead of calling it: {held!r}")
            else:
                await self._push_llm_text(held)
            return
        declared = {t["function"]["name"]: t["function"] for t in tools}
        checked = [tool_calls.check(call, declared) for call in calls]
        as_pipecat = [
            FunctionCallFromLLM(c.name, f"call_{uuid.uuid4().hex[:12]}", c.arguments, context) for c in checked
        ]
        if any(c.error for c in checked):
            await self._reject_calls(as_pipecat, [c.error for c in checked])
        else:
            await self.run_function_calls(as_pipecat)

    async def _reject_calls(self, calls: list[FunctionCallFromLLM], errors: list[str | None]) -> None:
        """Settle calls that cannot run with an error result, as Pipecat settles a handler that
        raised: the aggregator records each call and its result, and the model answers again."""
        await self.broadcast_frame(FunctionCallsStartedFrame, function_calls=calls)
        for i, (call, error) in enumerate(zip(calls, errors, strict=False)):
            reason = error or "not run: another call of the same reply was invalid"
            logger.warning(f"{self}: rejected call {call.function_name}({call.arguments}): {reason}")
            common = {
                "function_name": call.function_name,
                "tool_call_id": call.tool_call_id,
                "arguments": call.arguments,
            }
            await self.broadcast_frame(FunctionCallInProgressFrame, **common, cancel_on_interruption=True)
            await self.broadcast_frame(
                FunctionCallResultFrame, **common, result={"error": reason}, run_llm=i == len(calls) - 1, error=reason
            )

    async def _pieces(self, budget: int, fields: dict[str, Any], first: Piece | None) -> AsyncIterator[Piece]:
        """`first` (a token already sampled), then the stream from the history's end, which by then
        holds it."""
        if first is not None:
            yield first
            if first.stop:
                return
            budget -= len(first.tokens)
        async with aclosing(self.backend.stream(self.history.tokens, budget, fields)) as stream:
            async for piece in stream:
                yield piece

    async def _generate(
        self, budget: int, segmenting: Segmenting | None, fields: dict[str, Any], first: Piece | None, watch_calls: bool
    ) -> Generated:
        """Stream from `first` and the history's end; stop at the segment boundary, never inside a
        possible call. Without `segmenting` the speech is pushed as it arrives (free streaming)."""
        text, n_tokens, pushed, speech_end = "", 0, 0, 0
        async with aclosing(self._pieces(budget, fields, first)) as pieces:
            async for piece in pieces:
                if "cache_n" not in self.last_turn and piece.timings:
                    await self._report_cache(piece.timings)
                if piece.tokens:
                    self.history.add_generated(piece.text, piece.tokens)
                    n_tokens += len(piece.tokens)
                    text += piece.text
                speech_end = tool_calls.call_start(text) if watch_calls else len(text)
                if segmenting is None and speech_end > pushed:
                    await self.stop_ttfb_metrics()
                    await self._push_llm_text(text[pushed:speech_end])
                    pushed = speech_end
                if piece.stop:
                    break
                if segmenting is not None and speech_end == len(text) and segmenting.done(text, n_tokens):
                    return Generated(text, "", n_tokens, False)
        return Generated(text[:speech_end], text[speech_end:], n_tokens, True)

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
            evaluated_tokens=evaluated,
            evaluation_ms=round(float(timings.get("prompt_ms", 0.0)), 1),
        )
        await self.push_frame(MetricsFrame(data=[data]))

    async def _streamed(self, fields: dict[str, Any], first: Piece | None, watch_calls: bool) -> tuple[int, str]:
        generated = await self._generate(self._settings.max_tokens, None, fields, first, watch_calls)
        return generated.tokens, generated.held

    async def _interleaved(self, fields: dict[str, Any], first: Piece | None, watch_calls: bool) -> tuple[int, str]:
        """Returns (tokens generated, text held back as a possible call)."""
        assert self.interleaver is not None
        total, segments, carry = 0, 0, ""
        while total < self._settings.max_tokens:
            if segments == self.interleaved_segments:
                if carry:
                    await self._push_llm_text(carry)
                generated = await self._generate(self._settings.max_tokens - total, None, fields, first, watch_calls)
                return total + generated.tokens, generated.held
            started = time.perf_counter()
            segmenting = Segmenting(
                segments == 0, self.segment_tokens, self.max_segment_tokens, self.first_segment_words
            )
            generated = await self._generate(self._settings.max_tokens - total, segmenting, fields, first, watch_calls)
            first = None
            self.interleaver.llm_busy(started, time.perf_counter())
            total += generated.tokens
            text = carry + generated.speech
            spoken, carry = (text, "") if generated.finished else segmenting.split(text)
            if spoken:
                await self.stop_ttfb_metrics()
                await self._push_llm_text(spoken)
            if generated.finished:
                return total, generated.held
            mark = self.interleaver.new_mark()
            await self.push_frame(mark)
            if not await self.interleaver.wait(mark):
                logger.warning(f"{self}: the TTS did not answer mark {mark.mark_id}; going on")
            segments += 1
        if carry:
            await self._push_llm_text(carry)
        return total, ""
