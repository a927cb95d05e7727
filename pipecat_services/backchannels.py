"""A listener's "mhm" or cough does not stop the bot; words that mean something do (`BackchannelGate`).

Silero VAD hears any voiced sound in ~0.1 s, and Pipecat's VAD turn start interrupts the bot on it,
dropping the rest of its reply. Here a sound while the bot speaks first pauses the bot's speech
(`speech_pacer.py`) and its words decide: a backchannel ("mhm", "okay", "I see"...) or no words at
all resume it where it paused, and the sound is no turn; anything else goes on to Pipecat's
transcription turn start, which interrupts as before, the pause having already silenced the bot.
Deciding by words costs a real interruption nothing: the bot goes quiet at the sound's start either
way.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TranscriptionFrame,
    UserBackchannelFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import VADUserTurnStartStrategy

from pipecat_services.speech_pacer import MAX_PAUSE_S, BotSpeechPacer
from pipecat_services.spoken_phrases import BACKCHANNELS


def _words(text: str) -> list[str]:
    """Lower case words, the ASR's sound tags ("(coughs)", "[laughter]") and punctuation gone, and each
    run of a letter one letter: the ASR spells a hum "Mmmm" or "Mm" as it likes."""
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]|\*[^*]*\*", " ", text.lower())
    text = re.sub(r"([a-z])\1+", r"\1", text)
    return re.sub(r"[^a-z' ]+", " ", text.replace("-", " ")).split()


INTERIM_WORDS = 2
"""Words an interim transcript needs to interrupt before the final: one alone is too often misheard
("Mhm" as "Mm-kay"), and the paused bot is silent meanwhile anyway."""


class BackchannelPhrases:
    """Tells a backchannel from words that take the turn."""

    def __init__(self, phrases: Iterable[str] = BACKCHANNELS) -> None:
        self._phrases = {tuple(_words(p)) for p in phrases if _words(p)}

    def _ends(self, words: list[str], start: int) -> Iterable[int]:
        """Where a phrase that starts at `start` ends."""
        return (start + len(p) for p in self._phrases if tuple(words[start : start + len(p)]) == p)

    def _reachable(self, words: list[str]) -> set[int]:
        """The positions a run of whole phrases from the start reaches."""
        reached, todo = {0}, [0]
        while todo:
            for end in self._ends(words, todo.pop()):
                if end not in reached:
                    reached.add(end)
                    todo.append(end)
        return reached

    def heard_in(self, text: str) -> bool:
        """Whether `text` is nothing but backchannels (no words at all is none)."""
        words = _words(text)
        return bool(words) and len(words) in self._reachable(words)

    @staticmethod
    def no_words(text: str) -> bool:
        """Whether `text` has no word of two letters or more: what Whisper writes for a gasp ("U.")."""
        return all(len(word) < 2 for word in _words(text))

    def may_become(self, text: str) -> bool:
        """Whether `text` is, or may grow into, a backchannel: what an interim transcript cannot yet rule out."""
        words = _words(text)
        return any(
            p[: len(words) - start] == tuple(words[start:]) for start in self._reachable(words) for p in self._phrases
        ) or len(words) in self._reachable(words)


class BackchannelGate(FrameProcessor):
    """Between the STT and the user aggregator: while the bot speaks, the user's speech pauses it,
    and its transcript decides. A backchannel becomes Pipecat's `UserBackchannelFrame` (kept out of
    the context) and the bot resumes; so it does when `wait_s` pass after the sound with no words (a
    cough, a knock), or `max_pause_s` after it began. Other words pass on and interrupt (Pipecat's
    transcription turn start). Within the user's own turn everything passes."""

    def __init__(
        self, phrases: BackchannelPhrases, speech: BotSpeechPacer, *, wait_s: float, max_pause_s: float, **kwargs
    ) -> None:
        """`speech`: the pacer before the output transport, which pauses the bot's speech."""
        super().__init__(**kwargs)
        self._phrases = phrases
        self.speech = speech
        self._wait_s = wait_s
        self._max_pause_s = min(max_pause_s, MAX_PAUSE_S)
        self._bot_speaking = False
        self._user_turn = False
        self._paused = False
        self._paused_at = 0.0
        self._resume_task: asyncio.Task | None = None

    @property
    def judging(self) -> bool:
        """The bot speaks (or is paused), so the user's speech starts no turn by itself."""
        return (self._bot_speaking or self._paused) and not self._user_turn

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame | BotStoppedSpeakingFrame):
            self._bot_speaking = isinstance(frame, BotStartedSpeakingFrame)
        elif isinstance(frame, UserStartedSpeakingFrame | UserStoppedSpeakingFrame):
            self._user_turn = isinstance(frame, UserStartedSpeakingFrame)
        elif isinstance(frame, InterruptionFrame):
            await self._settled()
        elif isinstance(frame, VADUserStartedSpeakingFrame) and direction is FrameDirection.UPSTREAM:
            if self.judging:
                await self._pause()
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and direction is FrameDirection.UPSTREAM:
            if self._paused:
                await self._resume_after(self._wait_s, "no words")
        elif isinstance(frame, InterimTranscriptionFrame | TranscriptionFrame) and self.judging:
            if not await self._judge(frame):
                return
        await self.push_frame(frame, direction)

    async def _judge(self, frame: InterimTranscriptionFrame | TranscriptionFrame) -> bool:
        """Whether the transcript goes on (to interrupt); a backchannel resumes the bot instead."""
        final = isinstance(frame, TranscriptionFrame)
        if final and self._phrases.no_words(frame.text):
            logger.info(f"{self}: no words in {frame.text!r}: the bot goes on")
            await self._resume("no words")
            return False
        if final and self._phrases.heard_in(frame.text):
            logger.info(f"{self}: backchannel {frame.text!r}: the bot goes on")
            await self.push_frame(UserBackchannelFrame(frame.text, frame.user_id, frame.timestamp))
            await self._resume("a backchannel")
            return False
        if not final and (len(frame.text.split()) < INTERIM_WORDS or self._phrases.may_become(frame.text)):
            return False
        logger.info(f"{self}: {frame.text!r} over the bot's speech: an interruption")
        return True  # the pause holds until the interruption arrives (or, failing one, times out)

    async def _pause(self) -> None:
        if not self._paused:
            logger.debug(f"{self}: the user's sound pauses the bot's speech")
            self._paused, self._paused_at = True, time.monotonic()
            self.speech.pause()
        await self._resume_after(None, "the longest pause")

    async def _resume_after(self, seconds: float | None, why: str) -> None:
        """Resume in `seconds` (None: only at the longest pause), unless words decide first."""
        await self._cancel_resume()
        left = self._max_pause_s - (time.monotonic() - self._paused_at)
        wait = left if seconds is None else min(seconds, left)

        async def resume_later() -> None:
            await asyncio.sleep(wait)
            await self._resume(why)

        self._resume_task = self.create_task(resume_later(), "resume")

    async def _resume(self, why: str) -> None:
        if self._paused:
            logger.debug(f"{self}: resuming the bot's speech ({why})")
            self._paused = False
            self.speech.resume()
        await self._cancel_resume()

    async def _settled(self) -> None:
        """The sound turned out to be the user's turn: nothing left to resume."""
        self._paused = False
        await self._cancel_resume()

    async def _cancel_resume(self) -> None:
        task, self._resume_task = self._resume_task, None
        if task is not None and task is not asyncio.current_task():
            await self.cancel_task(task)

    async def cleanup(self) -> None:
        await self._cancel_resume()
        await super().cleanup()


class QuietBotVADUserTurnStartStrategy(VADUserTurnStartStrategy):
    """Pipecat's VAD turn start, except while the `gate` judges the user's speech over the bot's."""

    def __init__(self, gate: BackchannelGate, **kwargs) -> None:
        super().__init__(**kwargs)
        self._gate = gate

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStartedSpeakingFrame) and self._gate.judging:
            return ProcessFrameResult.STOP
        return await super().process_frame(frame)
