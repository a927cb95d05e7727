"""The sentence-end stop strategy: which finals end a turn, and only once the user is silent."""

from __future__ import annotations

import asyncio

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.time import time_now_iso8601

from pipecat_services.turn_end import SentenceEndUserTurnStopStrategy, ends_sentence
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
def test_ends_sentence(text: str, ends: bool) -> None:
    assert ends_sentence(text) is ends


def final(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "user", "2026-11-21T00:00:00Z", finalized=True)


async def test_fires_on_a_finished_sentence_after_speech_stops_only() -> None:
    strategy = SentenceEndUserTurnStopStrategy()
    fired: list[bool] = []

    async def on_stopped(*_) -> None:
        fired.append(True)

    async def on_inference(*_) -> None:
        pass

    strategy.add_event_handler("on_user_turn_stopped", on_stopped)
    strategy.add_event_handler("on_user_turn_inference_triggered", on_inference)
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(final("What time is it?"))
    assert not fired, "the user was still speaking"
    await strategy.process_frame(VADUserStoppedSpeakingFrame())
    await strategy.process_frame(final("What time is"))
    assert not fired, "an unfinished sentence"
    await strategy.process_frame(final("What time is it?"))
    assert fired == [True]


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
