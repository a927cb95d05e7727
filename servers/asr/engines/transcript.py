"""The committed text of one utterance: what a stream has decoded for good and will not revisit.

Streams commit text as audio leaves their decode window, so an utterance of any length costs a
bounded decode. The committed text itself is the one thing that still grows with the utterance;
a client that streams for hours without finalizing must not grow memory without bound, so only the
last `max_chars` characters are kept (≈20 minutes of speech by default, far more than one turn).
"""

from __future__ import annotations

from collections import deque

from loguru import logger

MAX_TRANSCRIPT_CHARS = 20_000


class Transcript:
    """Committed pieces of text in order, trimmed from the front beyond `max_chars`."""

    def __init__(self, max_chars: int = MAX_TRANSCRIPT_CHARS) -> None:
        self.max_chars = max_chars
        self._pieces: deque[str] = deque()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._pieces)

    def add(self, text: str) -> None:
        """Append a piece; the oldest words go once the total passes `max_chars`."""
        text = text.strip()
        if not text:
            return
        self._pieces.append(text)
        self._chars += len(text) + 1
        if self._chars <= self.max_chars:
            return
        logger.warning(f"transcript longer than {self.max_chars} characters without a finalize: dropping its start")
        while self._chars > self.max_chars and len(self._pieces) > 1:
            self._chars -= len(self._pieces.popleft()) + 1
        if self._chars > self.max_chars:
            kept = self._pieces[0][-self.max_chars :].split(" ", 1)[-1]
            self._pieces[0] = kept
            self._chars = len(kept) + 1

    def text(self, tail: str = "") -> str:
        """The committed text followed by `tail` (text not committed yet)."""
        return " ".join(p for p in [*self._pieces, tail.strip()] if p)

    def clear(self) -> None:
        self._pieces.clear()
        self._chars = 0
