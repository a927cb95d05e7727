"""Pipecat LLM service with exact cache reuse, prefill, interleaving with the TTS and tool calls, on
any `LLMBackend` (`backend.py`; llama-server: `llama_server/`).

A turn: the prompt (`prompt.py`: template, token history, budget), unless a prefill of the user's
words prepared it (`prefill.py`); the reply's first token sampled by itself, whose distribution
decides speak / call / judge again (`tool_policy.py`); the reply streamed from it, free or in
segments that wait for the TTS (`generation.py`); at its end the calls in it checked and run
through Pipecat's function-calling machinery, exactly as `OpenAILLMService` does, so the assistant
aggregator records call and result and asks for the next reply. A call that cannot run goes back to
the model as an error result.

On an interruption Pipecat cancels the turn: the open stream closes (the server stops), and the
next prompt, rendered from a context that keeps only what was spoken, reuses the history up to
that point and drops the rest.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
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
    StartFrame,
    TTSSpeakFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.tracing.service_decorators import traced_llm
from pipecat.utils.types import is_given

from pipecat_services.llm import tool_calls
from pipecat_services.llm.backend import FirstToken, LLMBackend, Piece
from pipecat_services.llm.filler import FILLER_TEXT_TYPE, CallFiller, without_fillers
from pipecat_services.llm.generation import Interleaving, ReplyGenerator, ServerSpeed
from pipecat_services.llm.prefill import Prefill
from pipecat_services.llm.prompt import Invocation, PreparedPrompt, Prompt, PromptBuilder
from pipecat_services.llm.reply_stats import ReplyStats
from pipecat_services.llm.tool_policy import (
    CALL_THRESHOLD,
    Decision,
    ToolPolicy,
    call_probability,
    last_request_alone,
    with_text_results,
    without_earlier_calls,
)
from pipecat_services.turn_metrics import PromptCacheMetricsData


class TokenLLMService(LLMService):
    """Chat through an `LLMBackend`, reusing its cache exactly; interleaves with our TTS if asked."""

    # Failures reach the model as {"error": ...}, like our own rejections (`tool_calls.is_error`).
    FUNCTION_CALL_ERROR_MESSAGE_TEMPLATE = '{{"error": "the function {function_name} failed and returned no result"}}'
    MISSING_FUNCTION_CALL_MESSAGE_TEMPLATE = '{{"error": "the function {function_name} is not available"}}'

    def __init__(
        self,
        *,
        backend: LLMBackend,
        interleaving: Interleaving | None = None,
        call_threshold: float | None = CALL_THRESHOLD,
        context_tokens: int | None = None,
        warm_context: LLMContext | None = None,
        filler: CallFiller | None = None,
        settings: LLMSettings | None = None,
        **kwargs: Any,
    ) -> None:
        """`interleaving`: segments that wait for the TTS (None streams freely). `call_threshold`: how
        likely the model's first tokens must open a tool call for the reply to be one (`tool_policy.py`;
        measure with `python -m benchmarks.tools`). `context_tokens`: the conversation's window (prompt
        and reply; None: the slot size the backend reports). `warm_context`: the conversation's context,
        whose system prompt and tools are prefilled at pipeline start (default: the system instruction
        alone), and which the user's words extend while they speak. `filler`: what a tool turn says
        while its call runs (None: nothing)."""
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
        self.interleaving = interleaving
        self.prompts = PromptBuilder(backend, self._invocation, context_tokens)
        self.tool_policy = ToolPolicy(backend, call_threshold)
        self.generator = ReplyGenerator(backend, self.prompts.history, interleaving)
        self._turn_lock = asyncio.Lock()
        """Held by a turn and by a prefill: one request on the history at a time."""
        self.prefill = Prefill(self.prompts, self.tool_policy, self._turn_lock)
        self.last_reply: ReplyStats | None = None
        self._warm_context = warm_context
        self._user_words: str | None = None
        self._warming: asyncio.Task[None] | None = None
        self._prefilling: asyncio.Task[None] | None = None
        self.filler = filler
        self._filling: asyncio.Task[None] | None = None
        self._responding = False
        self._closed = False

    def can_generate_metrics(self) -> bool:
        return True

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._warming = self.create_task(self._warm_up(), "warm_up")

    async def cleanup(self) -> None:
        self._closed = True
        for task in (self._warming, self._prefilling, self._filling):
            if task is not None and not task.done():
                await self.cancel_task(task)
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
            await self._cancel_filler()
            if self.interleaving is not None:
                self.interleaving.interleaver.cancel_all()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    # Prefill: the system prompt at start, the user's words while they speak (`prefill.py`).

    async def _warm_up(self) -> None:
        """Prefill the system prompt and tools while the user is still speaking, so turn 1 finds them cached."""
        try:
            await self.prefill.warm_system_prompt(self._warm_context or LLMContext(), self._settings.max_tokens)
        except Exception as e:
            logger.warning(f"{self}: warm-up failed ({e}); the first turn will prefill the system prompt")

    async def warm_server(self, wait_s: float) -> None:
        """The warm-up without a call: prefill the system prompt and tools as soon as the server
        answers (waiting at most `wait_s`), so that the first call after a start finds them cached."""
        await self.backend.wait_loaded(wait_s)
        await self.prefill.warm_system_prompt(self._warm_context or LLMContext(), self._settings.max_tokens)

    def prefill_user_words(self, words: str) -> None:
        """The user's words so far (an interim transcript): evaluate them into the server's cache now,
        so that at the turn's end only the last words remain. Revised words cost only the tokens after
        the first change (the server keeps the longest common prefix). The latest words win, one
        prefill runs at a time, and none while a reply is being generated."""
        if self._warm_context is None or self._closed:
            return  # without the conversation a prefill would replace it in the server's cache
        self._user_words = words
        if self._prefilling is None or self._prefilling.done():
            self._prefilling = self.create_task(self._prefill_user_words(), "prefill_user_words")

    def drop_pending_prefill(self) -> None:
        """Forget words handed over but not yet sent (a prefill already under way finishes)."""
        self._user_words = None

    async def prefilled(self) -> None:
        """Wait until the warm-up and the words given so far are in the server's cache (or were skipped)."""
        if self._warming is not None:
            await asyncio.wait([self._warming])
        while self._prefilling is not None and not self._prefilling.done():
            await asyncio.wait([self._prefilling])

    async def _prefill_user_words(self) -> None:
        assert self._warm_context is not None
        while (words := self._user_words) is not None and not self._responding:
            self._user_words = None
            try:
                await self.prefill.user_words(self._warm_context, words, self._sampling(), self._settings.max_tokens)
            except Exception as e:
                logger.debug(f"{self}: prefill of the user's words failed ({e})")

    # A turn.

    def _sampling(self) -> dict[str, Any]:
        s = self._settings
        values = {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "seed": s.seed}
        return {k: v for k, v in values.items() if is_given(v) and v is not None}

    async def _invocation(self, context: LLMContext) -> Invocation:
        """The context in OpenAI's format as the template renders it, without earlier turns' calls."""
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context, system_instruction=self._settings.system_instruction, convert_developer_to_user=True
        )
        tools = params.get("tools")
        tools = tools if is_given(tools) and tools else None
        messages = with_text_results(without_fillers(without_earlier_calls(params["messages"])))
        return Invocation(messages, tools, params.get("tool_choice"))

    @traced_llm
    async def respond(self, context: LLMContext) -> None:
        self._responding, self._user_words = True, None
        try:
            async with self._turn_lock:
                await self._respond(context)
        finally:
            self._responding = False

    async def _respond(self, context: LLMContext) -> None:
        await self.start_ttfb_metrics()
        self.last_reply = None
        prepared = self.prefill.take_prepared()
        prompt = await self.prompts.build(context, self._settings.max_tokens, prepared)
        self.last_reply = stats = ReplyStats(len(prompt.tokens), prompt.reused, prompt.trimmed)
        invocation = prompt.invocation
        sampling = self._sampling()
        plan = self.tool_policy.plan(sampling, invocation)
        first = await self._first_token(prompt, plan.fields, prepared)
        # A token that ends inside a character comes back as U+FFFD: the stream then starts over.
        piece: Piece | None = first.piece if "\ufffd" not in first.piece.text else None
        fields = plan.fields
        if plan.decides_call and invocation.tools and await self._is_call(first, invocation, plan.fields):
            fields, piece = self.tool_policy.call_fields(sampling, invocation.tools), None
            self._start_filler(invocation.messages)
        generated = await self.generator.generate(
            self, self._settings.max_tokens, fields, piece, bool(invocation.tools)
        )
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=len(prompt.tokens),
                completion_tokens=generated.tokens,
                total_tokens=len(prompt.tokens) + generated.tokens,
                cache_read_input_tokens=stats.cache_n or 0,
            )
        )
        logger.debug(f"{self}: reply {stats.as_dict()}, {generated.tokens} tokens generated")
        if generated.held:
            await self._end_reply(generated.held, context, invocation.tools or [])

    async def _first_token(self, prompt: Prompt, fields: dict[str, Any], prepared: PreparedPrompt | None) -> FirstToken:
        """The reply's first token: the one the prefill sampled if it had this very prompt and
        fields (the reply's cache use is then reported from its stream, or from the prefill if the
        reply ends there), else sampled now."""
        assert self.last_reply is not None
        first = prepared.first_token(prompt.tokens, fields) if prepared is not None else None
        if first is not None:
            self.last_reply.first_token_prefilled = True
            if first.piece.stop:
                await self.report_cache(first.piece.timings)
        else:
            first = await self.backend.first_token(prompt.tokens, fields)
            await self.report_cache(first.piece.timings)
        self.generator.speed = ServerSpeed.from_timings(first.piece.timings) or self.generator.speed
        return replace(first, piece=replace(first.piece, timings={}))

    async def _is_call(self, first: FirstToken, invocation: Invocation, fields: dict[str, Any]) -> bool:
        """Whether the reply is a call, as the tool policy reads the first token; a request it judges
        again alone is sampled on the side, the conversation's history left as it is."""
        assert self.last_reply is not None and invocation.tools
        probability = call_probability(first.top)
        alone = last_request_alone(invocation.messages)
        decision = self.tool_policy.decide(probability, alone)
        if decision is Decision.JUDGE_ALONE:
            assert alone is not None
            self.last_reply.call_probability_in_conversation = round(probability, 4)
            tokens = await self.prompts.side_tokens(alone, invocation.tools)
            probability = call_probability((await self.backend.first_token(tokens, fields)).top)
            decision = self.tool_policy.decide(probability)
        self.last_reply.call_probability = round(probability, 3)
        return decision is Decision.CALL

    # What the reply produces (`generation.ReplyOutput`).

    async def speak(self, text: str) -> None:
        """Push `text` to the TTS; the first text of a reply ends its TTFB, and a filler not yet spoken
        is not needed any more."""
        await self._cancel_filler()
        await self.stop_ttfb_metrics()
        await self._push_llm_text(text)

    # The filler while a call runs (`filler.py`).

    def _start_filler(self, messages: list[dict[str, Any]]) -> None:
        delay = self.filler.delay_s(messages, self.generator.speed) if self.filler else None
        if delay is not None:
            self._filling = self.create_task(self._say_filler(delay), "filler")

    async def _say_filler(self, delay: float) -> None:
        assert self.filler is not None
        await asyncio.sleep(delay)
        await self.push_frame(TTSSpeakFrame(self.filler.phrases.next(), text_type=FILLER_TEXT_TYPE))

    async def _cancel_filler(self) -> None:
        if self._filling is not None and not self._filling.done():
            await self.cancel_task(self._filling)
        self._filling = None

    async def report_cache(self, timings: dict[str, Any]) -> None:
        """The reply's KV-cache reuse, from the timings of its first response that has them."""
        stats = self.last_reply
        if stats is None or stats.cache_n is not None:
            return
        hit = stats.record_cache(timings)
        data = PromptCacheMetricsData(
            processor=self.name,
            model=self._settings.model,
            value=hit,
            cached_tokens=stats.cache_n or 0,
            reusable_tokens=stats.reusable_tokens,
            prompt_tokens=stats.prompt_tokens,
            evaluated_tokens=stats.prompt_n or 0,
            evaluation_ms=stats.prompt_ms,
        )
        await self.push_frame(MetricsFrame(data=[data]))

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
