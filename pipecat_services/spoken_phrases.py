"""What the bot says without asking the LLM (goodbyes, idle nudges, fillers while a tool runs), and what a
listener says without taking the turn (backchannels)."""

from __future__ import annotations

import random
from collections.abc import Sequence

GOODBYE = "Goodbye, talk to you soon!"
IDLE_GOODBYE = "It seems you've stepped away. Goodbye for now!"
NUDGES = ("Are you still there?", "Hello, are you still with me?", "Still there?")
FILLERS = ("Let me check.", "One moment.", "Let me see.", "Just a sec.", "Checking now.")
"""Short on purpose: the answer waits for the filler to finish playing."""
BACKCHANNELS = (
    "mhm", "mm", "mm hmm", "mkay", "mm kay", "hmm", "uh huh", "uh", "um", "erm", "ah", "oh", "ahem",
    "yeah", "yes", "yep", "yup", "okay", "ok", "right", "sure", "i see", "got it", "alright", "all right",
    "cool", "nice", "great", "wow", "true", "exactly", "indeed", "totally", "of course", "makes sense",
    "go on", "interesting", "thanks", "thank you",
)  # fmt: skip
"""What a listener says without taking the turn; any run of them ("Okay, I see.") is one."""


class VariedPhrases:
    """Picks one of `phrases` at random, never the one it picked last: the same phrase every time
    sounds like a machine."""

    def __init__(self, phrases: Sequence[str]) -> None:
        self._phrases = list(phrases)
        self._last: str | None = None

    def next(self) -> str:
        self._last = random.choice([p for p in self._phrases if p != self._last] or self._phrases)
        return self._last
