"""Keys a caller presses: Pipecat's DTMFAggregator turns them into one "DTMF: 123#" transcript, and
that transcript ends the user's turn at once (no speech, so no VAD stop would end it)."""

from __future__ import annotations

from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.processors.aggregators.dtmf_aggregator import DTMFAggregator
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import BaseUserTurnStopStrategy

KEYPAD_PREFIX = "DTMF: "
KEYPAD_WAIT_S = 2.0
"""Keys end an entry after this long without another (or at once with #)."""


def keypad_aggregator() -> DTMFAggregator:
    return DTMFAggregator(timeout=KEYPAD_WAIT_S, prefix=KEYPAD_PREFIX)


class KeypadUserTurnStopStrategy(BaseUserTurnStopStrategy):
    """A keypad entry is a whole turn."""

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, TranscriptionFrame) and frame.finalized and frame.text.startswith(KEYPAD_PREFIX):
            await self.trigger_user_turn_stopped()
        return ProcessFrameResult.CONTINUE
