"""The canonical token history of one conversation, so every prompt is an exact prefix hit.

llama-server reuses its KV cache for the longest common token prefix with the previous request.
Rebuilding a prompt from text and re-tokenizing it rarely reproduces the tokens the model itself
generated (the reference system got 0-77 % reuse that way). So we remember what the server has
seen as a list of blocks, each a piece of rendered text with the exact tokens it was sent as:
template text as tokenized once, and every generated token with its own text. A new prompt,
rendered by the model's chat template, reuses the tokens of every block it still starts with and
tokenizes only the rest. When the context keeps only what was spoken of an interrupted reply, the
blocks up to the cut are reused and the history is truncated there.

When the oldest turns leave the context (`context_budget.py`), the prompt changes in the middle:
the longest run of blocks that ended the history and still appears after the change keeps its
tokens too, so llama-server finds them unchanged and shifts them in its cache (`--cache-reuse`)
instead of evaluating them again; only the text around that run is tokenized anew.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Tokenize = Callable[[str], Awaitable[list[int]]]

MIN_TAIL_TOKENS = 64
"""A run of blocks after a change is kept only from this length on: shorter runs are not worth a
cache shift, and a few short blocks (" the", ".") may appear anywhere by chance."""


@dataclass(frozen=True)
class Block:
    """One message's tokens as the server evaluated them."""

    text: str
    tokens: tuple[int, ...]


class TokenHistory:
    """The conversation's tokens exactly as sent, so each turn reuses the server's cache."""

    def __init__(self, min_tail_tokens: int = MIN_TAIL_TOKENS) -> None:
        self.blocks: list[Block] = []
        self.min_tail_tokens = min_tail_tokens

    @property
    def tokens(self) -> list[int]:
        return [t for b in self.blocks for t in b.tokens]

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.blocks)

    async def prompt(self, rendered: str, tokenize: Tokenize) -> tuple[list[int], int]:
        """Tokens for `rendered` reusing the longest run of known blocks it starts with, and after
        a change in the middle the longest run the history ended with; returns (tokens, reused)."""
        kept, position = 0, 0
        for block in self.blocks:
            if not rendered.startswith(block.text, position):
                break
            kept += 1
            position += len(block.text)
        tail, at = self._tail(rendered, kept, position)
        end = at + sum(len(b.text) for b in tail)
        self.blocks[kept:] = []
        for text, reused_blocks in ((rendered[position:at], tail), (rendered[end:], [])):
            if text:
                self.blocks.append(Block(text, tuple(await tokenize(text))))
            self.blocks.extend(reused_blocks)
        reused = sum(len(b.tokens) for b in self.blocks[:kept]) + sum(len(b.tokens) for b in tail)
        return self.tokens, reused

    def _tail(self, rendered: str, kept: int, position: int) -> tuple[list[Block], int]:
        """The longest run of blocks that ends the history (from block `kept` on) and appears in
        `rendered` from `position` on, with where it starts there; ([], position) if none.

        A shorter end of a run that appears also appears, so the first block of the run is found by
        bisection."""
        sizes = [len(b.tokens) for b in self.blocks]
        lo, hi = kept, len(self.blocks)
        while hi > lo and sum(sizes[hi - 1 :]) < self.min_tail_tokens:
            hi -= 1
        if hi <= lo or self._find(rendered, hi - 1, position) < 0:
            return [], position
        hi -= 1
        while lo < hi:
            middle = (lo + hi) // 2
            if self._find(rendered, middle, position) >= 0:
                hi = middle
            else:
                lo = middle + 1
        return self.blocks[lo:], self._find(rendered, lo, position)

    def _find(self, rendered: str, first: int, position: int) -> int:
        return rendered.find("".join(b.text for b in self.blocks[first:]), position)

    def add_generated(self, text: str, tokens: list[int]) -> None:
        """Record what the model generated, token by token as the server streamed it."""
        self.blocks.append(Block(text, tuple(tokens)))
