"""Where the LLM ends an interleaved segment (`Interleaver`): the first at a clause or phrase
boundary, so the TTS can start on a few words; later ones at a sentence end."""

from __future__ import annotations

from dataclasses import dataclass

from servers.tts.text import ends_clause, ends_sentence, phrase_cut


@dataclass
class Segmenting:
    """When a segment ends: the first at any clause or, with `first_words`, at a phrase boundary
    (`phrase_cut`); later ones at a sentence end after `min_tokens`; any at `max_tokens`."""

    first: bool
    min_tokens: int
    max_tokens: int
    first_words: tuple[int, int] | None = None

    def done(self, text: str, n_tokens: int) -> bool:
        if n_tokens >= self.max_tokens:
            return True
        if self.first:
            if self.first_words and phrase_cut(text, *self.first_words) is not None:
                return True
            return n_tokens >= 2 and (ends_sentence(text) or ends_clause(text))
        return n_tokens >= self.min_tokens and ends_sentence(text)

    def split(self, text: str) -> tuple[str, str]:
        """(text to speak now, text held back for the next segment) of a segment that ended
        mid-sentence: the words after the phrase cut, or a last word that may still be growing."""
        if ends_sentence(text) or ends_clause(text):
            return text, ""
        cut = phrase_cut(text, *self.first_words) if self.first and self.first_words else None
        if cut is None:
            cut = text.rstrip().rfind(" ")
        return (text[:cut], text[cut:]) if cut and cut > 0 else (text, "")
