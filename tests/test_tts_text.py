"""Text normalisation and segmentation for speech."""

import pytest

from servers.tts.text import Segmenter, normalize


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


def test_long_text_without_punctuation_is_cut_at_a_space() -> None:
    s = Segmenter()
    segments = s.add("word " * 100)
    assert segments and all(len(seg) <= 300 for seg in segments)
    assert " ".join(segments + s.flush()).split() == ["word"] * 100
