"""Word error rate with the usual ASR scoring normalisation (case, punctuation, numerals)."""

import re

import jiwer
from num2words import num2words


def normalize(text: str) -> str:
    """Lower case, no punctuation, numbers as words ("8 legs" and "eight legs" are the same answer)."""
    text = re.sub(r"\b\d{1,9}\b", lambda m: num2words(int(m[0])), text.lower())
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


def wer(references: list[str], hypotheses: list[str]) -> float:
    return jiwer.wer([normalize(r) for r in references], [normalize(h) or "<empty>" for h in hypotheses])
