"""The whisper engine's speculative decoding, in process with the real packaged model."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.asr import landmarks_in_order, long_speech
from benchmarks.audio import speech_bounds, with_pause
from benchmarks.hearing import ClipMaker
from benchmarks.scoring import wer
from servers.asr.engines.transcript import Transcript
from servers.asr.engines.whisper import MAX_PENDING_COMMITS, WhisperEngine, is_no_speech

pytestmark = [pytest.mark.servers, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    engine = WhisperEngine(interim_interval_s=1000.0)
    engine.load()
    calls: list[int] = []
    transcribe = engine._transcribe

    def counting(samples: np.ndarray, beam_size: int) -> str:
        calls.append(len(samples))
        return transcribe(samples, beam_size)

    engine._transcribe = counting
    engine.calls = calls
    return engine


def as_float(audio: np.ndarray) -> np.ndarray:
    return audio.astype(np.float32) / 32768.0


async def feed(stream, audio: np.ndarray, silence_ms: int) -> None:
    padded = np.concatenate([as_float(audio), np.zeros(16 * silence_ms, dtype=np.float32)])
    for i in range(0, len(padded), 320):
        await stream.feed(padded[i : i + 320])


async def test_trailing_silence_starts_the_decode_that_the_hard_finalize_reuses(engine, speech):
    text, audio = speech[0]
    engine.calls.clear()
    stream = engine.open_stream(lambda _: None)
    await feed(stream, audio, silence_ms=500)
    assert len(engine.calls) <= 1
    final = await stream.finalize(hard=True)
    assert len(engine.calls) == 1
    assert wer([text], [final]) <= 0.2, final


async def test_soft_finalize_starts_decoding_before_the_silence_detector(engine, speech):
    _, audio = speech[2]
    engine.calls.clear()
    stream = engine.open_stream(lambda _: None)
    await feed(stream, audio, silence_ms=60)
    assert engine.calls == []
    await stream.finalize(hard=False)
    await feed(stream, audio[:0], silence_ms=200)
    await stream.finalize(hard=True)
    assert len(engine.calls) == 1


async def test_speech_after_the_speculation_is_decoded_again(engine, speech):
    audio1, audio2 = speech[0][1], speech[2][1]
    engine.calls.clear()
    stream = engine.open_stream(lambda _: None)
    await feed(stream, audio1, silence_ms=500)
    await feed(stream, audio2, silence_ms=0)
    final = await stream.finalize(hard=True)
    assert "capital" in final.lower() and "spider" in final.lower(), final
    # The speculation of the first question alone is superseded (cancelled unless already running):
    # the last decode covers both questions.
    assert len(engine.calls) <= 2 and engine.calls[-1] > len(audio1), engine.calls


async def test_silence_is_never_decoded(engine):
    engine.calls.clear()
    stream = engine.open_stream(lambda _: None)
    await feed(stream, np.zeros(0, dtype=np.int16), silence_ms=2000)
    assert await stream.finalize(hard=True) == ""
    assert engine.calls == []


async def test_speech_without_a_finalize_keeps_every_buffer_and_decode_bounded(engine, tmp_path):
    """A minute of speech, never finalized: only the uncommitted tail is kept and decoded."""
    reference, audio = long_speech(60, tmp_path)
    engine.calls.clear()
    stream = engine.open_stream(lambda _: None)
    held = []
    samples = as_float(audio)
    for i in range(0, len(samples), 320):
        await stream.feed(samples[i : i + 320])
        held.append(stream._audio.end - stream._audio.start)
        assert len(stream._commits) <= MAX_PENDING_COMMITS
    limit = engine.max_tail + 320
    assert max(held) <= limit and max(engine.calls) <= limit + engine.max_tail, "decodes cover the tail only"
    assert sum(engine.calls) < 2 * len(audio), "committed audio is not decoded again and again"
    final = await stream.finalize(hard=True)
    assert wer([reference], [final]) <= 0.15, final
    landmarks, heard, out_of_place = landmarks_in_order(reference, final)
    assert out_of_place == 0 and heard >= 0.8 * landmarks, final


async def test_a_tail_without_pauses_is_cut_at_its_quietest_point(engine, speech):
    """Speech with no pause long enough to commit at: cuts fall between words, none is lost."""
    voiced = [(a, speech_bounds(a)) for _, a in speech]
    audio = np.concatenate([a[int(start * 16000) : int(end * 16000)] for a, (start, end) in voiced])
    reference = " ".join(t for t, _ in speech)
    engine.calls.clear()
    commit_min, max_tail = engine.commit_min, engine.max_tail
    engine.commit_min, engine.max_tail = len(audio), 16000 * 6
    try:
        stream = engine.open_stream(lambda _: None)
        await feed(stream, audio, silence_ms=0)
        final = await stream.finalize(hard=True)
    finally:
        engine.commit_min, engine.max_tail = commit_min, max_tail
    assert len(engine.calls) >= 3 and max(engine.calls) <= 16000 * 6 + 320, engine.calls
    assert wer([reference], [final]) <= 0.2, final


async def test_the_transcript_keeps_its_latest_characters():
    transcript = Transcript(max_chars=40)
    for piece in ["one two three.", " ", "four five six.", "seven eight nine."]:
        transcript.add(piece)
    assert transcript.text("ten") == "four five six. seven eight nine. ten"
    transcript.add("x" * 100)
    assert len(transcript.text()) <= 40


async def test_a_stream_closed_mid_interim_gives_the_interim_slot_back(speech):
    """Interims take turns on one engine-wide slot: a session that leaves while its interim is
    queued (not yet run) must not keep the slot, or no session would get interims again."""
    engine = WhisperEngine(interim_interval_s=0.5)
    engine.load()
    stream = engine.open_stream(lambda _: None)
    samples = as_float(speech[3][1])
    for i in range(0, len(samples), 320):
        await stream.feed(samples[i : i + 320])
        if stream._interim_task is not None:
            break
    assert stream._interim_task is not None, "no interim started"
    await stream.close()  # the interim task has not run a single step yet
    assert engine.try_claim_interim_slot()
    engine.close()


async def test_a_short_pause_inside_a_question_does_not_split_its_decode(engine, say_wav):
    """One utterance, one decode: a 140 ms gap between two words of a short question is heard as the
    engine hears the whole clip offline, not as two pieces decoded apart ("... the Red? Plant.")."""
    before = say_wav("Which planet in our solar system is known as the red")
    clip = with_pause(before, say_wav("planet?"), 0.14)
    start, end = speech_bounds(before)
    assert end - start > engine.commit_min / 16000, "the words before the pause are long enough to commit apart"
    offline = await engine.transcribe(as_float(np.concatenate([clip, np.zeros(8000, dtype=np.int16)])))
    stream = engine.open_stream(lambda _: None)
    await feed(stream, clip, silence_ms=300)
    final = await stream.finalize(hard=True)
    assert final == offline.strip(), (final, offline)
    assert "?" not in final[:-1], final


async def test_a_turn_reopened_after_a_final_is_decoded_again_as_one(engine, say_wav):
    """A pause long enough for a hard finalize ("What do you call?"), then the user goes on: after
    `reopen` the next final is the whole question as the engine hears the clip offline, and a reopened
    turn without new speech gives the same final again without a decode."""
    before, after = say_wav("What do you call"), say_wav("a baby cat?")
    clip = with_pause(before, after, 0.35)
    offline = await engine.transcribe(as_float(np.concatenate([clip, np.zeros(8000, dtype=np.int16)])))
    stream = engine.open_stream(lambda _: None)
    await feed(stream, before, silence_ms=250)
    piece = await stream.finalize(hard=True)
    await feed(stream, np.zeros(0, dtype=np.int16), silence_ms=100)
    assert await stream.reopen()
    await feed(stream, after, silence_ms=300)
    final = await stream.finalize(hard=True)
    assert "cat" not in piece.lower() and final == offline.strip(), (piece, final, offline)
    engine.calls.clear()
    assert await stream.reopen()
    assert not await stream.reopen(), "a final is reopened once"
    assert await stream.finalize(hard=True) == final and engine.calls == []
    await stream.reset()
    assert not await stream.reopen(), "reset forgets the finished utterance"


async def test_fan_noise_alone_is_no_speech(engine, tmp_path):
    """Whisper writes fan-like noise down as "AHHHH" or "Oh..."; its own no-speech verdict drops it."""
    for seed in range(3):
        noise = ClipMaker(tmp_path, seed).fan(1.5).astype(np.float32) * 0.05
        assert await engine.transcribe(noise) == "", seed


@pytest.mark.parametrize(
    ("no_speech_prob", "mean_log_prob", "dropped"),
    [
        (0.70, -1.10, True),  # fan noise heard as "AHHHH"
        (0.55, -1.29, True),  # babble heard as "What the hell are you doing?"
        (0.70, -0.50, False),  # a confident decode is speech, whatever the no-speech probability
        (0.33, -1.17, False),  # a clean clip, misheard ("The whole area." for "Hello there.")
        (0.55, -1.10, False),  # noisy speech heard right enough
    ],
)
def test_no_speech_rules(no_speech_prob, mean_log_prob, dropped):
    """Numbers measured on the hearing sets (docs/hearing.md)."""
    assert is_no_speech(no_speech_prob, mean_log_prob) is dropped
