"""Pipecat's `OpenAILLMService` with our context budget, for any OpenAI-compatible server.

Before each request the oldest turns leave the context by the same rule as on the llama-server
path (`context_budget.py`). The server's tokenizer is not reachable through OpenAI's API, so the
prompt is estimated (Pipecat's ≈4 characters a token, a few tokens a message); `KEEP_SHARE`
leaves half the window free after a trim, which absorbs the estimate's error.

The window: `context_tokens`, else what the server says (llama-server's `/props`, vLLM's
`max_model_len` in `/models`), else `FALLBACK_WINDOW`.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from loguru import logger
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.types import is_given

from pipecat_services.llm.context_budget import ContextBudget, estimate_prompt_tokens, trimmed
from servers.auth import modal_proxy_headers

FALLBACK_WINDOW = 32768
"""For a server that does not tell its window (a cloud API): long enough for any voice call's
recent turns, short enough to bound each request's cost and a long call's memory."""


async def served_window(base_url: str, headers: dict[str, str]) -> int | None:
    """The context window an OpenAI-compatible server reports, if it does."""
    root = base_url.rstrip("/").removesuffix("/v1")
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        for url, window in (
            (f"{root}/props", lambda body: body.get("default_generation_settings", {}).get("n_ctx")),
            (f"{base_url.rstrip('/')}/models", lambda body: (body.get("data") or [{}])[0].get("max_model_len")),
        ):
            try:
                async with session.get(url) as response:
                    if response.status == 200 and (size := window(await response.json())):
                        return int(size)
            except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
                continue
    return None


class BudgetedOpenAILLMService(OpenAILLMService):
    """Pipecat's OpenAI service with our context budget, for any OpenAI-compatible server."""

    def __init__(self, *, context_tokens: int | None = None, **kwargs: Any) -> None:
        """`context_tokens`: the conversation's window, prompt and reply (None: ask the server)."""
        self.openai_client: Any = None
        super().__init__(**kwargs)
        self.context_tokens = context_tokens
        self.trims = 0

    def create_client(self, **kwargs: Any) -> Any:
        """Pipecat's client, kept: its resolved base URL and key also ask the server for its window."""
        self.openai_client = super().create_client(**kwargs)
        return self.openai_client

    async def _budget(self) -> ContextBudget:
        if self.context_tokens is None:
            base_url = str(self.openai_client.base_url)
            headers = {"Authorization": f"Bearer {self.openai_client.api_key}", **modal_proxy_headers(base_url)}
            self.context_tokens = await served_window(base_url, headers) or FALLBACK_WINDOW
            logger.info(f"{self}: context window {self.context_tokens} tokens")
        s = self._settings
        reply = next((v for v in (s.max_completion_tokens, s.max_tokens) if is_given(v) and v), 0)
        return ContextBudget(self.context_tokens, reply)

    async def _estimate(self, context: LLMContext) -> int:
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context,
            system_instruction=self._settings.system_instruction,
            convert_developer_to_user=not self.supports_developer_role,
        )
        tools = params.get("tools")
        return estimate_prompt_tokens(params["messages"], tools if is_given(tools) else None)

    async def _process_context(self, context: LLMContext) -> None:
        budget = await self._budget()
        while not budget.fits(prompt := await self._estimate(context)):
            kept = trimmed(context.messages, prompt, budget)
            if kept is None:
                logger.warning(f"{self}: this turn alone needs ~{prompt} tokens; the window holds {budget.window}")
                break
            dropped = len(context.messages) - len(kept)
            logger.info(f"{self}: ~{prompt} prompt tokens do not fit; the {dropped} oldest messages leave")
            context.set_messages(kept)
            self.trims += 1
        await super()._process_context(context)
