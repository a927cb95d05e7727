"""The small interface every TTS engine implements.

The server owns sockets, sessions, text segmentation and cancellation; an engine turns one text
segment into audio chunks. `synthesize` is a plain (blocking) generator: the server advances it
one chunk at a time on the engine's single worker thread, so

- model state is never touched by two sessions at once (sessions interleave chunk by chunk), and
- cancelling a reply takes effect at the next chunk boundary, in every engine and mode: the server
  simply stops advancing the generator and closes it.

Engines therefore keep chunks short (tens to a few hundred milliseconds of audio) and need not be
thread-safe. The server never passes more than `max_part_chars` of text to one call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np


class TTSEngine(ABC):
    """What the TTS server needs of an engine: load, synthesize in chunks, close."""

    name: str = "base"
    sample_rate: int = 22_050
    voices: tuple[str, ...] = ()
    languages: tuple[str, ...] = ("en",)
    first_segment_words: tuple[int, int] | None = None
    """(min, max) words after which a reply's first segment may end at a phrase boundary without
    punctuation (`ReplySegmentation.phrase_cut` of `servers/segmentation.py`), for engines whose
    first audio waits for a whole segment."""
    max_part_chars: int = 200
    """Longest (normalised) text given to one `synthesize` call: bounds what one call allocates and,
    for engines that compute a call's audio at once, how long it holds the worker from other sessions."""

    @abstractmethod
    def load(self) -> None:
        """Load weights (blocking; the server calls it in a thread at startup)."""

    @abstractmethod
    def synthesize(self, text: str, voice: str, language: str, first: bool) -> Iterator[np.ndarray]:
        """Yield mono int16 chunks of `text` (already normalised) at `sample_rate`.

        `first` marks the first segment of a reply: the engine should favour time to first audio
        (e.g. stream frame by frame), while later segments may favour throughput.
        """

    def close(self) -> None:
        """Free the model."""
