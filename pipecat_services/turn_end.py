"""User turn strategies: a finished sentence in the final transcript, Smart Turn without a wait, and a
turn whose words go on after a final.

Smart Turn v3 judges from audio alone and is wrong on many short questions ("What is two plus
two?" scores 0.02 on synthetic speech), and when it says "unfinished" the turn waits for its
silence fallback (3 s by default): the reference system's 3.5 s turns. Our ASR punctuates its
final transcript, so a final that ends a sentence (".", "?", "!", not "...") is a second, independent
signal. Put this strategy next to Smart Turn in the stop list: whichever fires first ends the turn,
so Smart Turn still holds the turn open on an unpunctuated "I'd like to order a...". A pause inside
a sentence gets a punctuated final too: the sentence end answers at once but ends the turn only after
a short hold, and speech before then reopens the turn's transcript (the ASR decodes it again whole).

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
from dataclasses import dataclass
from typing import Any

from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, EndOfTurnState
from pipecat.frames.frames import (
    DataFrame,
    EagerEndOfTurnCancelFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    MetricsFrame,
    SpeechControlParamsFrame,
    StartFrame,
    STTMetadataFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_start import BaseUserTurnStartStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy

SENTENCE_END = re.compile(r"(?<![.…])[.?!][\"')\]]*\s*$")


def final_ends_sentence(text: str) -> bool:
    """Whether a final transcript ends a sentence: the ASR punctuates a whole utterance, so its last
    ".", "?" or "!" (not "...") ends one; the rules for where a streamed reply's text ends one differ."""
    return bool(SENTENCE_END.search(text))


AUDIO_LAG_S = 0.5
"""How far the wall clock may run past a turn's hold before it ends anyway: audio that stops coming
(a muted microphone) must not hold the turn open."""


@dataclass
class TranscriptReopenedFrame(DataFrame):
    """From the STT: the user went on after a final within the same turn, and the next final covers
    the whole turn, decoded again as one; the pieces so far are void."""


class ReopenedTranscriptUserTurnStartStrategy(BaseUserTurnStartStrategy):
    """Drops the user aggregator's pieces of a turn whose transcript the STT reopened (see
    `TranscriptReopenedFrame`), so the user message is the whole turn's final alone."""

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, TranscriptReopenedFrame):
            await self.trigger_reset_aggregation()
        return ProcessFrameResult.CONTINUE


class SentenceEndUserTurnStopStrategy(BaseUserTurnStopStrategy):
    """Answers a final that ends a sentence at once, and ends the turn when the user stays silent
    `hold_s` longer.

    A pause inside a question also gets a final that ends a sentence ("What do you call?"), so the
    answer starts as a Pipecat speculation: the LLM generates while the user is silent, Pipecat's gate
    in the LLM service holds its words, and speech within the hold withdraws them unheard; the turn
    then goes on and its next final covers it whole (`TranscriptReopenedFrame`). The hold is counted
    in audio heard, not in wall time: on two busy cores the VAD's verdict on the same audio may come
    late, and a wall clock would end the turn before it."""

    def __init__(self, *, hold_s: float, **kwargs: Any) -> None:
        """`hold_s`: silence past the VAD's stop that confirms the turn (the bot's `turn_hold_secs`)."""
        super().__init__(**kwargs)
        self._hold_s = hold_s
        self._speaking = False
        self._silence_s: float | None = None
        """Audio heard since the VAD reported a stop this turn; None when it has not, or speech followed."""
        self._answered: UserTurnSpeculation | None = None
        """The final this turn's answer started on, while the turn waits to confirm it."""
        self._speculating = False
        """Pipecat still holds that answer (the LLM withdraws it to run a tool call for real)."""
        self._backstop: asyncio.Task[None] | None = None
        self._turn_ended = False

    async def handle_user_turn_started(self) -> None:
        self._silence_s = None
        await self._withdraw()

    async def handle_user_turn_stopped(self) -> None:
        self._silence_s, self._turn_ended = None, True
        await self._withdraw()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking, self._silence_s = True, None
            await self._withdraw()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking, self._silence_s = False, 0.0
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            self._speculating = False
        elif isinstance(frame, InputAudioRawFrame) and self._silence_s is not None:
            self._silence_s += frame.num_frames / frame.sample_rate
            if self._answered is not None and self._silence_s >= self._hold_s:
                await self._confirm()
        elif (
            isinstance(frame, TranscriptionFrame)
            and frame.finalized
            and self._silence_s is not None
            and not self._speaking
            and final_ends_sentence(frame.text)
        ):
            await self._withdraw()
            self._answered, self._speculating = UserTurnSpeculation(text=frame.text), True
            await self.trigger_user_turn_inference_triggered(speculation=self._answered)
            wait_s = self._hold_s - self._silence_s + AUDIO_LAG_S
            self._backstop = self.task_manager.create_task(self._confirm_after(wait_s), f"{self}::backstop")
        return ProcessFrameResult.CONTINUE

    async def _confirm_after(self, wait_s: float) -> None:
        await asyncio.sleep(wait_s)
        self._backstop = None
        await self._confirm()

    async def _confirm(self) -> None:
        """End the turn with its answer under way, or with a new one if the LLM withdrew it."""
        await self._cancel_backstop()
        answered, self._answered = self._answered, None
        speculating, self._speculating = self._speculating, False
        self._turn_ended = False
        if not speculating:
            await self.trigger_user_turn_stopped()
            return
        await self.trigger_user_turn_finalized(confirms_speculation=True)
        if not self._turn_ended:
            # Pipecat keeps a turn open while the user speaks: their speech withdraws the answer.
            self._answered, self._speculating = answered, True

    async def _withdraw(self) -> None:
        """Stop waiting to confirm, and withdraw an answer not confirmed."""
        await self._cancel_backstop()
        self._answered = None
        if self._speculating:
            self._speculating = False
            await self.trigger_user_turn_speculation_cancelled()

    async def _cancel_backstop(self) -> None:
        # The backstop may confirm the turn itself, which resets this strategy: it must not cancel itself.
        backstop, self._backstop = self._backstop, None
        if backstop is not None and backstop is not asyncio.current_task():
            await self.task_manager.cancel_task(backstop)

    async def cleanup(self) -> None:
        await self._cancel_backstop()
        await super().cleanup()


class BackgroundTurnAnalyzerUserTurnStopStrategy(BaseUserTurnStopStrategy):
    """Smart Turn's verdict applied as Pipecat's `TurnAnalyzerUserTurnStopStrategy` applies it, its model
    run beside the frames, once the final transcript is in.

    A final that ends a sentence is the turn end of `SentenceEndUserTurnStopStrategy` (next in the
    list), and the model does not run on it, so its 30-60 ms of CPU do not compete with the reply's
    first words; any other final starts it a few milliseconds after the VAD stop. The verdict applies only
    to the silence it was asked about: the user speaking again, or the turn ending on another
    strategy's signal, discards an analysis not yet done.

    Pipecat's strategy runs the model inside its own private VAD-stop handler, so this one holds the
    analyzer itself and calls its public API, with Pipecat's rules: a complete verdict ends the turn
    once a final transcript is in, or once the STT's p99 time to a final since the user stopped
    speaking has passed with some transcript in hand."""

    def __init__(self, *, turn_analyzer: BaseTurnAnalyzer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._analyzer = turn_analyzer
        self._final_wait_s = 0.0
        """The STT's p99 time to a final after the user stops speaking (its `STTMetadataFrame`)."""
        self._user_speaking = False
        self._vad_stopped = False
        """VAD reported a stop this turn, and no start since."""
        self._vad_stop_secs = 0.0
        self._text = ""
        self._complete = False
        """The analyzer's verdict on the last silence: the turn is complete."""
        self._finalized = asyncio.Event()
        """A final transcript came since the user last spoke, and no interim after it."""
        self._final_wait: asyncio.Task[None] | None = None
        self._final_waited = False
        """The wait for a final ran out: any transcript will do."""
        self._analysis: asyncio.Task[None] | None = None

    async def setup(self, setup: FrameProcessorSetup) -> None:
        await super().setup(setup)
        self._analyzer.set_sample_rate(setup.audio_in_sample_rate)

    async def handle_user_turn_started(self) -> None:
        self._text = ""
        await self._discard_verdict()

    async def handle_user_turn_stopped(self) -> None:
        """Also drops the analyzer's buffered speech: after a turn ended on another signal, its silence
        timer must not end the next one."""
        self._text = ""
        await self._discard_verdict()
        self._analyzer.clear()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, StartFrame):
            await self.broadcast_frame(SpeechControlParamsFrame, turn_params=self._analyzer.params)
        elif isinstance(frame, STTMetadataFrame):
            self._final_wait_s = frame.ttfs_p99_latency
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._analyzer.update_vad_start_secs(frame.start_secs)
            self._user_speaking = True
            await self._discard_verdict()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._discard_analysis()
            # The audio that follows is silence to the analyzer, whose own silence fallback then counts
            # from the VAD stop, not from the end of the analysis.
            self._user_speaking, self._vad_stopped, self._vad_stop_secs = False, True, frame.stop_secs
            self._analysis = self.task_manager.create_task(self._analyze(frame), f"{self}::analysis")
        elif isinstance(frame, InputAudioRawFrame):
            # COMPLETE here is Smart Turn's silence fallback (or a streaming analyzer's verdict).
            if self._analyzer.append_audio(frame.audio, self._user_speaking) == EndOfTurnState.COMPLETE:
                await self._verdict()
                self._complete = True
                await self._maybe_stop()
        elif isinstance(frame, TranscriptionFrame):
            await self._handle_transcription(frame)
        elif isinstance(frame, InterimTranscriptionFrame):
            self._finalized.clear()
        return ProcessFrameResult.CONTINUE

    async def _analyze(self, frame: VADUserStoppedSpeakingFrame) -> None:
        """Wait for the final (at most the STT's p99 since the user stopped speaking), then judge the
        silence, and wait out the rest of that time for a final if none came."""
        final_due = frame.timestamp - frame.stop_secs + self._final_wait_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finalized.wait(), max(0.0, final_due - time.time()))
        if not self._analyzer.speech_triggered or self._sentence_ended():
            return  # judged already by its silence fallback, or the sentence end's to judge
        self._complete = await self._verdict() == EndOfTurnState.COMPLETE
        await self._cancel_final_wait()
        self._final_wait = self.task_manager.create_task(
            self._wait_for_final(max(0.0, final_due - time.time())), f"{self}::final_wait"
        )
        await self._maybe_stop()

    async def _verdict(self) -> EndOfTurnState:
        state, prediction = await self._analyzer.analyze_end_of_turn()
        if prediction:
            await self.push_frame(MetricsFrame(data=[prediction]))
        return state

    async def _handle_transcription(self, frame: TranscriptionFrame) -> None:
        self._text = frame.text
        if frame.finalized:
            self._finalized.set()
            await self._maybe_stop()
        elif self._final_waited and self._complete:
            await self.trigger_user_turn_stopped()
            return
        if not self._user_speaking and not self._vad_stopped:
            # Speech VAD did not report: no verdict to wait for, only the STT's, from this transcript on.
            await self._cancel_final_wait()
            self._complete = True
            self._final_wait = self.task_manager.create_task(
                self._wait_for_final(max(0.0, self._final_wait_s - self._vad_stop_secs)), f"{self}::final_wait"
            )

    async def _wait_for_final(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)
        if self._final_wait is asyncio.current_task():
            self._final_wait = None
        self._final_waited = True
        await self._maybe_stop()

    async def _maybe_stop(self) -> None:
        """End the turn on a complete verdict with a transcript: a final, or any once the wait is over."""
        if not self._complete or not self._text or self._sentence_ended():
            return
        if self._finalized.is_set():
            await self._cancel_final_wait()
            await self.trigger_user_turn_stopped()
        elif self._final_wait is None:
            await self.trigger_user_turn_stopped()

    def _sentence_ended(self) -> bool:
        return self._finalized.is_set() and final_ends_sentence(self._text)

    async def _discard_verdict(self) -> None:
        """Drop what was concluded about the last silence: at a turn's bounds, and when speech resumes."""
        await self._discard_analysis()
        await self._cancel_final_wait()
        self._complete = self._final_waited = self._vad_stopped = False
        self._finalized.clear()

    async def _discard_analysis(self) -> None:
        # The analysis itself may end the turn, which resets this strategy: it must not cancel itself.
        analysis, self._analysis = self._analysis, None
        if analysis is not None and analysis is not asyncio.current_task() and not analysis.done():
            await self.task_manager.cancel_task(analysis)

    async def _cancel_final_wait(self) -> None:
        final_wait, self._final_wait = self._final_wait, None
        if final_wait is not None:
            await self.task_manager.cancel_task(final_wait)

    async def cleanup(self) -> None:
        await self._discard_analysis()
        await self._cancel_final_wait()
        await super().cleanup()
        await self._analyzer.cleanup()
