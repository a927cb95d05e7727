"""Text for speech, in one place: normalisation (numbers, symbols, markup, emoji) and segmentation.

LLM text is written to be read; a voice must say it. Every engine gets the same normalised text,
so no engine mispronounces "$5" or reads an emoji's name. Segmentation decides what to synthesize
next: whole sentences normally, but the first segment of a reply is cut at the first clause
boundary so that the first audio starts as early as possible. The LLM service cuts its interleaved
segments by the same rules (`ends_sentence`, `ends_clause`, `phrase_cut`, `FIRST_SEGMENT_WORDS`).
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")
_MARKUP = re.compile(r"[*_`#>|~]+")
_CURRENCY = re.compile(r"([$€£])\s?(\d[\d,]*(?:\.\d+)?)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,!?;:])")
CURRENCIES = {"$": ("dollars", "cents"), "€": ("euros", "cents"), "£": ("pounds", "pence")}
SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "/": " ", "\\": " ", "°": " degrees "}


def _number(text: str) -> str:
    value = float(text.replace(",", "")) if "." in text else int(text.replace(",", ""))
    return num2words(value)


def _money(symbol: str, amount: str) -> str:
    major, _, minor = amount.replace(",", "").partition(".")
    unit, subunit = CURRENCIES[symbol]
    spoken = f"{num2words(int(major))} {unit}"
    if minor and int(minor):
        spoken += f" and {num2words(int(minor.ljust(2, '0')[:2]))} {subunit}"
    return spoken


def _strip_emoji(text: str) -> str:
    """Drop pictographs and their joiners/modifiers; keep letters, digits and punctuation."""
    return "".join(
        c for c in text if unicodedata.category(c) not in ("So", "Sk", "Cs", "Co") and c not in "\u200d\ufe0f"
    )


def normalize(text: str) -> str:
    """Spell out what a TTS voice would otherwise misread or skip."""
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("a link", text)
    text = _MARKUP.sub("", text)
    text = _strip_emoji(text)
    text = _CURRENCY.sub(lambda m: _money(m[1], m[2]), text)
    text = _PERCENT.sub(lambda m: f"{_number(m[1])} percent", text)
    text = _ORDINAL.sub(lambda m: num2words(int(m[1]), to="ordinal"), text)
    text = _TIME.sub(lambda m: f"{_number(m[1])} {'o clock' if m[2] == '00' else _number(m[2])}", text)
    text = _NUMBER.sub(lambda m: _number(m[0]), text)
    for symbol, spoken in SYMBOLS.items():
        text = text.replace(symbol, spoken)
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", _SPACE.sub(" ", text)).strip()


# Where a reply is cut, for the TTS server's segments and the LLM's interleaved segments alike.
_SENTENCE = r"[.!?…]+[\"')\]]*"
_CLAUSE = r"[,;:—–]+"
_SENTENCE_END = re.compile(rf"{_SENTENCE}(?=\s|$)")
_CLAUSE_END = re.compile(rf"{_CLAUSE}(?=\s|$)")
_ENDS_SENTENCE = re.compile(rf"(?:{_SENTENCE}|\n)\s*$")
_ENDS_CLAUSE = re.compile(rf"{_CLAUSE}\s*$")
FIRST_SEGMENT_WORDS = (3, 6)
"""(min, max) words after which a reply's first segment may end at a phrase boundary (`phrase_cut`)."""


def ends_sentence(text: str) -> bool:
    return bool(_ENDS_SENTENCE.search(text))


def ends_clause(text: str) -> bool:
    return bool(_ENDS_CLAUSE.search(text))


_WORD = re.compile(r"\S+")
PHRASE_STARTS = frozenset(
    "a an the and or but so because that which who when where while if than as of to in on at for with "
    "from by about into is are was were be been has have had will would can could should may might do does "
    "did it its this these those there".split()
)


def phrase_cut(text: str, min_words: int, max_words: int) -> int | None:
    """Where to end a reply's first segment early: before the first function word ("is", "the",
    "of", ...) that follows `min_words` words, or before word `max_words + 1` at the latest; None
    while neither has arrived. A cut at a phrase boundary keeps Piper's prosody and the next word
    whole ("The capital of France | is Paris.", not "... is | Paris.", which Whisper hears as "Aris")."""
    for i, word in enumerate(_WORD.finditer(text)):
        if i >= max_words or (i >= min_words and word[0].lower().strip("\"'(") in PHRASE_STARTS):
            return word.start()
    return None
MAX_SEGMENT_CHARS = 300


class Segmenter:
    """Accumulates one reply's text and hands out segments ready to synthesize.

    The first segment ends at the first clause or sentence end, or with `first_words` = (min, max)
    at a phrase boundary (`phrase_cut`); later ones at sentence ends."""

    def __init__(self, first_words: tuple[int, int] | None = None) -> None:
        self._buffer = ""
        self._emitted = 0
        self.first_words = first_words

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
        """The end of the reply: whatever is left is the last segment."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    def _next(self) -> str | None:
        cut = self._cut_point()
        if cut is None:
            return None
        segment, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        if not segment:
            return None
        self._emitted += 1
        return segment

    def _cut_point(self) -> int | None:
        ends = [_SENTENCE_END.search(self._buffer)]
        if self._emitted == 0:
            ends.append(_CLAUSE_END.search(self._buffer))
        found = [m.end() for m in ends if m]
        if self._emitted == 0 and self.first_words and (cut := phrase_cut(self._buffer, *self.first_words)):
            found.append(cut)
        if found:
            return min(found)
        if len(self._buffer) > MAX_SEGMENT_CHARS:
            space = self._buffer.rfind(" ", 0, MAX_SEGMENT_CHARS)
            return space if space > 0 else MAX_SEGMENT_CHARS
        return None
