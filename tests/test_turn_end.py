"""The turn stop strategies: which finals end a turn, only once the user is silent, and Smart Turn
kept out of the way of a final that ends a sentence."""

from __future__ import annotations

import asyncio

import pytest
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    EagerEndOfTurnCancelFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    STTMetadataFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.turns.user_stop import BaseUserTurnStopStrategy, TurnAnalyzerUserTurnStopStrategy
from pipecat.utils.asyncio.task_manager import TaskManager
from pipecat.utils.time import time_now_iso8601

from pipecat_services.turn_end import (
    AUDIO_LAG_S,
    BackgroundTurnAnalyzerUserTurnStopStrategy,
    SentenceEndUserTurnStopStrategy,
    final_ends_sentence,
)
from pipecat_services.turn_metrics import TurnLatencyObserver


@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("What time is it?", True),
        ("Hello there.", True),
        ("Stop!", True),
        ('He said "yes."', True),
        ("I'd like to order a", False),
        ("So I was thinking...", False),
        ("Well, you know,", False),
        ("", False),
    ],
)
def test_final_ends_sentence(text: str, ends: bool) -> None:
    assert final_ends_sentence(text) is ends


def final(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "user", "2026-11-21T00:00:00Z", finalized=True)


def test_session_settings_take_a_json_temperature_and_refuse_bad_values():
    """A client's body may set the temperature (JSON 0 is an int); nonsense keeps the default."""
    from bot_config import BotConfig

    default = BotConfig()
    chosen = default.for_session({"temperature": 0, "voice": "x", "interleave": "sideways"})
    assert chosen.temperature == 0.0 and isinstance(chosen.temperature, float) and chosen.voice == "x"
    assert chosen.interleave == default.interleave
    for bad in (True, 5, "0.2", None):
        assert default.for_session({"temperature": bad}).temperature == default.temperature


async def test_turn_latency_keeps_a_final_that_overtook_the_vad_stop():
    """The aggregator sends its VAD stop upstream at once (the STT finalizes on it) and downstream
    after its turn analysis: the final can pass the observer between the two copies. The turn still
    reports what was heard and when."""
    observer, reports = TurnLatencyObserver(), []

    @observer.event_handler("on_turn_latency")
    async def report(_, latency):
        reports.append(latency)

    here, there = FrameProcessor(), FrameProcessor()
    up, down = FrameDirection.UPSTREAM, FrameDirection.DOWNSTREAM
    final = TranscriptionFrame("What is the capital of France?", "user", time_now_iso8601(), finalized=True)
    for frame, direction in [
        (VADUserStartedSpeakingFrame(), up), (VADUserStartedSpeakingFrame(), down),
        (VADUserStoppedSpeakingFrame(stop_secs=0.2), up), (final, down),
        (VADUserStoppedSpeakingFrame(stop_secs=0.2), down), (BotStartedSpeakingFrame(), down),
    ]:  # fmt: skip
        await observer.on_push_frame(FramePushed(here, there, frame, direction, 0))
    for _ in range(100):  # event handlers run as tasks
        if reports:
            break
        await asyncio.sleep(0.01)
    assert [r.user_text for r in reports] == ["What is the capital of France?"]
    assert reports[0].stt_final_ms is not None and list(reports[0].timeline_ms)[:2] == ["vad_stop", "stt_final"]


async def test_speech_without_words_before_the_bot_speaks_again_is_no_turn():
    """A "mhm" over the bot's speech (the gate keeps its words out) or a cough: the bot's next start
    reports no turn, and the next real turn is timed from its own VAD stop."""
    observer, reports = TurnLatencyObserver(), []

    @observer.event_handler("on_turn_latency")
    async def report(_, latency):
        reports.append(latency)

    here, there = FrameProcessor(), FrameProcessor()
    down = FrameDirection.DOWNSTREAM
    final = TranscriptionFrame("And tomorrow?", "user", time_now_iso8601(), finalized=True)
    frames = [VADUserStartedSpeakingFrame(), VADUserStoppedSpeakingFrame(stop_secs=0.2), BotStartedSpeakingFrame()]
    frames += [VADUserStartedSpeakingFrame(), VADUserStoppedSpeakingFrame(stop_secs=0.2), final]
    for frame in [*frames, BotStartedSpeakingFrame()]:
        await observer.on_push_frame(FramePushed(here, there, frame, down, 0))
    for _ in range(100):
        if reports:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert [r.user_text for r in reports] == ["And tomorrow?"]


class CountingAnalyzer(BaseTurnAnalyzer):
    """A stand-in Smart Turn (this tests the strategy's own rule): says `verdict` after `delay_s`; with
    `silence_fallback`, any silence ends the turn, as Smart Turn's own fallback does after its wait."""

    def __init__(self, verdict: EndOfTurnState, delay_s: float = 0.0, silence_fallback: bool = False) -> None:
        super().__init__()
        self.verdict, self.delay_s, self.silence_fallback, self.calls = verdict, delay_s, silence_fallback, 0

    @property
    def speech_triggered(self) -> bool:
        return True

    @property
    def params(self) -> SmartTurnParams:
        return SmartTurnParams()

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        return EndOfTurnState.COMPLETE if self.silence_fallback and not is_speech else EndOfTurnState.INCOMPLETE

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, None]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return self.verdict, None

    def clear(self) -> None:
        pass


class StopStrategies:
    """The user aggregator's loop over its stop strategies, as Pipecat 1.14 runs it: every frame to
    each in order; a turn stop resets them all."""

    def __init__(self, *strategies: BaseUserTurnStopStrategy, final_wait_s: float) -> None:
        self.strategies, self.stops, self.final_wait_s = strategies, 0, final_wait_s
        self.broadcasts: list[type[Frame]] = []
        self.speculations: list[str] = []
        self.withdrawn = 0
        self.confirmed = 0
        for strategy in strategies:
            strategy.add_event_handler("on_user_turn_stopped", self._stopped)
            strategy.add_event_handler("on_user_turn_inference_triggered", self._inference)
            strategy.add_event_handler("on_user_turn_speculation_cancelled", self._withdrawn)
            strategy.add_event_handler("on_push_frame", self._ignored)
            strategy.add_event_handler("on_broadcast_frame", self._broadcast)

    async def _ignored(self, *_) -> None:
        pass

    async def _broadcast(self, _, frame_cls: type[Frame], **__) -> None:
        self.broadcasts.append(frame_cls)

    async def _inference(self, _, speculation=None) -> None:
        if speculation is not None:
            self.speculations.append(speculation.text)

    async def _withdrawn(self, *_) -> None:
        self.withdrawn += 1

    async def _stopped(self, _, params) -> None:
        self.stops += 1
        self.confirmed += params.confirms_speculation
        for strategy in self.strategies:
            await strategy.handle_user_turn_stopped()

    async def __aenter__(self) -> StopStrategies:
        setup = FrameProcessorSetup(clock=SystemClock(), task_manager=TaskManager(), pipeline_worker=None)
        for strategy in self.strategies:
            await strategy.setup(setup)
        await self.send(STTMetadataFrame(service_name="asr", ttfs_p99_latency=self.final_wait_s))
        return self

    async def __aexit__(self, *_) -> None:
        for strategy in self.strategies:
            await strategy.cleanup()

    async def send(self, *frames) -> None:
        for frame in frames:
            for strategy in self.strategies:
                await strategy.process_frame(frame)


def background_smart_turn(analyzer: CountingAnalyzer, final_wait_s: float = 5.0) -> StopStrategies:
    return StopStrategies(
        BackgroundTurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer),
        SentenceEndUserTurnStopStrategy(hold_s=HOLD_S),
        final_wait_s=final_wait_s,
    )


HOLD_S = 0.05


async def until(condition, timeout_s: float = 10.0) -> None:
    """Wait for `condition()` (bounded): tasks run late on a busy machine."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_final_that_ends_a_sentence_ends_the_turn_without_smart_turn() -> None:
    analyzer = CountingAnalyzer(EndOfTurnState.INCOMPLETE, delay_s=0.05)
    async with background_smart_turn(analyzer) as turn:
        await turn.send(VADUserStartedSpeakingFrame(), VADUserStoppedSpeakingFrame(stop_secs=0.2))
        await asyncio.sleep(0.02)
        assert analyzer.calls == 0, "the model ran before the final transcript"
        await turn.send(final("What time is it?"))
        assert turn.speculations == ["What time is it?"], "the final waited for Smart Turn"
        await until(lambda: turn.stops == 1)
        await asyncio.sleep(0.1)
        assert analyzer.calls == 0 and turn.stops == turn.confirmed == 1


async def test_smart_turn_judges_an_unfinished_sentence_once_its_final_is_in() -> None:
    analyzer = CountingAnalyzer(EndOfTurnState.COMPLETE)
    async with background_smart_turn(analyzer) as turn:
        await turn.send(VADUserStartedSpeakingFrame(), VADUserStoppedSpeakingFrame(stop_secs=0.2))
        await asyncio.sleep(0.02)
        await turn.send(final("I'd like to book a table for two"))
        await until(lambda: turn.stops == 1)
        assert analyzer.calls == 1


async def test_speech_that_resumes_discards_the_analysis_of_the_pause() -> None:
    analyzer = CountingAnalyzer(EndOfTurnState.COMPLETE, delay_s=0.2)
    async with background_smart_turn(analyzer, final_wait_s=0.3) as turn:
        await turn.send(VADUserStartedSpeakingFrame(), VADUserStoppedSpeakingFrame(stop_secs=0.2))
        await turn.send(final("I'd like to book"))
        await until(lambda: analyzer.calls == 1)
        await turn.send(VADUserStartedSpeakingFrame())
        await asyncio.sleep(0.5)  # past the analysis and Pipecat's wait for a final
        assert turn.stops == 0, "a verdict on a pause the user talked through ended the turn"


def audio(seconds: float) -> list[InputAudioRawFrame]:
    """`seconds` of silence as the transport delivers it, 20 ms a frame."""
    return [InputAudioRawFrame(bytes(640), 16000, 1)] * round(seconds / 0.02)


async def test_a_finished_sentence_is_answered_at_once_and_ends_the_turn_after_the_hold() -> None:
    async with StopStrategies(SentenceEndUserTurnStopStrategy(hold_s=0.3), final_wait_s=1.0) as turn:
        await turn.send(VADUserStartedSpeakingFrame(), final("What time is it?"))
        assert turn.speculations == [], "the user was still speaking"
        await turn.send(vad_stop(), final("What time is"))
        assert turn.speculations == [], "an unfinished sentence"
        await turn.send(final("What time is it?"), *audio(0.28))
        assert turn.speculations == ["What time is it?"] and turn.stops == 0
        await turn.send(*audio(0.02))
        assert turn.stops == turn.confirmed == 1 and turn.withdrawn == 0


async def test_speech_within_the_hold_withdraws_the_answer_and_the_turn_goes_on() -> None:
    """A pause inside "What do you call … a baby cat?": the first final's answer is withdrawn unheard,
    and the turn ends on the whole question's."""
    async with StopStrategies(SentenceEndUserTurnStopStrategy(hold_s=0.3), final_wait_s=1.0) as turn:
        await turn.send(VADUserStartedSpeakingFrame(), vad_stop(), final("What do you call?"), *audio(0.2))
        await turn.send(VADUserStartedSpeakingFrame())
        assert turn.withdrawn == 1
        await turn.send(*audio(0.5))
        assert turn.stops == 0, "the hold ended a turn the user went on with"
        await turn.send(vad_stop(), final("What do you call a baby cat?"), *audio(0.3))
        assert turn.speculations == ["What do you call?", "What do you call a baby cat?"]
        assert turn.stops == turn.confirmed == 1 and turn.withdrawn == 1


async def test_an_answer_the_llm_withdrew_for_a_tool_call_is_asked_again_at_the_turn_end() -> None:
    """Pipecat's LLM service withdraws a speculative answer that wants a tool call (a call cannot
    be undone): the turn then ends with a fresh inference, which runs the call for real."""
    async with StopStrategies(SentenceEndUserTurnStopStrategy(hold_s=0.3), final_wait_s=1.0) as turn:
        await turn.send(VADUserStartedSpeakingFrame(), vad_stop(), final("What time is it?"), *audio(0.1))
        await turn.send(EagerEndOfTurnCancelFrame(), *audio(0.2))
        assert turn.stops == 1 and turn.confirmed == 0 and turn.withdrawn == 0


async def test_the_hold_counts_audio_heard_and_ends_anyway_when_audio_stops_coming() -> None:
    """Frames that arrive late (two busy cores) count when they arrive; none at all (a muted
    microphone) end the turn once the wall clock is `AUDIO_LAG_S` past the hold."""
    async with StopStrategies(SentenceEndUserTurnStopStrategy(hold_s=0.1), final_wait_s=1.0) as turn:
        await turn.send(VADUserStartedSpeakingFrame(), vad_stop(), final("What time is it?"))
        await asyncio.sleep(0.3)
        assert turn.stops == 0, "a wall-clock hold ended the turn before its audio was heard"
        await until(lambda: turn.stops == 1, timeout_s=0.1 + AUDIO_LAG_S + 5)
        assert turn.confirmed == 1


def partial(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "user", "2026-11-21T00:00:00Z", finalized=False)


def vad_stop() -> VADUserStoppedSpeakingFrame:
    """A VAD stop made when the script reaches it: the wait for a final counts from its timestamp."""
    return VADUserStoppedSpeakingFrame(stop_secs=0.2)


SILENCE = InputAudioRawFrame(bytes(320), 16000, 1)
START, STOP = VADUserStartedSpeakingFrame(), vad_stop
COMPLETE, INCOMPLETE = EndOfTurnState.COMPLETE, EndOfTurnState.INCOMPLETE


@pytest.mark.parametrize(
    ("verdict", "script"),
    [
        (COMPLETE, [START, STOP, final("I'd like to book a table")]),
        (INCOMPLETE, [START, STOP, final("I'd like to book a table")]),
        (COMPLETE, [START, STOP, partial("I'd like to book")]),  # a non-final will do once the wait is over
        (COMPLETE, [START, STOP, 0.3, partial("I'd like to book")]),  # ... even one that comes after it
        (COMPLETE, [START, STOP]),  # no transcript, no turn
        (COMPLETE, [final("Hello")]),  # speech VAD missed: the transcript ends it after the wait
        (COMPLETE, [START, STOP, partial("I'd like"), START]),  # the user speaks again
        ("fallback", [START, partial("I'd like to"), STOP, SILENCE]),  # Smart Turn's silence fallback
        (COMPLETE, [StartFrame()]),  # the analyzer's parameters go to the transport
    ],
    ids=["final", "incomplete", "non-final", "late", "silent", "no-vad", "resumed", "fallback", "start"],
)
async def test_turns_end_as_with_pipecats_smart_turn_strategy(verdict: EndOfTurnState | str, script: list) -> None:
    """The background strategy keeps Pipecat's rules (it holds the analyzer instead of extending
    Pipecat's strategy): each script ends as many turns, and broadcasts the same frames, with each."""

    async def outcome(strategy_cls: type[BaseUserTurnStopStrategy]) -> tuple[int, list[type[Frame]]]:
        fallback = verdict == "fallback"
        analyzer = CountingAnalyzer(INCOMPLETE if fallback else verdict, silence_fallback=fallback)
        async with StopStrategies(strategy_cls(turn_analyzer=analyzer), final_wait_s=0.3) as turn:
            for step in script:
                await (asyncio.sleep(step) if isinstance(step, float) else turn.send(step() if step is STOP else step))
            await asyncio.sleep(0.6)  # past the wait for a final
            return turn.stops, turn.broadcasts

    ours, pipecats = await asyncio.gather(
        outcome(BackgroundTurnAnalyzerUserTurnStopStrategy), outcome(TurnAnalyzerUserTurnStopStrategy)
    )
    assert ours == pipecats
