"""Backchannels: which words are one, and the pacer that pauses the bot's speech without losing a word.
The behaviour over a real call is in tests/test_bot.py."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    InterimTranscriptionFrame,
    OutputAudioRawFrame,
    SystemFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserBackchannelFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.time import time_now_iso8601

from pipecat_services.backchannels import BackchannelGate, BackchannelPhrases
from pipecat_services.speech_pacer import BotSpeechPacer

PHRASES = BackchannelPhrases()
UPSTREAM = FrameDirection.UPSTREAM


@pytest.mark.parametrize(
    ("text", "backchannel"),
    [
        ("Mhm.", True),
        ("Mm-hmm.", True),
        ("Mmmm", True),
        ("Uh-huh.", True),
        ("Okay, I see.", True),
        ("Yeah, yeah.", True),
        ("Thank you.", True),
        ("(coughs)", False),
        ("", False),
        ("Wait, stop.", False),
        ("Okay, stop.", False),
        ("Yes, but what about Paris?", False),
        ("I", False),
        ("No.", False),
    ],
)
def test_a_backchannel_is_a_run_of_listener_words_and_nothing_else(text: str, backchannel: bool) -> None:
    assert PHRASES.heard_in(text) is backchannel


@pytest.mark.parametrize(
    ("interim", "undecided"),
    [("", True), ("I", True), ("Okay", True), ("Okay, got", True), ("wait", False), ("Yes but", False)],
)
def test_an_interim_decides_only_once_it_can_no_longer_become_a_backchannel(interim: str, undecided: bool) -> None:
    assert PHRASES.may_become(interim) is undecided


@pytest.mark.parametrize(
    ("text", "none"), [("U.", True), ("(coughs)", True), ("", True), ("M.M.", True), ("No.", False)]
)
def test_a_transcript_without_a_word_of_two_letters_has_no_words(text: str, none: bool) -> None:
    assert PHRASES.no_words(text) is none


def test_the_phrases_are_a_setting() -> None:
    phrases = BackchannelPhrases(["sure thing", "roger"])
    assert phrases.heard_in("Roger, sure thing!") and not phrases.heard_in("Mhm.")


def speech(seconds: float, rate: int = 16_000) -> TTSAudioRawFrame:
    """Audio whose samples count up, so any piece lost, repeated or reordered shows."""
    samples = (np.arange(int(seconds * rate)) % 30_000 + 1).astype(np.int16)
    return TTSAudioRawFrame(samples.tobytes(), rate, 1, context_id="c")


class PauseFrame(SystemFrame):
    """Calls `pause()` at its place in the frames sent."""


class ResumeFrame(SystemFrame):
    """Calls `resume()` at its place in the frames sent."""


class ScriptedPacer(BotSpeechPacer):
    """The pacer as the gate drives it, at the script's points."""

    resumed_at = 0.0

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        if isinstance(frame, PauseFrame):
            self.pause()
        elif isinstance(frame, ResumeFrame):
            self.resume()
            self.resumed_at = time.monotonic()
        await super().process_frame(frame, direction)


class RealTimeSink(FrameProcessor):
    """Plays audio as a transport does: each frame takes its length to write before it goes on."""

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame):
            await asyncio.sleep(frame.num_frames / frame.sample_rate)
        await self.push_frame(frame, direction)


def playing(pacer: BotSpeechPacer) -> Pipeline:
    return Pipeline([pacer, RealTimeSink(), pacer.tap])


async def test_a_pause_holds_the_audio_and_loses_none_of_it() -> None:
    audio = speech(1.0)
    started = time.monotonic()
    down, _ = await run_test(
        playing(ScriptedPacer()),
        frames_to_send=[
            audio,
            SleepFrame(0.2),
            PauseFrame(),
            SleepFrame(0.5),
            ResumeFrame(),
            TTSStoppedFrame(context_id="c"),
        ],
    )
    took = time.monotonic() - started
    spoken = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert spoken == audio.audio  # every piece once, in order
    assert isinstance(down[-1], TTSStoppedFrame)  # frames after the audio stay after it
    assert took >= 1.0 + 0.5 - 0.1  # played as the sink plays it, and held while paused


class TimedWords(FrameProcessor):
    """Times each word as the TTS does, from its context's first audio (`at_s` by word), and notes
    when each comes out of the pacer."""

    def __init__(self, at_s: dict[str, float]) -> None:
        super().__init__()
        self.at_s = at_s
        self.first_audio_ns: int | None = None

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and self.first_audio_ns is None:
            self.first_audio_ns = self.get_clock().get_time()
        if isinstance(frame, TTSTextFrame) and frame.pts is None:
            frame.pts = self.first_audio_ns + int(self.at_s[frame.text] * 1e9)
        await self.push_frame(frame, direction)


class Arrivals(FrameProcessor):
    """Notes when each word arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSTextFrame):
            self.at[frame.text] = time.monotonic()
        await self.push_frame(frame, direction)


async def test_words_come_out_as_their_audio_plays_a_pause_holding_them_back() -> None:
    """The context gets the words heard: a word timed 0.05 s into the audio comes out before the pause,
    one timed 0.4 s in only after the 0.5 s pause as well."""
    arrivals = Arrivals()
    pacer = ScriptedPacer()
    words = [TTSTextFrame(text, text_type="word", context_id="c") for text in ("early", "later")]
    await run_test(
        Pipeline([TimedWords({"early": 0.05, "later": 0.4}), pacer, RealTimeSink(), pacer.tap, arrivals]),
        frames_to_send=[speech(1.0), *words, SleepFrame(0.2), PauseFrame(), SleepFrame(0.5), ResumeFrame()],
    )
    assert arrivals.at["early"] < pacer.resumed_at
    assert arrivals.at["later"] >= pacer.resumed_at + (0.4 - 0.2) - 0.05  # the audio before it, after the pause


class SpeechSwitch:
    """Stands in for the pacer: records what the gate asks of the bot's speech."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


def gate(speech: SpeechSwitch, wait_s: float = 0.3) -> BackchannelGate:
    return BackchannelGate(PHRASES, speech, wait_s=wait_s, max_pause_s=5.0)  # type: ignore[arg-type]


def said(text: str, final: bool = True) -> TranscriptionFrame | InterimTranscriptionFrame:
    kind = TranscriptionFrame if final else InterimTranscriptionFrame
    return kind(text, "user", time_now_iso8601())


async def judge(speech: SpeechSwitch, frames: list, wait_s: float = 0.3) -> tuple[list, list]:
    """The frames through a gate, all sent upstream as the user aggregator sends the VAD and bot frames."""
    down, up = await run_test(gate(speech, wait_s), frames_to_send=frames, frames_to_send_direction=UPSTREAM)
    return [f for f in down if isinstance(f, UserBackchannelFrame)], [
        f.text for f in up if isinstance(f, TranscriptionFrame | InterimTranscriptionFrame)
    ]


async def test_a_backchannel_over_the_bot_pauses_it_and_resumes_it_and_is_no_transcript() -> None:
    speech = SpeechSwitch()
    frames = [BotStartedSpeakingFrame(), VADUserStartedSpeakingFrame(), said("Mm", final=False)]
    frames += [VADUserStoppedSpeakingFrame(), said("Okay, I see.")]
    backchannels, passed = await judge(speech, frames)
    assert speech.calls == ["pause", "resume"]
    assert [b.text for b in backchannels] == ["Okay, I see."] and passed == []


async def test_words_over_the_bot_pass_on_to_interrupt_and_a_lone_interim_word_waits() -> None:
    speech = SpeechSwitch()
    frames = [BotStartedSpeakingFrame(), VADUserStartedSpeakingFrame(), said("Wait", final=False)]
    frames += [said("Wait, stop", final=False), VADUserStoppedSpeakingFrame(), said("Wait, stop.")]
    backchannels, passed = await judge(speech, frames, wait_s=5.0)
    assert passed == ["Wait, stop", "Wait, stop."] and not backchannels
    assert speech.calls == ["pause"]  # until the interruption the words cause


async def test_a_sound_without_words_resumes_the_bot_after_the_wait() -> None:
    speech = SpeechSwitch()
    frames = [BotStartedSpeakingFrame(), VADUserStartedSpeakingFrame(), VADUserStoppedSpeakingFrame(), SleepFrame(0.6)]
    backchannels, passed = await judge(speech, frames, wait_s=0.2)
    assert speech.calls == ["pause", "resume"] and not backchannels and not passed


async def test_speech_while_the_bot_is_silent_is_not_judged() -> None:
    speech = SpeechSwitch()
    _, passed = await judge(speech, [VADUserStartedSpeakingFrame(), said("Okay", final=False), said("Okay.")])
    assert speech.calls == [] and passed == ["Okay", "Okay."]
