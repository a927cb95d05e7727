"""What a prefill of the user's words prepared for the turn it guessed (`PrefillingLLMService`).

While the user speaks, the LLM service evaluates their words so far into the server's cache, up to
and including the reply's first token. When the final transcript turns out to be the last words
prefilled, the turn's prompt is the very same, and everything computed for it is reused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipecat_services.llm.backend import FirstToken, LLMBackend


@dataclass(frozen=True)
class PreparedPrompt:
    """A backend's answers for one prompt, up to the reply's first token, as a prefill of the user's
    words computed them. When the final transcript is the prefilled words, the turn's prompt is the
    same, so the turn skips rendering, tokenizing and sampling its first token: it costs one
    streaming request."""

    messages: str
    """The messages and tools it was rendered from, as JSON."""
    rendered: str
    pieces: dict[str, list[int]]
    """The text it tokenized, and its tokens."""
    prompt: tuple[int, ...]
    fields: dict[str, Any]
    first: FirstToken
    """The reply's first token after `prompt`, sampled under `fields`."""

    async def tokenize(self, text: str, backend: LLMBackend) -> list[int]:
        """`text`'s tokens as the prefill got them, else from the backend."""
        return self.pieces[text] if text in self.pieces else await backend.tokenize(text)


def messages_key(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """What a prompt is rendered from, as one comparable string."""
    return json.dumps([messages, tools], sort_keys=True, default=str)
