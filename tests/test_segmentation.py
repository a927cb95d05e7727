"""Where a reply is cut: the TTS server's segments and the LLM's interleaved ones, by one rule."""

import re

import pytest

from pipecat_services.llm.segments import Segmenting
from servers.segmentation import FIRST_SEGMENT_WORDS, ReplySegmentation, Segmenter, bounded_cut

RULE = ReplySegmentation()


def test_first_segment_is_cut_at_the_first_clause_then_sentences() -> None:
    s = Segmenter()
    assert s.add("Sure, the capital of France") == ["Sure,"]
    assert s.add(" is Paris. It is a lovely city, with") == ["the capital of France is Paris."]
    assert s.add(" many museums. And") == ["It is a lovely city, with many museums."]
    assert s.flush() == ["And"]
    assert s.flush() == []


def test_the_second_segment_ends_at_a_clause_too_so_a_long_first_sentence_keeps_sounding() -> None:
    s = Segmenter(ReplySegmentation(first_words=(2, 4)))
    assert s.add("To improve your sleep, try to keep a regular schedule, avoid") == [
        "To improve your sleep,",
        "try to keep a regular schedule,",
    ]
    assert s.add(" caffeine, and rest well. Then") == ["avoid caffeine, and rest well."]  # sentences from here
    assert s.flush() == ["Then"]


def test_first_segment_can_end_at_a_phrase_boundary() -> None:
    s = Segmenter(ReplySegmentation(first_words=(3, 6)))
    assert s.add("The capital of France") == []
    assert s.add(" is") == ["The capital of France"]
    assert s.add(" Paris. It is") == ["is Paris."]
    assert Segmenter(ReplySegmentation(first_words=(3, 6))).add("Sure, it is") == ["Sure,"]
    assert Segmenter(ReplySegmentation(first_words=(3, 6))).add("Seven green parrots sang loudly today every") == [
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
    assert [RULE.ends_sentence(t) for t in ("It is 29.", "It is 29. ", "It is nine.")] == [False, True, True]
    assert [RULE.ends_clause(t) for t in ("At 05:", "At 05: ", "Well,")] == [False, True, True]


def test_long_text_without_punctuation_is_cut_at_a_space() -> None:
    s = Segmenter()
    segments = s.add("word " * 100)
    assert segments and all(len(seg) <= 300 for seg in segments)
    assert " ".join(segments + s.flush()).split() == ["word"] * 100


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


def test_long_sentence_is_cut_at_a_clause_not_mid_phrase() -> None:
    sentence = "We looked at the old house by the river, " + "and then we walked along the quiet road " * 10 + "home."
    segments = Segmenter().add("Hi. " + sentence + " Bye. ")
    assert segments[0] == "Hi."
    assert all(seg.endswith((",", ".")) or seg.split()[-1] == "road" for seg in segments[1:]), segments


REPLIES = [
    "The capital of France is Paris.",
    "To improve your sleep, try to keep a regular schedule.",
    "Yes, of course.",
    "Seven green parrots sang loudly today every morning.",
    "Well, it is 29.5 degrees today.",
    "At 05:10 we leave for the airport.",
    "It lasts 29.5 days. Then we go home.",
]


@pytest.mark.parametrize("first_words", [FIRST_SEGMENT_WORDS, None])
@pytest.mark.parametrize("reply", REPLIES)
def test_the_llm_and_the_tts_end_a_reply_s_first_segment_at_the_same_place(
    reply: str, first_words: tuple[int, int] | None
) -> None:
    """Both follow one `ReplySegmentation`, fed the reply as the LLM streams it: words and punctuation."""
    tokens = re.findall(r"\s*(?:\w+|[^\w\s]+)", reply)
    segmenter = Segmenter(ReplySegmentation(first_words=first_words))
    tts = [segment for token in tokens for segment in segmenter.add(token)] + segmenter.flush()
    segmenting = Segmenting(first=True, min_tokens=32, max_tokens=96, first_words=first_words)
    text = ""
    for n_tokens, token in enumerate(tokens, 1):
        text += token
        if segmenting.done(text, n_tokens):
            spoken, _ = segmenting.split(text)
            break
    else:
        spoken = text
    assert spoken.strip() == tts[0]


def test_a_line_break_ends_the_llm_s_segment_but_the_tts_does_not_cut_at_one() -> None:
    """A list item without a period ends where the LLM stopped; inside buffered text it is no boundary."""
    assert RULE.ends_sentence("- eggs\n")
    assert Segmenter().add("- eggs\n- milk") == []
