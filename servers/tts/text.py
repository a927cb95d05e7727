"""Text for speech, in one place: normalisation (numbers, symbols, markup, emoji) and segmentation.

LLM text is written to be read; a voice must say it. Every engine gets the same normalised text,
so no engine mispronounces "$5" or reads an emoji's name. Segmentation decides what to synthesize
next: whole sentences normally, but the first segment of a reply is cut at the first clause
boundary so that the first audio starts as early as possible.
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


_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s|$)")
_CLAUSE_END = re.compile(r"[,;:—–]+(?=\s|$)")
_WORD = re.compile(r"\S+(?=\s)")
MAX_SEGMENT_CHARS = 300


class Segmenter:
    """Accumulates one reply's text and hands out segments ready to synthesize.

    The first segment ends at the first clause or sentence end, or after `first_max_words` whole
    words (0: no limit); later ones at sentence ends."""

    def __init__(self, first_max_words: int = 0) -> None:
        self._buffer = ""
        self._emitted = 0
        self.first_max_words = first_max_words

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
            if self.first_max_words:
                words = _WORD.finditer(self._buffer)
                ends.append(next((m for i, m in enumerate(words, 1) if i == self.first_max_words), None))
        if found := [m.end() for m in ends if m]:
            return min(found)
        if len(self._buffer) > MAX_SEGMENT_CHARS:
            space = self._buffer.rfind(" ", 0, MAX_SEGMENT_CHARS)
            return space if space > 0 else MAX_SEGMENT_CHARS
        return None
