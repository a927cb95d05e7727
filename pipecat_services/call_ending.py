"""When a call ends by itself: the user said goodbye, or stopped answering (`CallEnder`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    FunctionCallCancelFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext, standard_message_text
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_services.spoken_phrases import IDLE_GOODBYE, NUDGES, VariedPhrases

_APOSTROPHE = "['’]"
_FAREWELL = re.compile(
    rf"\b(?:bye(?:[\s-]*bye)?|good[\s-]*bye|good[\s-]*night|farewell|take care|ttyl|hang up|nothing else"
    rf"|see (?:you|ya)(?: later| soon| tomorrow)?|(?:talk|speak|catch you) (?:to you )?(?:later|soon)"
    rf"|end (?:the |this )?call|that{_APOSTROPHE}?s (?:all|it|everything)|that is (?:all|it)"
    rf"|(?:i{_APOSTROPHE}?m|i am|we{_APOSTROPHE}?re|we are) done|(?:gotta|got to|have to|need to) go)\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(rf"\b(?:don{_APOSTROPHE}?t|do not|never|not)\s+(?:\w+\s+){{0,2}}$", re.IGNORECASE)
_CLOSERS = re.compile(
    r"(?:[\s,]*(?:then|now|for now|for today|thanks|thank you|everyone|again|bye|(?:you can )?hang up"
    r"|(?:and )?have a (?:good|nice|great) (?:one|day|night|evening)))*[\s,]*",
    re.IGNORECASE,
)


def is_farewell(text: str) -> bool:
    """Whether the user's words end the conversation: a farewell phrase ("bye", "good night", "that's
    all", "hang up"...) that is not in a question, not negated ("don't hang up") and followed in its
    sentence by nothing but closers ("thanks", "for now", "have a good day"). "Thank you." alone is
    not one: Whisper hears it in noise."""
    for sentence in re.findall(r"[^.!?]+[.!?]?", text):
        for match in _FAREWELL.finditer(sentence):
            rest = sentence[match.end() :].rstrip(".!?")
            if sentence.rstrip().endswith("?") or _NEGATED.search(sentence[: match.start()]):
                continue
            if _CLOSERS.fullmatch(rest):
                return True
    return False


def last_user_words(messages: list[Any]) -> str:
    """The text of the last user message (Pipecat's standard messages; provider-specific ones skipped)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return standard_message_text(message)
    return ""


class CallEnder(FrameProcessor):
    """Between the LLM and the TTS, ends the call by itself:

    - once the bot's answer to a farewell is on its way to the TTS (a reply with words, or
      `end_call`'s goodbye), whether or not the model called `end_call`: the farewell decides, never
      the model (a small one hangs up on "Good morning!"); fillers (`skipped_text_types`) are no answer;
    - when the user is idle (`user_idle`, Pipecat's timer: silence on both sides), with a nudge
      ("Are you still there?"), `nudges` times, then a goodbye. Any words from the user start the
      count again (`user_spoke`); a timer that runs out while the LLM or a tool is still working
      (after a filler) does not count.

    The EndFrame queues behind the last words, which play whole before the session closes."""

    def __init__(
        self,
        context: LLMContext,
        *,
        nudges: int = 1,
        nudge_phrases: Sequence[str] = NUDGES,
        skipped_text_types: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._context = context
        self._nudges = nudges
        self._nudge_phrases = VariedPhrases(nudge_phrases)
        self._skipped = tuple(skipped_text_types)
        self.nudged = 0
        self._responding = False
        self._calls_running = 0
        self._reply_has_words = False
        self._ending = False

    def user_spoke(self) -> None:
        self.nudged = 0

    async def user_idle(self) -> None:
        if self._ending or self._responding or self._calls_running:
            logger.debug(f"{self}: user idle while the bot is still working: not counted")
            return
        if self.nudged < self._nudges:
            self.nudged += 1
            phrase = self._nudge_phrases.next()
            logger.info(f"{self}: user idle, nudge {self.nudged} ({phrase!r})")
            await self.push_frame(TTSSpeakFrame(phrase))
        else:
            logger.info(f"{self}: user idle after {self.nudged} nudge(s): saying goodbye and ending the call")
            await self.push_frame(TTSSpeakFrame(IDLE_GOODBYE))
            await self._end("the user stopped answering")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM or self._ending:
            return
        if isinstance(frame, LLMFullResponseStartFrame):
            self._responding, self._reply_has_words = True, False
        elif isinstance(frame, LLMTextFrame) and frame.text.strip():
            self._reply_has_words = True
        elif isinstance(frame, FunctionCallsStartedFrame):
            self._calls_running += len(frame.function_calls)
        elif isinstance(frame, FunctionCallResultFrame | FunctionCallCancelFrame):
            self._calls_running = max(0, self._calls_running - 1)
        if isinstance(frame, LLMFullResponseEndFrame | InterruptionFrame):
            self._responding = False
        if (isinstance(frame, LLMFullResponseEndFrame) and self._reply_has_words) or (
            isinstance(frame, TTSSpeakFrame) and frame.text_type not in self._skipped
        ):
            words = last_user_words(self._context.get_messages())
            if is_farewell(words):
                logger.info(f"{self}: the user said goodbye ({words!r}); the call ends after the answer")
                await self._end("the user said goodbye")

    async def _end(self, reason: str) -> None:
        self._ending = True
        await self.push_frame(EndWorkerFrame(reason=reason), FrameDirection.UPSTREAM)
