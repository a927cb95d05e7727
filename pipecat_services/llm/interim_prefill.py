"""Hands the user's words to the LLM while they are still speaking.

The user aggregator consumes transcripts, so the LLM service never sees interims. This processor
sits between the STT and the user aggregator, passes every frame on unchanged, and gives the turn's
words so far to `TokenLLMService.prefill_user_words`: the finals of this turn (the ASR finalizes at
each pause, and the aggregator joins them into one user message; a reopened turn's interims cover
it whole) then the latest interim. By the
end of the turn the server has already evaluated most of what the user said, and the reply starts
after only the last words.

Only while the user speaks: once the VAD hears silence the ASR is computing the final transcript, the
turn's end is near, and on two cores a prefill then would slow the final (past the turn's wait for it,
which then ends the turn without the last words). The words left are evaluated with the reply.
"""

from __future__ import annotations

from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_services.llm.service import TokenLLMService
from pipecat_services.turn_end import TranscriptReopenedFrame


class InterimPrefill(FrameProcessor):
    """Hands the user's interim transcripts to the LLM service to prefill while they speak."""

    def __init__(self, llm: TokenLLMService, **kwargs) -> None:
        super().__init__(**kwargs)
        self._llm = llm
        self._finals: list[str] = []
        """This turn's final transcripts so far."""
        self._speaking = False
        """The VAD hears the user (the aggregator broadcasts its VAD frames both ways)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UserStartedSpeakingFrame | TranscriptReopenedFrame):
            self._finals = []  # a new user turn (the aggregator sends this both ways), or all of it again
        elif isinstance(frame, VADUserStartedSpeakingFrame | VADUserStoppedSpeakingFrame):
            self._speaking = isinstance(frame, VADUserStartedSpeakingFrame)
            if not self._speaking:
                self._llm.drop_pending_prefill()
        elif isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._finals.append(frame.text.strip())
        elif isinstance(frame, InterimTranscriptionFrame) and frame.text.strip() and self._speaking:
            self._llm.prefill_user_words(" ".join([*self._finals, frame.text.strip()]))
        await self.push_frame(frame, direction)
