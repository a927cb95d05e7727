"""The whisper engine's speculative decoding, in process with the real packaged model."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.scoring import wer
from servers.asr.engines.whisper import WhisperEngine

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    engine = WhisperEngine(interim_interval_s=1000.0)
    engine.load()
    calls: list[int] = []
    transcribe = engine._transcribe

    def counting(samples: np.ndarray) -> str:
        calls.append(len(samples))
        return transcribe(samples)

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
    assert len(engine.calls) == 2


async def test_silence_is_never_decoded(engine):
    engine.calls.clear()
    stream = engine.open_stream(lambda _: None)
    await feed(stream, np.zeros(0, dtype=np.int16), silence_ms=2000)
    assert await stream.finalize(hard=True) == ""
    assert engine.calls == []
