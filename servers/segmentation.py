"""Where a reply is cut into segments: one rule (`ReplySegmentation`) for the TTS server and the LLM.

The TTS server's `Segmenter` cuts the text it receives into segments to synthesize; the LLM service
(`pipecat_services/llm/segments.py`) ends its interleaved segments by the same rule, counting
tokens as well. Whole sentences normally, but the first segment of a reply ends at the first clause
boundary so that the first audio starts as early as possible, and the second as well, so that the
audio goes on while the LLM finishes a long first sentence; with `first_words` the first segment
may also end at a phrase boundary, before any punctuation.

Text of any shape costs bounded work: a segment never exceeds `MAX_SEGMENT_CHARS` written, and
`split_bounded` cuts its spoken form into parts no longer than an engine synthesizes in one call;
both cut where a reader would pause (`bounded_cut`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE = r"[.!?…]+[\"')\]]*"
_CLAUSE = r"[,;:—–]+"


def _boundary(punctuation: str) -> str:
    """The position after `punctuation` that ends a sentence or clause. Right after a digit it ends
    something only once a space follows: in streamed text "29." may become 29.5 and "05:" 05:10,
    which cut there were spoken "twenty-nine. five"."""
    return rf"(?<!\d){punctuation}(?=\s|$)|{punctuation}(?=\s)"


def _at_end(boundary: str) -> re.Pattern[str]:
    """`boundary` at the end of a text, trailing whitespace aside: the text ends there."""
    return re.compile(rf"(?:{boundary})\s*$")


_SENTENCE_END = _boundary(_SENTENCE)
_CLAUSE_END = _boundary(_CLAUSE)
_NEXT_SENTENCE_END = re.compile(_SENTENCE_END)
_NEXT_CLAUSE_END = re.compile(_CLAUSE_END)
_ENDS_SENTENCE = _at_end(rf"{_SENTENCE_END}|\n")
_ENDS_CLAUSE = _at_end(_CLAUSE_END)

FIRST_SEGMENT_WORDS = (2, 4)
"""(min, max) words after which a reply's first segment may end at a phrase boundary (`phrase_cut`).
Measured against (3, 6) on the 2-core CPU with the 1.5B (docs/agent.md, "Where a turn's time goes"): server
V2V p50 60-115 ms lower in three comparisons, and the same answers equally intelligible when the
bot's audio is transcribed (21 varied questions, one session each, temperature 0)."""
CLAUSE_SEGMENTS = 2
"""The first segments of a reply that end at a clause end too, not only at a sentence end. After a
first phrase of 2-4 words (≈1 s of audio) the rest of a long first sentence would otherwise wait
for its sentence end, and the listener hears the wait: "To improve your sleep, ... try to keep a
regular schedule, avoid caffeine ..." paused ≈1.5 s with the 1.5B decoding ≈15 tokens/s on 2 cores
(the conversation benchmark took it for the end of the answer). By the third segment the LLM,
3-4 times faster than speech, is ahead of the audio."""
MAX_SEGMENT_CHARS = 300
"""A segment's written length at most: a sentence longer than this is cut by `bounded_cut`."""

_WORD = re.compile(r"\S+")
PHRASE_STARTS = frozenset(
    "a an the and or but so because that which who when where while if than as of to in on at for with "
    "from by about into is are was were be been has have had will would can could should may might do does "
    "did it its this these those there".split()
)
CONJUNCTIONS = frozenset("and or but so because that which who when where while if than".split())


def _before_words(words: frozenset[str]) -> re.Pattern[str]:
    return re.compile(rf"\s+(?=[\"'(]?(?:{'|'.join(sorted(words))})\b)", re.IGNORECASE)


_PAUSE_CUTS = (
    (re.compile(rf"(?:{_SENTENCE}|{_CLAUSE})(?=\s)"), "end"),  # after punctuation
    (_before_words(CONJUNCTIONS), "start"),  # before "and", "because", ...
    (_before_words(PHRASE_STARTS), "start"),  # before "the", "of", "is", ...
    (re.compile(r"\s+"), "start"),  # between any two words
)


def bounded_cut(text: str, limit: int) -> int:
    """Where to cut `text` so that the piece before is at most `limit` characters and ends where a
    reader pauses: after the last punctuation, else before the last conjunction, else before the
    last function word, else between the last two words, each only in the window's second half
    (so pieces stay long enough for natural prosody); a single word longer than `limit` is cut at it."""
    window = text[: limit + 1]
    for pattern, side in _PAUSE_CUTS:
        cuts = [m.end() if side == "end" else m.start() for m in pattern.finditer(window)]
        cuts = [c for c in cuts if limit // 2 <= c <= limit]
        if cuts:
            return cuts[-1]
    space = window.rfind(" ", 1, limit)
    return space if space > 0 else limit


def split_bounded(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` characters, each cut by `bounded_cut`."""
    pieces = []
    text = text.strip()
    while len(text) > limit:
        cut = bounded_cut(text, limit)
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    return [p for p in pieces + [text] if p]


@dataclass(frozen=True)
class ReplySegmentation:
    """Where a reply's segments end: the first at its first clause or sentence end, or with
    `first_words` = (min, max) at a phrase boundary (`phrase_cut`); the next ones up to
    `clause_segments` at a clause or sentence end, later ones at sentence ends; none is longer than
    `max_chars`. The TTS server's `Segmenter` and the LLM's interleaved segments both follow it."""

    first_words: tuple[int, int] | None = None
    clause_segments: int = CLAUSE_SEGMENTS
    max_chars: int = MAX_SEGMENT_CHARS

    def ends_sentence(self, text: str) -> bool:
        """Whether `text` ends at a sentence end, or at a line break (a list item without a period),
        where a stream that stopped there may end a segment."""
        return bool(_ENDS_SENTENCE.search(text))

    def ends_clause(self, text: str) -> bool:
        return bool(_ENDS_CLAUSE.search(text))

    def phrase_cut(self, text: str) -> int | None:
        """Where to end a reply's first segment early: before the first function word ("is", "the",
        "of", ...) that follows `min` words, or before word `max + 1` at the latest; None while
        neither has arrived, or without `first_words`. A cut at a phrase boundary keeps Piper's prosody
        and the next word whole ("The capital of France | is Paris.", not "... is | Paris.", which
        Whisper hears as "Aris")."""
        if not self.first_words:
            return None
        min_words, max_words = self.first_words
        for i, word in enumerate(_WORD.finditer(text)):
            if i >= max_words or (i >= min_words and word[0].lower().strip("\"'(") in PHRASE_STARTS):
                return word.start()
        return None

    def cut(self, text: str, index: int) -> int | None:
        """Where segment `index` (0: the reply's first) ends in `text`, what is left of the reply
        after the segments before it; None while the segment may still grow."""
        window = text[: self.max_chars + 1]
        ends = [_NEXT_SENTENCE_END.search(window)]
        if index < self.clause_segments:
            ends.append(_NEXT_CLAUSE_END.search(window))
        found = [m.end() for m in ends if m]
        if index == 0 and (cut := self.phrase_cut(window)):
            found.append(cut)
        found = [c for c in found if c <= self.max_chars]
        if found:
            return min(found)
        if len(text) > self.max_chars:
            return bounded_cut(text, self.max_chars)
        return None


class Segmenter:
    """Accumulates one reply's text and hands out segments ready to synthesize, cut by `rule`."""

    def __init__(self, rule: ReplySegmentation = ReplySegmentation()) -> None:
        self.rule = rule
        self._buffer = ""
        self._emitted = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, text: str) -> list[str]:
        """Append text; return the segments that are now complete."""
        self._buffer += text
        segments = []
        while (segment := self._next()) is not None:
            segments.append(segment)
        return segments

    def flush(self) -> list[str]:
        """The end of the reply: whatever is left, in segments of at most `rule.max_chars`."""
        rest, self._buffer = self._buffer, ""
        return split_bounded(rest, self.rule.max_chars)

    def _next(self) -> str | None:
        cut = self.rule.cut(self._buffer, self._emitted)
        if cut is None:
            return None
        segment, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        if not segment:
            return None
        self._emitted += 1
        return segment
