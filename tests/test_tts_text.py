"""Text normalisation and segmentation for speech."""

import pytest

from servers.tts.text import (
    MAX_SEGMENT_CHARS,
    Segmenter,
    bounded_cut,
    ends_clause,
    ends_sentence,
    normalize,
    split_bounded,
)


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


def test_first_segment_is_cut_at_the_first_clause_then_sentences() -> None:
    s = Segmenter()
    assert s.add("Sure, the capital of France") == ["Sure,"]
    assert s.add(" is Paris. It is a lovely city, with") == ["the capital of France is Paris."]
    assert s.add(" many museums. And") == ["It is a lovely city, with many museums."]
    assert s.flush() == ["And"]
    assert s.flush() == []


def test_the_second_segment_ends_at_a_clause_too_so_a_long_first_sentence_keeps_sounding() -> None:
    s = Segmenter(first_words=(2, 4))
    assert s.add("To improve your sleep, try to keep a regular schedule, avoid") == [
        "To improve your sleep,",
        "try to keep a regular schedule,",
    ]
    assert s.add(" caffeine, and rest well. Then") == ["avoid caffeine, and rest well."]  # sentences from here
    assert s.flush() == ["Then"]


def test_first_segment_can_end_at_a_phrase_boundary() -> None:
    s = Segmenter(first_words=(3, 6))
    assert s.add("The capital of France") == []
    assert s.add(" is") == ["The capital of France"]
    assert s.add(" Paris. It is") == ["is Paris."]
    assert Segmenter(first_words=(3, 6)).add("Sure, it is") == ["Sure,"]
    assert Segmenter(first_words=(3, 6)).add("Seven green parrots sang loudly today every") == [
        "Seven green parrots sang loudly today"
    ]


def test_numbers_with_commas_and_decimals_are_not_cut() -> None:
    s = Segmenter()
    assert s.add("We have 1,200 apples and 3.5 pears") == []
    assert s.flush() == ["We have 1,200 apples and 3.5 pears"]


def test_numbers_streamed_in_pieces_are_not_cut_at_their_point_or_colon() -> None:
    """LLM tokens split "05:10" and "29.5"; a cut after "05:" was spoken "zero five. ten"."""
    s = Segmenter()
    pieces = ["The time is 05", ":", "10", " and", " it", " lasts", " 29", ".", "5", " days", "."]
    pieces += [" Then", " 3", ".", " Go"]
    segments = [segment for piece in pieces for segment in s.add(piece)]
    assert segments == ["The time is 05:10 and it lasts 29.5 days.", "Then 3."]
    assert s.flush() == ["Go"]
    assert [ends_sentence(t) for t in ("It is 29.", "It is 29. ", "It is nine.")] == [False, True, True]
    assert [ends_clause(t) for t in ("At 05:", "At 05: ", "Well,")] == [False, True, True]


def test_long_text_without_punctuation_is_cut_at_a_space() -> None:
    s = Segmenter()
    segments = s.add("word " * 100)
    assert segments and all(len(seg) <= 300 for seg in segments)
    assert " ".join(segments + s.flush()).split() == ["word"] * 100


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


def test_bounded_cut_prefers_punctuation_then_conjunctions_then_any_word() -> None:
    assert bounded_cut("one two three four, five six seven eight nine ten", 36) == len("one two three four,")
    assert bounded_cut("one two three four and five six seven eight nine ten", 36) == len("one two three four")
    assert bounded_cut("one two three four five six the seven eight nine", 36) == len("one two three four five six")
    assert bounded_cut("one two three four five six seven eight nine ten", 36) == len(
        "one two three four five six seven"
    )
    assert bounded_cut("one, two three four five six seven eight nine ten", 36) == len(
        "one, two three four five six seven"
    )
    assert bounded_cut("x" * 100, 40) == 40


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
    s = Segmenter(first_words=(3, 6))
    segments = s.add(text[:2000]) + s.add(text[2000:]) + s.flush()
    assert segments and all(len(seg) <= MAX_SEGMENT_CHARS for seg in segments)
    assert "".join("".join(segments).split()) == "".join(text.split())
    spoken = normalize(" ".join(segments))
    parts = [p for seg in segments for p in split_bounded(normalize(seg), 60)]
    assert all(0 < len(p) <= 60 for p in parts)
    assert "".join("".join(parts).split()) == "".join(spoken.split())


def test_long_sentence_is_cut_at_a_clause_not_mid_phrase() -> None:
    sentence = "We looked at the old house by the river, " + "and then we walked along the quiet road " * 10 + "home."
    segments = Segmenter().add("Hi. " + sentence + " Bye. ")
    assert segments[0] == "Hi."
    assert all(seg.endswith((",", ".")) or seg.split()[-1] == "road" for seg in segments[1:]), segments
