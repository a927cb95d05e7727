"""The small interface every ASR engine implements.

The server owns sockets, sessions and the protocol; an engine owns a model and turns a stream of
16 kHz float32 samples into text. Engines do their heavy work off the event loop (a thread, or a
batching loop that serves many streams with one model call), so one slow decode never stalls
another session's socket.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

import numpy as np

SAMPLE_RATE = 16_000

InterimCallback = Callable[[str], Awaitable[None]]
"""Called by a stream with new interim text for the utterance in progress."""


class ASRStream(ABC):
    """One client session's audio stream. Calls on one stream never overlap (the server awaits each)."""

    def __init__(self, on_interim: InterimCallback) -> None:
        self._on_interim = on_interim

    @abstractmethod
    async def feed(self, samples: np.ndarray) -> None:
        """Append float32 mono samples in [-1, 1]; may emit interim text through `on_interim`."""

    @abstractmethod
    async def finalize(self, hard: bool) -> str:
        """Return the transcript of the utterance so far.

        soft (`hard=False`): a speculative finalize; the user probably stopped, more audio may follow.
        Engines use it to start work early. hard: the turn is over; return the final text and begin a
        new utterance (engines may keep acoustic context across utterances when it helps accuracy).
        """

    async def reopen(self) -> bool:
        """The user went on after the last hard finalize, within the same turn: make that utterance the
        one in progress again, so the next final decodes it with what follows as one. False: this
        engine cannot, and the server joins the two finals' texts instead."""
        return False

    @abstractmethod
    async def reset(self) -> None:
        """Drop the utterance in progress without producing text, and any carried-over context."""

    async def close(self) -> None:
        """Release per-stream resources; the session is gone."""


class ASREngine(ABC):
    """A loaded model that can open many concurrent streams."""

    name: str = "base"
    sample_rate: int = SAMPLE_RATE

    @abstractmethod
    def load(self) -> None:
        """Load weights (blocking; the server calls it in a thread at startup)."""

    @abstractmethod
    def open_stream(self, on_interim: InterimCallback) -> ASRStream:
        """Create the stream for one client session."""

    def close(self) -> None:
        """Free the model."""
