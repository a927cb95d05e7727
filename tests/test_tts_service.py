"""The Pipecat TTS client service against the real TTS server (Piper) on loopback."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
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
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import run_test

from benchmarks.scoring import wer
from benchmarks.scripted import Count, Watch, run_script
from pipecat_services.tts import TTSServerTTSService
from servers.tts import protocol
from tests.conftest import RestartableServer

REPLY = ["Sure, the capital of France ", "is Paris. ", "It is famous for the Eiffel Tower."]
LONG_REPLY = ["Let me tell you a long story. "] + ["Once upon a time there was a very patient robot. "] * 40


def reply_frames(tokens: list[str]) -> list:
    return [LLMFullResponseStartFrame(), *(LLMTextFrame(t) for t in tokens), LLMFullResponseEndFrame()]


def audio_of(frames) -> list[TTSAudioRawFrame]:
    return [f for f in frames if isinstance(f, TTSAudioRawFrame)]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, protocol.Message | int]]:
    """Everything the TTS client reads from the server, in order: (context id, message or audio bytes)."""
    seen: list[tuple[str | None, protocol.Message | int]] = []
    parse, unpack = protocol.parse_server_message, protocol.unpack_audio

    def parse_and_record(raw: str | bytes) -> protocol.Message:
        message = parse(raw)
        seen.append((getattr(message, "context_id", None), message))
        return message

    def unpack_and_record(frame: bytes) -> tuple[str, bytes]:
        context_id, pcm = unpack(frame)
        seen.append((context_id, len(pcm)))
        return context_id, pcm

    monkeypatch.setattr(protocol, "parse_server_message", parse_and_record)
    monkeypatch.setattr(protocol, "unpack_audio", unpack_and_record)
    return seen


async def test_speaks_an_llm_reply_with_ttfb_metrics(tts_server, whisper):
    tts = TTSServerTTSService(url=tts_server.url)
    down, _ = await run_test(
        tts,
        frames_to_send=reply_frames(REPLY),  # the EndFrame after it waits until the reply has played
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
    assert [d for d in ttfb if 0 < d.value < 10], "TTFB in seconds, measured once per reply"


async def test_interruption_cancels_on_the_server_and_drops_stale_audio(tts_server, wire):
    """Interrupted at its first audio, a reply too long to be finished by then: the server reports
    the context cancelled and sends nothing more for it, and the next reply is spoken."""
    first_audio = Watch(TTSAudioRawFrame)
    down = await run_script(
        TTSServerTTSService(url=tts_server.url),
        first_audio,
        steps=[
            *reply_frames(LONG_REPLY),
            lambda: first_audio.reached(1),
            InterruptionFrame(),
            *reply_frames(["Okay, stopping."]),
        ],
    )
    interruption = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before, after = audio_of(down[:interruption]), audio_of(down[interruption:])
    interrupted = {f.context_id for f in before}
    assert len(interrupted) == 1 and before
    assert not [f for f in after if f.context_id in interrupted], "stale audio after the interruption"
    spoken_after = sum(len(f.audio) for f in after) / 2 / 22050
    assert 0.5 < spoken_after < 3.0, spoken_after

    (long_id,) = interrupted
    done = next(i for i, (cid, m) in enumerate(wire) if cid == long_id and isinstance(m, protocol.Done))
    report = wire[done][1]
    assert report.cancelled, report
    assert not [m for cid, m in wire[done + 1 :] if cid == long_id], "the server went on with the cancelled reply"
    follow_up = [m for cid, m in wire[done + 1 :] if isinstance(m, protocol.Done)]
    assert follow_up and not follow_up[0].cancelled and follow_up[0].audio_ms > 500, follow_up
    shortest_long_s = sum(len(t.split()) for t in LONG_REPLY) * 0.25
    assert report.audio_ms / 1000 < shortest_long_s / 4, (report, shortest_long_s)


async def test_reconnects_after_server_crash(tmp_path):
    server = RestartableServer("servers.tts", ["--engine", "piper"], tmp_path / "tts.log")
    server.run()
    tts = TTSServerTTSService(url=server.url)
    connections = Count()
    tts.add_event_handler("on_connected", connections.add)
    spoken = Watch(TTSStoppedFrame)
    restart = asyncio.create_task(server.crash_and_restart(after=spoken.reached(1)))
    try:
        down = await run_script(
            tts,
            spoken,
            steps=[
                *reply_frames(["First reply."]),
                lambda: restart,
                lambda: connections.reached(2),
                *reply_frames(["Second reply."]),
                lambda: spoken.reached(2),
            ],
        )
        await restart
    finally:
        restart.cancel()
        server.stop()
    contexts = {f.context_id for f in audio_of(down)}
    assert len(contexts) == 2, contexts
