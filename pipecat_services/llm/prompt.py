"""A turn's prompt: the context rendered by the model's own chat template (`backend.render`), made
tokens through the conversation's `TokenHistory` (an exact prefix of what the server already holds),
the oldest turns left out when it would not fit the window (`context_budget.py`).

When the next prompt plus `max_tokens` would not fit (the server's slot, or `context_tokens`), the
oldest turns leave the context itself, so the aggregators, the history and the prompt stay one and
the same.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from loguru import logger
from pipecat.processors.aggregators.llm_context import LLMContext

from pipecat_services.llm.backend import FirstToken, LLMBackend
from pipecat_services.llm.context_budget import ContextBudget, ContextBudgetError, trimmed
from pipecat_services.llm.token_history import TokenHistory


@dataclass(frozen=True)
class Invocation:
    """What the model is asked: messages and tools in OpenAI's format, as the template renders them."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    tool_choice: Any = None

    @property
    def key(self) -> str:
        """What the prompt is rendered from, as one comparable string."""
        return json.dumps([self.messages, self.tools], sort_keys=True, default=str)


@dataclass(frozen=True)
class Rendered:
    """An invocation rendered and tokenized through the history."""

    text: str
    tokens: list[int]
    reused: int
    """Leading tokens the server already holds."""
    pieces: dict[str, list[int]]
    """The text that was tokenized anew, and its tokens."""


@dataclass(frozen=True)
class Prompt:
    """One turn's prompt, ready to send."""

    invocation: Invocation
    tokens: list[int]
    reused: int
    """Tokens the server can serve from its cache (the new turn, never sent, is not counted)."""
    trimmed: bool


@dataclass(frozen=True)
class PreparedPrompt:
    """A backend's answers for one prompt up to the reply's first token, as a prefill of the user's
    words computed them (`prefill.py`): a turn whose prompt is the same skips rendering, tokenizing
    and sampling its first token."""

    key: str
    """`Invocation.key` of what it was rendered from."""
    rendered: Rendered
    fields: dict[str, Any]
    first: FirstToken
    """The reply's first token after the prompt, sampled under `fields`."""

    def renders(self, invocation: Invocation) -> bool:
        """Whether it was rendered from `invocation`."""
        return self.key == invocation.key

    def first_token(self, tokens: list[int], fields: dict[str, Any]) -> FirstToken | None:
        """Its first token if it was sampled after `tokens` under `fields`."""
        return self.first if self.rendered.tokens == tokens and self.fields == fields else None

    async def tokenize(self, text: str, backend: LLMBackend) -> list[int]:
        """`text`'s tokens as the prefill got them, else from the backend."""
        pieces = self.rendered.pieces
        return pieces[text] if text in pieces else await backend.tokenize(text)


class PromptBuilder:
    """Renders one conversation's turns into tokens that reuse the server's cache, within its window."""

    def __init__(
        self,
        backend: LLMBackend,
        invocation: Callable[[LLMContext], Awaitable[Invocation]],
        context_tokens: int | None = None,
    ) -> None:
        """`invocation`: the context as the model is asked it (the service's adapter). `context_tokens`:
        the conversation's window, prompt and reply (None: the slot size the backend reports)."""
        self.backend = backend
        self.invocation = invocation
        self.context_tokens = context_tokens
        self.history = TokenHistory()
        self.trims = 0
        """How many times the oldest turns left the context."""

    async def budget(self, reply_tokens: int) -> ContextBudget | None:
        """The conversation's budget; the window is asked of the server once (None if it cannot say)."""
        if self.context_tokens is None:
            try:
                self.context_tokens = await self.backend.context_size()
            except Exception as e:
                logger.warning(f"{self.backend}: no context size from the server ({e}); asking again next turn")
        if not self.context_tokens:
            return None
        return ContextBudget(self.context_tokens, reply_tokens)

    async def render(self, invocation: Invocation, prepared: PreparedPrompt | None = None) -> Rendered:
        """`invocation` rendered (or as `prepared` rendered it) and tokenized through the history."""
        if prepared is not None and prepared.renders(invocation):
            text, source = prepared.rendered.text, partial(prepared.tokenize, backend=self.backend)
        else:
            text, source = await self.backend.render(invocation.messages, invocation.tools), self.backend.tokenize
        pieces: dict[str, list[int]] = {}

        async def tokenize(piece: str) -> list[int]:
            pieces[piece] = await source(piece)
            return pieces[piece]

        tokens, reused = await self.history.prompt(text, tokenize)
        return Rendered(text, tokens, reused, pieces)

    async def side_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[int]:
        """The tokens of a prompt outside the conversation's history (a request judged alone)."""
        return await self.backend.tokenize(await self.backend.render(messages, tools))

    async def build(self, context: LLMContext, reply_tokens: int, prepared: PreparedPrompt | None) -> Prompt:
        """This turn's prompt, the oldest turns left out of `context` if it would not fit the budget.
        Each pass drops at least one turn; counts are exact, so one pass is the rule. The new turn,
        tokenized in the pass that did not fit, is not counted as reused: the server has never seen it."""
        budget, unsent, trims = await self.budget(reply_tokens), 0, self.trims
        while True:
            invocation = await self.invocation(context)
            rendered = await self.render(invocation, prepared)
            n = len(rendered.tokens)
            if budget is None or budget.fits(n):
                reused = max(0, rendered.reused - unsent)
                return Prompt(invocation, rendered.tokens, reused, self.trims > trims)
            unsent = unsent or n - rendered.reused
            kept = trimmed(context.messages, n, budget)
            if kept is None:
                raise ContextBudgetError(
                    f"this turn needs {n} prompt tokens + {budget.reply_tokens} for the reply; "
                    f"the window holds {budget.window}"
                )
            logger.info(
                f"{self.backend}: {n} prompt tokens + {budget.reply_tokens} do not fit {budget.window}; "
                f"the {len(context.messages) - len(kept)} oldest messages leave"
            )
            context.set_messages(kept)
            self.trims += 1
