"""Evaluating the conversation ahead of its turns: `Prefill`.

- At pipeline start the system prompt and tools are prefilled, so the first turn finds them cached,
  and so is the prompt that judges a request alone (`tool_policy.last_request_alone`).
- While the user speaks, their words so far (interim transcripts handed over by `InterimPrefill`)
  are evaluated into the server's cache up to and including the reply's first token, so a turn
  evaluates only its last words; when the final transcript is the last words prefilled, the turn's
  prompt is the very same and reuses everything computed for it (`PreparedPrompt`): it is one
  streaming request that goes on from that token.

A prefill and a turn never run at once (they share the turn's lock), and a speculative user message
leaves the token history as it was: the server keeps what matches the real turn by token prefix anyway.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from pipecat.processors.aggregators.llm_context import LLMContext

from pipecat_services.llm.prompt import PreparedPrompt, PromptBuilder
from pipecat_services.llm.tool_policy import ToolPolicy, alone_system_prompt, without_earlier_calls


class Prefill:
    """Evaluates one conversation into the server's cache ahead of its turns."""

    def __init__(self, prompts: PromptBuilder, policy: ToolPolicy, lock: asyncio.Lock) -> None:
        """`lock`: held by each turn, so a prefill never runs beside one."""
        self.prompts = prompts
        self.policy = policy
        self.lock = lock
        self._prepared: PreparedPrompt | None = None

    async def warm_system_prompt(self, context: LLMContext, reply_tokens: int) -> None:
        """The conversation so far (its system prompt and tools), before its first turn only, and the
        prompt that judges a request alone in a cache entry of its own, first."""
        backend = self.prompts.backend
        async with self.lock:
            if self.prompts.history.blocks:
                return
            invocation = await self.prompts.invocation(context)
            budget = await self.prompts.budget(reply_tokens)
            rendered = await self.prompts.render(invocation)
            if budget is not None and not budget.fits(len(rendered.tokens)):
                return
            if self.policy.judges_alone(invocation.tools):
                alone = [alone_system_prompt(invocation.messages)]
                await backend.prefill(await self.prompts.side_tokens(alone, invocation.tools))
            await backend.prefill(rendered.tokens)

    async def user_words(self, context: LLMContext, words: str, sampling: dict[str, Any], reply_tokens: int) -> None:
        """The conversation and `words` as the user's next message, up to the reply's first token,
        kept for the turn (`take_prepared`). Only after the last reply is in the context: before, a
        prompt without it would push that reply's tokens out of the cache, which the next turn needs."""
        history = self.prompts.history
        async with self.lock:
            invocation = await self.prompts.invocation(context)
            last = invocation.messages[-1] if invocation.messages else {"role": "system"}
            if last["role"] in ("user", "tool") or last.get("tool_calls"):
                return
            messages = without_earlier_calls([*invocation.messages, {"role": "user", "content": words}])
            guess = replace(invocation, messages=messages)  # shaped as the real turn will be
            budget = await self.prompts.budget(reply_tokens)
            blocks = list(history.blocks)
            try:
                rendered = await self.prompts.render(guess)
                if budget is not None and not budget.fits(len(rendered.tokens)):
                    return
                plan = self.policy.plan(sampling, guess)
                first = await self.prompts.backend.first_token(rendered.tokens, plan.fields)
                self._prepared = PreparedPrompt(guess.key, rendered, plan.fields, first)
            finally:
                history.blocks = blocks

    def take_prepared(self) -> PreparedPrompt | None:
        """What the last prefill of the user's words prepared; it serves one turn at most."""
        prepared, self._prepared = self._prepared, None
        return prepared
