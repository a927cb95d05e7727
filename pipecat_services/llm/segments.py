"""Where the LLM ends an interleaved segment (`Interleaver`): the first at a clause or phrase
boundary, so the TTS can start on a few words; later ones at a sentence end. The boundaries are
the TTS server's (`servers/segmentation.py`); tokens bound a segment's length."""

from __future__ import annotations

from dataclasses import dataclass, field

from servers.segmentation import ReplySegmentation


@dataclass
class Segmenting:
    """When a segment ends: the first at any clause or, with `first_words`, at a phrase boundary
    (`ReplySegmentation.phrase_cut`); later ones at a sentence end after `min_tokens`; any at `max_tokens`."""

    first: bool
    min_tokens: int
    max_tokens: int
    first_words: tuple[int, int] | None = None
    rule: ReplySegmentation = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rule = ReplySegmentation(first_words=self.first_words)

    def done(self, text: str, n_tokens: int) -> bool:
        if n_tokens >= self.max_tokens:
            return True
        if self.first:
            if self.rule.phrase_cut(text) is not None:
                return True
            return n_tokens >= 2 and (self.rule.ends_sentence(text) or self.rule.ends_clause(text))
        return n_tokens >= self.min_tokens and self.rule.ends_sentence(text)

    def split(self, text: str) -> tuple[str, str]:
        """(text to speak now, text held back for the next segment) of a segment that ended
        mid-sentence: the words after the phrase cut, or a last word that may still be growing."""
        if self.rule.ends_sentence(text) or self.rule.ends_clause(text):
            return text, ""
        cut = self.rule.phrase_cut(text) if self.first else None
        if cut is None:
            cut = text.rstrip().rfind(" ")
        return (text[:cut], text[cut:]) if cut and cut > 0 else (text, "")
