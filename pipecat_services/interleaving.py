"""LLM and TTS interleaved on one device: the `Interleaver` (not the user's turns: see `turn_end.py`).

On one GPU (or two CPU cores) the LLM and the TTS compete for the same compute. The LLM generates
a short segment, hands it to the TTS, and waits until the TTS server has synthesized everything up
to that point before generating the next segment: exactly one wait per segment, so the two never
run at once. The handshake is a *mark*: the LLM pushes `TTSMarkFrame` after a segment's text, the
TTS service forwards it to the TTS server in order with the text, the server answers once the
audio before it is synthesized, and the TTS service calls `reached`.

Where a segment ends is `llm/segments.py`'s rule.

The scheduler also records when each side was busy (the last `BUSY_SPANS` spans: a call may last
hours), for the test that proves the two never overlap.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass

from pipecat.frames.frames import DataFrame

BUSY_SPANS = 256


@dataclass
class TTSMarkFrame(DataFrame):
    """Ordered with the LLM text: "tell me when everything before this has been synthesized"."""

    mark_id: str = ""


@dataclass(frozen=True)
class Busy:
    """One span during which the LLM or the TTS held the machine."""

    who: str
    start: float
    end: float


class Interleaver:
    """Lets the LLM and the TTS take turns on one machine (GPU or few cores)."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        """`timeout_s`: how long the LLM waits for a mark before going on (a TTS that never answers)."""
        self.timeout_s = timeout_s
        self.busy: deque[Busy] = deque(maxlen=BUSY_SPANS)
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._sent_at: dict[str, float] = {}
        self._ids = itertools.count(1)

    def new_mark(self) -> TTSMarkFrame:
        mark_id = f"m{next(self._ids)}"
        self._waiting[mark_id] = asyncio.get_running_loop().create_future()
        return TTSMarkFrame(mark_id=mark_id)

    async def wait(self, mark: TTSMarkFrame) -> bool:
        """Wait until the TTS reached `mark`; False if it timed out."""
        future = self._waiting.get(mark.mark_id)
        if future is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
            return True
        except TimeoutError:
            self._sent_at.pop(mark.mark_id, None)
            return False
        finally:
            self._waiting.pop(mark.mark_id, None)

    def tts_started(self, mark_id: str) -> None:
        """The TTS service sent the text before `mark_id` to its server."""
        self._sent_at.setdefault(mark_id, time.perf_counter())

    def reached(self, mark_id: str) -> None:
        """The TTS server synthesized everything before `mark_id`."""
        started = self._sent_at.pop(mark_id, None)
        if started is not None:
            self.busy.append(Busy("tts", started, time.perf_counter()))
        future = self._waiting.get(mark_id)
        if future is not None and not future.done():
            future.set_result(None)

    def llm_busy(self, start: float, end: float) -> None:
        self.busy.append(Busy("llm", start, end))

    def cancel_all(self) -> None:
        """An interruption: nobody waits for marks that will never come."""
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()
        self._sent_at.clear()
