"""The small interface an LLM server implements for `TokenLLMService`, the way engines do for our
model servers: the service owns what is generic (token history, segments, interleaving with the TTS,
tool calls, metrics); a backend only renders prompts, tokenizes, streams tokens and constrains them.

llama-server is the one backend today (`llama_backend.py`). Another server fits if it can continue
a prompt given as token ids (so the token history stays an exact prefix of its cache), return the
ids it generates, and report the next token's distribution.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Piece:
    """One streamed event: usually one token. `timings` carries the server's cache statistics
    (`cache_n`: prompt tokens served from its cache, `prompt_n`: evaluated)."""

    text: str
    tokens: list[int]
    stop: bool = False
    stop_type: str | None = None
    timings: dict[str, Any] = field(default_factory=dict)


class LLMBackend(ABC):
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
    async def next_token(self, tokens: list[int], top: int = 10) -> tuple[list[tuple[str, float]], dict[str, Any]]:
        """The `top` most likely tokens after `tokens` as (text, probability), and the timings."""

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

    async def close(self) -> None:
        """Release connections."""
