"""Hands the user's words to the LLM while they are still speaking.

The user aggregator consumes interim transcripts, so the LLM service never sees them. This
processor sits between the STT and the user aggregator, passes every frame on unchanged, and gives
each interim's text to `TokenLLMService.prefill_user_words`: by the end of the turn the server has
already evaluated the words said so far, and the reply starts after only the last ones.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InterimTranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_services.token_llm import TokenLLMService


class InterimPrefill(FrameProcessor):
    def __init__(self, llm: TokenLLMService, **kwargs) -> None:
        super().__init__(**kwargs)
        self._llm = llm

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterimTranscriptionFrame) and frame.text.strip():
            self._llm.prefill_user_words(frame.text.strip())
        await self.push_frame(frame, direction)
