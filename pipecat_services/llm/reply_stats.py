"""One reply's numbers (prompt, cache reuse, the call decision): for logs, metrics, tests and benchmarks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class ReplyStats:
    """What one reply cost and decided; filled in as the reply goes."""

    prompt_tokens: int
    reusable_tokens: int
    """Leading prompt tokens the server held before this reply."""
    trimmed: bool
    """The oldest turns left the context for this reply."""
    cache_n: int | None = None
    """Prompt tokens the server served from its cache (None until its first response says)."""
    prompt_n: int | None = None
    """Prompt tokens it evaluated."""
    prompt_ms: float = 0.0
    cache_hit_ratio: float | None = None
    """`cache_n` over `reusable_tokens`: 1.0 when every reusable token was reused."""
    prompt_cached_share: float | None = None
    call_probability: float | None = None
    """The first token's probability of opening a tool call (the one that decided)."""
    call_probability_in_conversation: float | None = None
    """Before the request was judged again alone."""
    first_token_prefilled: bool = False

    def record_cache(self, timings: dict[str, Any]) -> float:
        """The server's cache statistics (`cache_n`, `prompt_n`, `prompt_ms`) for this reply's prompt;
        returns the hit ratio unrounded."""
        cached, evaluated = timings.get("cache_n", 0), timings.get("prompt_n", 0)
        hit = min(1.0, cached / self.reusable_tokens) if self.reusable_tokens else 0.0
        self.cache_n, self.prompt_n = cached, evaluated
        self.prompt_ms = round(float(timings.get("prompt_ms", 0.0)), 1)
        self.cache_hit_ratio = round(hit, 4)
        self.prompt_cached_share = round(cached / max(1, cached + evaluated), 4)
        return hit

    def as_dict(self) -> dict[str, Any]:
        """The numbers known so far."""
        return {k: v for k, v in asdict(self).items() if v is not None}
