"""A user turn stop strategy that trusts a finished sentence in the final transcript.

Smart Turn v3 judges from audio alone and is wrong on many short questions ("What is two plus
two?" scores 0.02 on synthetic speech), and when it says "unfinished" the turn waits for its
silence fallback (3 s by default): the reference system's 3.5 s turns. Our ASR punctuates its
final transcript, so a final that ends a sentence (".", "?", "!", not "...") is a second, independent
signal. Put this strategy next to Smart Turn in the stop list: whichever fires first ends the turn,
so Smart Turn still holds the turn open on an unpunctuated "I'd like to order a...".
"""

from __future__ import annotations

import re

from pipecat.frames.frames import (
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import BaseUserTurnStopStrategy

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
