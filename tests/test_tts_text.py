"""Text normalisation for speech, and the TTS's whole text path: segments, then parts."""

import pytest

from servers.segmentation import MAX_SEGMENT_CHARS, ReplySegmentation, Segmenter, split_bounded
from servers.tts.text import normalize


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("It costs $5.50.", "It costs five dollars and fifty cents."),
        ("About 20% more.", "About twenty percent more."),
        ("The 3rd time at 10:30.", "The third time at ten thirty."),
        ("We met at 9:00 with 1,200 people.", "We met at nine o clock with one thousand, two hundred people."),
        ("**Great** job 🎉👍!", "Great job!"),
        ("See [the docs](https://x.y/z) & more.", "See the docs and more."),
        ("Visit https://example.com today.", "Visit a link today."),
        ("It is -3.5 degrees.", "It is minus three point five degrees."),
        ("# Heading\n- item one", "Heading - item one"),
        ("In 1984 we had 12500 people.", "In nineteen eighty-four we had twelve thousand, five hundred people."),
        ("It was May 5, 2024.", "It was May five, twenty twenty-four."),
        ("Pi is 3.14159 and 007 is a spy.", "Pi is three point one four one five nine and zero zero seven is a spy."),
        ("At 10:05.", "At ten oh five."),
        ("It costs $1250000.", "It costs one million, two hundred and fifty thousand dollars."),
    ],
)
def test_normalize(written: str, spoken: str) -> None:
    assert normalize(written) == spoken


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("Call 415-555-2671.", "Call four one five, five five five, two six seven one."),
        ("Call (415) 555-2671.", "Call four one five, five five five, two six seven one."),
        ("Call +1 415 555 2671.", "Call plus one, four one five, five five five, two six seven one."),
        ("Card 4111 1111 1111 1234.", "Card four one one one, one one one one, one one one one, one two three four."),
        ("Account 4155552671.", "Account four one five, five five five, two six seven one."),
        ("Code 12345678.", "Code one two three four, five six seven eight."),
    ],
)
def test_phone_card_and_account_numbers_are_read_in_digit_groups(written: str, spoken: str) -> None:
    assert normalize(written) == spoken


def test_a_huge_number_is_read_in_groups_of_bounded_length() -> None:
    """300 digits: not "... quinquanonagintillion", and no overflow; 7-8 words per group."""
    for written in ("7" * 300, "1," + "234," * 99 + "567", "$" + "9" * 400):
        spoken = normalize(written)
        groups = spoken.split(", ")
        assert len(groups) > 50 and all(len(g.split()) <= 5 for g in groups[:-1]), spoken[:200]
        assert "illion" not in spoken
        assert len(spoken) < 8 * len(written)


@pytest.mark.parametrize(
    "text",
    [
        "word " * 1000,
        "the quick brown fox jumps over a lazy dog while seven green parrots sing " * 60,
        "x" * 4000,
        "4155552671" * 30,
        "Short. " * 500,
    ],
)
def test_any_text_is_cut_into_bounded_segments_and_parts_without_losing_words(text: str) -> None:
    s = Segmenter(ReplySegmentation(first_words=(3, 6)))
    segments = s.add(text[:2000]) + s.add(text[2000:]) + s.flush()
    assert segments and all(len(seg) <= MAX_SEGMENT_CHARS for seg in segments)
    assert "".join("".join(segments).split()) == "".join(text.split())
    spoken = normalize(" ".join(segments))
    parts = [p for seg in segments for p in split_bounded(normalize(seg), 60)]
    assert all(0 < len(p) <= 60 for p in parts)
    assert "".join("".join(parts).split()) == "".join(spoken.split())
