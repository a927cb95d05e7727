"""User turn stop strategies: a finished sentence in the final transcript, and Smart Turn without a wait.

Smart Turn v3 judges from audio alone and is wrong on many short questions ("What is two plus
two?" scores 0.02 on synthetic speech), and when it says "unfinished" the turn waits for its
silence fallback (3 s by default): the reference system's 3.5 s turns. Our ASR punctuates its
final transcript, so a final that ends a sentence (".", "?", "!", not "...") is a second, independent
signal. Put this strategy next to Smart Turn in the stop list: whichever fires first ends the turn,
so Smart Turn still holds the turn open on an unpunctuated "I'd like to order a...".

Pipecat's Smart Turn strategy awaits the model inside the user aggregator's frame handling, so the
final transcript that arrives meanwhile (usually within milliseconds of the VAD stop) waits for it
too, and with it the sentence-end verdict: ≈50 ms per turn on two busy cores.
`BackgroundTurnAnalyzerUserTurnStopStrategy` runs the model in a task, and only when the final
transcript has not already ended the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import BaseUserTurnStopStrategy, TurnAnalyzerUserTurnStopStrategy

SENTENCE_END = re.compile(r"(?<![.…])[.?!][\"')\]]*\s*$")


def ends_sentence(text: str) -> bool:
    return bool(SENTENCE_END.search(text))


class SentenceEndUserTurnStopStrategy(BaseUserTurnStopStrategy):
    """Ends the turn on a finalized transcript that ends a sentence, once the user is silent."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._speaking = False
        self._vad_stopped = False

    async def handle_user_turn_started(self) -> None:
        self._vad_stopped = False

    async def handle_user_turn_stopped(self) -> None:
        self._vad_stopped = False

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            self._vad_stopped = True
        elif (
            isinstance(frame, TranscriptionFrame)
            and frame.finalized
            and self._vad_stopped
            and not self._speaking
            and ends_sentence(frame.text)
        ):
            await self.trigger_user_turn_stopped()
        return ProcessFrameResult.CONTINUE


class BackgroundTurnAnalyzerUserTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Pipecat's Smart Turn strategy, its model run beside the frames, once the final transcript is in.

    A final that ends a sentence ends the turn (`SentenceEndUserTurnStopStrategy`, next in the list)
    before the model starts, so the model's 30-60 ms of CPU do not compete with the reply's first
    words; any other final starts it a few milliseconds after the VAD stop. The verdict applies only
    to the silence it was asked about: the user speaking again, or the turn ending on another
    strategy's signal, discards an analysis not yet done."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._analysis: asyncio.Task[None] | None = None
        self._finalized = asyncio.Event()
        """A final transcript came since the user last spoke, and no interim after it."""

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, TranscriptionFrame) and frame.finalized:
            self._finalized.set()
        elif isinstance(frame, InterimTranscriptionFrame):
            self._finalized.clear()
        return await super().process_frame(frame)

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        await self._discard_analysis()
        # What Pipecat sets first, set now: the audio that follows is silence to Smart Turn, whose
        # own silence fallback then counts from the VAD stop, not from the end of the analysis.
        self._vad_user_speaking, self._vad_stopped, self._stop_secs = False, True, frame.stop_secs
        self._analysis = self.task_manager.create_task(self._analyze(frame), f"{self}::analysis")

    async def _analyze(self, frame: VADUserStoppedSpeakingFrame) -> None:
        """Wait for the final (at most until Pipecat's own wait for it ends), then judge the silence."""
        final_due = frame.timestamp - frame.stop_secs + self._stt_timeout - time.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finalized.wait(), max(0.0, final_due))
        if self._turn_analyzer.speech_triggered:  # else Smart Turn's silence fallback judged it already
            await super()._handle_vad_user_stopped_speaking(frame)

    async def _discard_pending_end_of_turn(self) -> None:
        await self._discard_analysis()
        self._finalized.clear()
        await super()._discard_pending_end_of_turn()

    async def _discard_analysis(self) -> None:
        # The analysis itself may end the turn, which resets this strategy: it must not cancel itself.
        analysis, self._analysis = self._analysis, None
        if analysis is not None and analysis is not asyncio.current_task() and not analysis.done():
            await self.task_manager.cancel_task(analysis)

    async def cleanup(self) -> None:
        await self._discard_analysis()
        await super().cleanup()
