"""`TokenLLMService` that evaluates the conversation ahead of its turns: `PrefillingLLMService`.

- At pipeline start the system prompt and tools are prefilled, so the first turn finds them cached
  (and `warm_server` does it when the bot starts, for the first call after a start), and so is the
  prompt that judges a request alone (`tool_calls.last_request_alone`).
- While the user speaks, their words so far (interim transcripts handed over by `InterimPrefill`)
  are evaluated into the server's cache up to and including the reply's first token, so a turn
  evaluates only its last words; when the final transcript is the last words prefilled, the turn's
  prompt is the very same and reuses everything computed for it (`PreparedPrompt`): it is one
  streaming request that goes on from that token.

A prefill and a turn never run at once (the history's lock), a prefill never runs while a reply is
generated, and a speculative user message leaves the token history as it was.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from pipecat.frames.frames import StartFrame
from pipecat.processors.aggregators.llm_context import LLMContext

from pipecat_services.llm import tool_calls
from pipecat_services.llm.prepared_prompt import PreparedPrompt, messages_key
from pipecat_services.llm.service import TokenLLMService


class PrefillingLLMService(TokenLLMService):
    """`TokenLLMService` plus prefills: the system prompt at start, the user's words as they speak."""

    def __init__(self, *, warm_context: LLMContext | None = None, **kwargs: Any) -> None:
        """`warm_context`: the conversation's context, whose system prompt and tools are prefilled at
        pipeline start (default: the system instruction alone), and which the user's words extend.
        Other arguments: `TokenLLMService`."""
        super().__init__(**kwargs)
        self._warm_context = warm_context
        self._user_words: str | None = None
        self._warming: asyncio.Task[None] | None = None
        self._prefilling: asyncio.Task[None] | None = None
        self._prepared: PreparedPrompt | None = None
        self._responding = False
        self._closed = False

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._warming = self.create_task(self._warm_up(), "warm_up")

    async def _warm_up(self) -> None:
        """Prefill the system prompt and tools while the user is still speaking, so turn 1 finds them cached."""
        try:
            await self._prefill(None)
        except Exception as e:
            logger.warning(f"{self}: warm-up failed ({e}); the first turn will prefill the system prompt")

    async def warm_server(self, wait_s: float) -> None:
        """The warm-up without a call: prefill the system prompt and tools as soon as the server
        answers (waiting at most `wait_s`), so that the first call after a start finds them cached."""
        await self.backend.wait_loaded(wait_s)
        await self._prefill(None)

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
        while (words := self._user_words) is not None and not self._responding:
            self._user_words = None
            try:
                await self._prefill({"role": "user", "content": words})
            except Exception as e:
                logger.debug(f"{self}: prefill of the user's words failed ({e})")

    async def _prefill(self, user: dict[str, Any] | None) -> None:
        """Evaluate the conversation (and `user`, a speculative last message) into the server's cache.

        Only after the last reply is in the context: before, a prompt without it would push that
        reply's tokens out of the cache, which the next turn needs. A speculative message leaves the
        history as it was: the server keeps what matches the real turn by token prefix anyway."""
        context = self._warm_context or LLMContext()
        async with self._history_lock:
            if user is None and self.history.blocks:
                return  # the warm-up: only before anything else
            messages, tools, tool_choice = await self._invocation(context)
            last = messages[-1] if messages else {"role": "system"}
            if user is not None:
                if last["role"] in ("user", "tool") or last.get("tool_calls"):
                    return
                messages = tool_calls.without_earlier_calls([*messages, user])  # shaped as the real turn will be
            budget = await self._budget()
            blocks = list(self.history.blocks)
            try:
                rendered = await self.backend.render(messages, tools)
                pieces: dict[str, list[int]] = {}

                async def tokenize(text: str) -> list[int]:
                    pieces[text] = await self.backend.tokenize(text)
                    return pieces[text]

                prompt, _ = await self.history.prompt(rendered, tokenize)
                if budget is not None and not budget.fits(len(prompt)):
                    return
                if user is None:
                    if tools and self.call_threshold is not None:  # its own cache entry: first
                        alone = [tool_calls.alone_system_prompt(messages)]
                        await self.backend.prefill(await self._side_tokens(alone, tools))
                    await self.backend.prefill(prompt)
                else:  # evaluates the prompt too, and samples no more than the one token
                    fields, _ = self._reply_fields(messages, tools, tool_choice)
                    first = await self.backend.first_token(prompt, fields)
                    key = messages_key(messages, tools)
                    self._prepared = PreparedPrompt(key, rendered, pieces, tuple(prompt), fields, first)
            finally:
                if user is not None:
                    self.history.blocks = blocks

    async def respond(self, context: LLMContext) -> None:
        self._responding, self._user_words = True, None
        try:
            await super().respond(context)
        finally:
            self._responding = False

    def _take_prepared(self) -> PreparedPrompt | None:
        prepared, self._prepared = self._prepared, None  # a prefill serves one turn at most
        return prepared

    async def cleanup(self) -> None:
        self._closed = True
        for task in (self._warming, self._prefilling):
            if task is not None and not task.done():
                await self.cancel_task(task)
        await super().cleanup()
