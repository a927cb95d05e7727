"""Text for speech, in one place: normalisation (numbers, symbols, markup, emoji) and segmentation.

LLM text is written to be read; a voice must say it. Every engine gets the same normalised text,
so no engine mispronounces "$5" or reads an emoji's name. Segmentation decides what to synthesize
next: whole sentences normally, but the first segment of a reply is cut at the first clause
boundary so that the first audio starts as early as possible, and the second as well, so that the
audio goes on while the LLM finishes a long first sentence. The LLM service cuts its interleaved
segments by the same rules (`ends_sentence`, `ends_clause`, `phrase_cut`, `FIRST_SEGMENT_WORDS`).

Text of any shape costs bounded work: a segment never exceeds `MAX_SEGMENT_CHARS` written, and
`split_bounded` cuts its spoken form into parts no longer than an engine synthesizes in one call;
both cut where a reader would pause (`bounded_cut`). Long digit strings are read in groups, digit
by digit, so their spoken length grows linearly with the digits, never as "quadrillion ...".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from num2words import num2words

_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"https?://\S+")
_MARKUP = re.compile(r"[*_`#>|~]+")
_DIGIT_SEQUENCE = re.compile(r"(?<![\w.,-])(?:\+\d{1,3}[ -]?)?(?:\(\d{2,4}\) ?)?\d{2,}(?:[ -]\d{2,})+(?![\w-]|[.,]\d)")
_CURRENCY = re.compile(r"([$€£])\s?(\d[\d,]*(?:\.\d+)?)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d{1,6})(st|nd|rd|th)\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_YEAR = re.compile(
    rf"\b((?:in|since|from|until|till|by|year|circa|around|before|after|during)\s+|(?:{_MONTHS})\s+(?:\d{{1,2}},?\s+)?)"
    r"(1[1-9]\d\d|20\d\d)\b(?![,.]?\d)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,!?;:])")
CURRENCIES = {"$": ("dollars", "cents"), "€": ("euros", "cents"), "£": ("pounds", "pence")}
SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "/": " ", "\\": " ", "°": " degrees "}
DIGIT_NAMES = "zero one two three four five six seven eight nine".split()
MAX_CARDINAL_DIGITS = 6
"""A bare run of up to 6 digits is a quantity ("12500": twelve thousand five hundred); a longer run,
or one with a leading zero, is an identifier (phone, card, account number) read in digit groups."""
MAX_AMOUNT_DIGITS = 15
"""Money, percentages and numbers with thousands separators are read as amounts up to hundreds of
trillions; beyond that (no one says "quattuordecillion") they are read in digit groups too."""


def _group_sizes(n: int) -> list[int]:
    """How a person groups n digits: 4-4-4-4 for a card, 3-3-4 for a phone number, 3s otherwise."""
    if n <= 4:
        return [n]
    if n % 4 == 0:
        return [4] * (n // 4)
    threes, rest = divmod(n, 3)
    if rest == 0:
        return [3] * threes
    if rest == 1:
        return [3] * (threes - 1) + [4]
    return [3] * (threes - 2) + [4, 4] if threes >= 2 else [3, 2]


def _spell(digits: str) -> str:
    return " ".join(DIGIT_NAMES[int(d)] for d in digits)


def read_digits(groups: Iterable[str]) -> str:
    """Digit by digit with a pause between groups: ["4155552671"] -> "four one five, five five five,
    two six seven one". Written groups ("415-555-2671") are kept; longer ones are grouped."""
    spoken = []
    for group in groups:
        start = 0
        for size in _group_sizes(len(group)):
            spoken.append(_spell(group[start : start + size]))
            start += size
    return ", ".join(spoken)


def _number(written: str, amount: bool = False) -> str:
    """A number as a person says it: a quantity in words, an identifier in digit groups, a decimal
    part digit by digit. `amount`: money or a percentage, a quantity whatever its digit count."""
    sign = "minus " if written.startswith("-") else ""
    whole, _, fraction = written.lstrip("-").partition(".")
    digits = whole.replace(",", "")
    if len(digits) > MAX_AMOUNT_DIGITS:
        spoken = read_digits(whole.split(","))
    elif "," in whole or amount or (len(digits) <= MAX_CARDINAL_DIGITS and not (len(digits) > 1 and digits[0] == "0")):
        spoken = num2words(int(digits))
    else:
        spoken = read_digits([digits])
    if fraction:
        spoken += " point " + (read_digits([fraction]) if len(fraction) > MAX_CARDINAL_DIGITS else _spell(fraction))
    return sign + spoken


def _digit_sequence(match: re.Match[str]) -> str:
    """Phone and card numbers written in groups; other digit groups ("1990-2000") are left alone."""
    groups = re.findall(r"\d+", match[0])
    phone = len(groups) >= 3 or (len(groups) == 2 and "-" in match[0] and len(groups[0]) == 3)
    if sum(map(len, groups)) < 7 or not phone:
        return match[0]
    return ("plus " if match[0].startswith("+") else "") + read_digits(groups)


def _minutes(written: str) -> str:
    if written == "00":
        return "o clock"
    return f"oh {DIGIT_NAMES[int(written[1])]}" if written[0] == "0" else num2words(int(written))


def _money(symbol: str, amount: str) -> str:
    major, _, minor = amount.replace(",", "").partition(".")
    unit, subunit = CURRENCIES[symbol]
    spoken = f"{_number(major, amount=True)} {unit}"
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
    text = _DIGIT_SEQUENCE.sub(_digit_sequence, text)
    text = _CURRENCY.sub(lambda m: _money(m[1], m[2]), text)
    text = _PERCENT.sub(lambda m: f"{_number(m[1], amount=True)} percent", text)
    text = _ORDINAL.sub(lambda m: num2words(int(m[1]), to="ordinal"), text)
    text = _TIME.sub(lambda m: f"{num2words(int(m[1]))} {_minutes(m[2])}", text)
    text = _YEAR.sub(lambda m: m[1] + num2words(int(m[2]), to="year"), text)
    text = _NUMBER.sub(lambda m: _number(m[0]), text)
    for symbol, spoken in SYMBOLS.items():
        text = text.replace(symbol, spoken)
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", _SPACE.sub(" ", text)).strip()


# Where a reply is cut, for the TTS server's segments and the LLM's interleaved segments alike.
_SENTENCE = r"[.!?…]+[\"')\]]*"
_CLAUSE = r"[,;:—–]+"
# Punctuation right after a digit ends something only once a space follows: in streamed text
# "29." may become 29.5 and "05:" 05:10, which cut there were spoken "twenty-nine. five".
_SENTENCE_END = re.compile(rf"(?<!\d){_SENTENCE}(?=\s|$)|{_SENTENCE}(?=\s)")
_CLAUSE_END = re.compile(rf"(?<!\d){_CLAUSE}(?=\s|$)|{_CLAUSE}(?=\s)")
_ENDS_SENTENCE = re.compile(rf"(?:(?<!\d){_SENTENCE}|{_SENTENCE}\s|\n)\s*$")
_ENDS_CLAUSE = re.compile(rf"(?:(?<!\d){_CLAUSE}|{_CLAUSE}\s)\s*$")
FIRST_SEGMENT_WORDS = (2, 4)
"""(min, max) words after which a reply's first segment may end at a phrase boundary (`phrase_cut`).
Measured against (3, 6) on the 2-core CPU with the 1.5B (docs/agent.md, "Where a turn's time goes"): server
V2V p50 60-115 ms lower in three comparisons, and the same answers equally intelligible when the
bot's audio is transcribed (21 varied questions, one session each, temperature 0)."""


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
CONJUNCTIONS = frozenset("and or but so because that which who when where while if than".split())


def _before_words(words: frozenset[str]) -> re.Pattern[str]:
    return re.compile(rf"\s+(?=[\"'(]?(?:{'|'.join(sorted(words))})\b)", re.IGNORECASE)


_PAUSE_CUTS = (
    (re.compile(rf"(?:{_SENTENCE}|{_CLAUSE})(?=\s)"), "end"),  # after punctuation
    (_before_words(CONJUNCTIONS), "start"),  # before "and", "because", ...
    (_before_words(PHRASE_STARTS), "start"),  # before "the", "of", "is", ...
    (re.compile(r"\s+"), "start"),  # between any two words
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


MAX_SEGMENT_CHARS = 300
"""A segment's written length at most: a sentence longer than this is cut by `bounded_cut`."""
CLAUSE_SEGMENTS = 2
"""The first segments of a reply that end at a clause end too, not only at a sentence end. After a
first phrase of 2-4 words (≈1 s of audio) the rest of a long first sentence would otherwise wait
for its sentence end, and the listener hears the wait: "To improve your sleep, ... try to keep a
regular schedule, avoid caffeine ..." paused ≈1.5 s with the 1.5B decoding ≈15 tokens/s on 2 cores
(the conversation benchmark took it for the end of the answer). By the third segment the LLM,
3-4 times faster than speech, is ahead of the audio."""


class Segmenter:
    """Accumulates one reply's text and hands out segments ready to synthesize.

    The first segment ends at the first clause or sentence end, or with `first_words` = (min, max)
    at a phrase boundary (`phrase_cut`); the next ones up to `CLAUSE_SEGMENTS` at a clause or
    sentence end, later ones at sentence ends; none is longer than `MAX_SEGMENT_CHARS`."""

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
        """The end of the reply: whatever is left, in segments of at most `MAX_SEGMENT_CHARS`."""
        rest, self._buffer = self._buffer, ""
        return split_bounded(rest, MAX_SEGMENT_CHARS)

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
        window = self._buffer[: MAX_SEGMENT_CHARS + 1]
        ends = [_SENTENCE_END.search(window)]
        if self._emitted < CLAUSE_SEGMENTS:
            ends.append(_CLAUSE_END.search(window))
        found = [m.end() for m in ends if m]
        if self._emitted == 0 and self.first_words and (cut := phrase_cut(window, *self.first_words)):
            found.append(cut)
        found = [c for c in found if c <= MAX_SEGMENT_CHARS]
        if found:
            return min(found)
        if len(self._buffer) > MAX_SEGMENT_CHARS:
            return bounded_cut(self._buffer, MAX_SEGMENT_CHARS)
        return None
