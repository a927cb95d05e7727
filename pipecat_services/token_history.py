"""The canonical token history of one conversation, so every prompt is an exact prefix hit.

llama-server reuses its KV cache for the longest common token prefix with the previous request.
Rebuilding a prompt from text and re-tokenizing it rarely reproduces the tokens the model itself
generated (the reference system got 0-77 % reuse that way). So we remember what the server has
seen as a list of blocks, each a piece of rendered text with the exact tokens it was sent as:
template text as tokenized once, and every generated token with its own text. A new prompt,
rendered by the model's chat template, reuses the tokens of every block it still starts with and
tokenizes only the rest. When the context keeps only what was spoken of an interrupted reply, the
blocks up to the cut are reused and the history is truncated there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Tokenize = Callable[[str], Awaitable[list[int]]]


@dataclass(frozen=True)
class Block:
    text: str
    tokens: tuple[int, ...]


class TokenHistory:
    def __init__(self) -> None:
        self.blocks: list[Block] = []

    @property
    def tokens(self) -> list[int]:
        return [t for b in self.blocks for t in b.tokens]

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.blocks)

    async def prompt(self, rendered: str, tokenize: Tokenize) -> tuple[list[int], int]:
        """Tokens for `rendered` reusing the longest run of known blocks; returns (tokens, reused)."""
        kept, position = 0, 0
        for block in self.blocks:
            if not rendered.startswith(block.text, position):
                break
            kept += 1
            position += len(block.text)
        del self.blocks[kept:]
        rest = rendered[position:]
        if rest:
            self.blocks.append(Block(rest, tuple(await tokenize(rest))))
        reused = sum(len(b.tokens) for b in self.blocks[:kept])
        return self.tokens, reused

    def add_generated(self, text: str, tokens: list[int]) -> None:
        """Record what the model generated, token by token as the server streamed it."""
        self.blocks.append(Block(text, tuple(tokens)))

    def clear(self) -> None:
        self.blocks.clear()
