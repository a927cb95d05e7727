"""Text for speech: normalisation of numbers, symbols, markup and emoji.

LLM text is written to be read; a voice must say it. Every engine gets the same normalised text,
so no engine mispronounces "$5" or reads an emoji's name. Where a reply is cut into segments is
`servers/segmentation.py`'s rule. Long digit strings are read in groups, digit by digit, so their
spoken length grows linearly with the digits, never as "quadrillion ...".
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
