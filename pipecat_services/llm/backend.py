"""The small interface an LLM server implements for `TokenLLMService` (`service.py`), the way engines do for our
model servers: the service owns what is generic (token history, segments, interleaving with the TTS,
tool calls, metrics); a backend only renders prompts, tokenizes, samples and streams tokens, and
constrains them.

llama-server is the one backend today (`llama_server/`). Another server fits if it can continue
a prompt given as token ids (so the token history stays an exact prefix of its cache), return the
ids it generates, and report the next token's distribution.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

NEXT_TOKENS = 100
"""How many of the most likely first tokens are asked for: enough to see a call as unlikely as the
tool policy's `RECHECK_FLOOR`, which is rarely among the top 10."""


@dataclass(frozen=True)
class Piece:
    """One streamed event: usually one token. `timings` carries the server's cache statistics
    (`cache_n`: prompt tokens served from its cache, `prompt_n`: evaluated)."""

    text: str
    tokens: list[int]
    stop: bool = False
    timings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FirstToken:
    """A reply's first token, sampled by itself: it tells whether the reply should be a tool call
    (`top`), and a speech reply goes on from it (`piece`, with the prompt's timings)."""

    top: list[tuple[str, float]]
    """The most likely first tokens as (text, probability), before sampling and constraints."""
    piece: Piece


class LLMBackend(ABC):
    """What the LLM service needs of a server: templates, tokens, cache, sampling, constraints."""

    @abstractmethod
    async def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt for `messages` (OpenAI format, tool calls and results included) and `tools`,
        by the model's own chat template, ending where the assistant's reply begins."""

    @abstractmethod
    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens parsed."""

    @abstractmethod
    async def prefill(self, tokens: list[int]) -> dict[str, Any]:
        """Evaluate `tokens` into the cache, generate nothing; returns the timings."""

    @abstractmethod
    async def first_token(self, tokens: list[int], fields: dict[str, Any], top: int = NEXT_TOKENS) -> FirstToken:
        """Evaluate `tokens` into the cache and sample the one token after them under `fields`; with
        the `top` most likely next tokens, before any constraint."""

    @abstractmethod
    def stream(self, tokens: list[int], n_predict: int, fields: dict[str, Any]) -> AsyncIterator[Piece]:
        """Continue `tokens`, yielding pieces until the model stops or the caller stops iterating
        (which stops the generation). `fields`: sampling settings and constraints from this backend."""

    @abstractmethod
    def call_fields(self, names: tuple[str, ...], forced: bool) -> dict[str, Any]:
        """Constraints for a reply that is (`forced`) or may become a call of one of `names`."""

    @abstractmethod
    def speech_fields(self) -> dict[str, Any]:
        """Constraints for a reply that is speech only: nothing that could start a call."""

    async def context_size(self) -> int | None:
        """Tokens one conversation may hold on the server (prompt and reply), if it says."""
        return None

    async def wait_loaded(self, wait_s: float | None = None) -> None:
        """Until the server can answer (its model loaded), at most `wait_s` (default: the backend's own)."""

    async def close(self) -> None:
        """Release connections."""
