"""The Pipecat TTS client service against the real TTS server (Piper) on loopback."""

from __future__ import annotations

import asyncio

import numpy as np
import soxr
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test

from benchmarks.scoring import wer
from pipecat_services.tts import TTSServerTTSService
from tests.conftest import OnFrame, ServerProcess

REPLY = ["Sure, the capital of France ", "is Paris. ", "It is famous for the Eiffel Tower."]
LONG_REPLY = ["Let me tell you a long story. "] + ["Once upon a time there was a very patient robot. "] * 40


def reply_frames(tokens: list[str]) -> list:
    return [LLMFullResponseStartFrame(), *(LLMTextFrame(t) for t in tokens), LLMFullResponseEndFrame()]


def audio_of(frames) -> list[TTSAudioRawFrame]:
    return [f for f in frames if isinstance(f, TTSAudioRawFrame)]


async def test_speaks_an_llm_reply_with_ttfb_metrics(tts_server, whisper):
    tts = TTSServerTTSService(url=tts_server.url)
    down, _ = await run_test(
        tts,
        frames_to_send=[*reply_frames(REPLY), SleepFrame(4.0)],
        pipeline_params=PipelineParams(enable_metrics=True),
        start_timeout=10,
    )
    kinds = [type(f) for f in down]
    assert TTSStartedFrame in kinds and TTSStoppedFrame in kinds
    assert kinds.index(TTSStartedFrame) < kinds.index(TTSAudioRawFrame) < kinds.index(TTSStoppedFrame)
    audio = audio_of(down)
    assert {f.sample_rate for f in audio} == {22050} and len({f.context_id for f in audio}) == 1
    pcm = np.frombuffer(b"".join(f.audio for f in audio), dtype="<i2").astype(np.float32) / 32768
    heard = await whisper.transcribe(soxr.resample(pcm, 22050, 16000).astype(np.float32))
    assert wer(["".join(REPLY)], [heard]) <= 0.2, heard
    ttfb = [d for f in down if isinstance(f, MetricsFrame) for d in f.data if isinstance(d, TTFBMetricsData)]
    assert [d for d in ttfb if 0 < d.value < 2.0]


async def test_interruption_cancels_on_the_server_and_drops_stale_audio(tts_server):
    tts = TTSServerTTSService(url=tts_server.url)
    down, _ = await run_test(
        tts,
        frames_to_send=[
            *reply_frames(LONG_REPLY),
            SleepFrame(2.0),
            InterruptionFrame(),
            SleepFrame(1.0),
            *reply_frames(["Okay, stopping."]),
            SleepFrame(2.0),
        ],
        start_timeout=10,
    )
    interruption = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before, after = audio_of(down[:interruption]), audio_of(down[interruption:])
    interrupted = {f.context_id for f in before}
    assert len(interrupted) == 1 and before
    assert not [f for f in after if f.context_id in interrupted], "stale audio after the interruption"
    spoken_after = sum(len(f.audio) for f in after) / 2 / 22050
    assert 0.5 < spoken_after < 3.0, spoken_after
    total_long = sum(len(t.split()) for t in LONG_REPLY) * 0.3
    assert sum(len(f.audio) for f in before) / 2 / 22050 < total_long / 2


async def test_reconnects_after_server_crash(tmp_path):
    server = ServerProcess("servers.tts", ["--engine", "piper"], tmp_path / "tts.log")
    server.start()
    spoke = asyncio.Event()

    restart = asyncio.create_task(server.crash_and_restart(after=spoke))
    try:
        down, _ = await run_test(
            Pipeline([TTSServerTTSService(url=server.url), OnFrame(TTSStoppedFrame, spoke.set)]),
            frames_to_send=[*reply_frames(["First reply."]), SleepFrame(12.0), *reply_frames(["Second reply."]), SleepFrame(3.0)],
            start_timeout=10,
        )
        await restart
    finally:
        server.stop()
    contexts = {f.context_id for f in audio_of(down)}
    assert len(contexts) == 2, contexts
