"""The Pipecat STT client service against the real ASR server (whisper engine) on loopback."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import soxr
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame

from benchmarks.audio import chunks
from benchmarks.scoring import wer
from benchmarks.scripted import Count, Watch, run_script
from pipecat_services.asr_stt import ASRServerSTTService
from pipecat_services.turn_end import TranscriptReopenedFrame
from tests.conftest import RestartableServer


def utterance_frames(audio: np.ndarray, sample_rate: int = 16000, turn_starts: bool = True) -> list:
    """What the transport and the user aggregator send the STT for one utterance, paced in real time;
    `turn_starts`: the aggregator starts the user's turn with it (not for a sound over the bot's speech,
    nor for speech that continues a turn)."""
    padded = np.concatenate([audio, np.zeros(sample_rate * 3 // 10, dtype=np.int16)])
    frames: list = [VADUserStartedSpeakingFrame(start_secs=0.2)] + ([UserStartedSpeakingFrame()] if turn_starts else [])
    for pcm in chunks(padded, sample_rate=sample_rate):
        frames += [InputAudioRawFrame(audio=pcm, sample_rate=sample_rate, num_channels=1), SleepFrame(0.02)]
    return [*frames, VADUserStoppedSpeakingFrame(stop_secs=0.2, timestamp=time.time())]


async def two_utterances(
    url: str, audio1: np.ndarray, audio2: np.ndarray, turn_ends: bool, in_turns: bool = True
) -> list:
    """The frames the STT pushes for two utterances, each waited for its final; `turn_ends`: the user
    aggregator ends the turn between them (else the second continues the first's turn); not
    `in_turns`: neither is a turn (sounds over the bot's speech)."""
    transcripts = Watch(TranscriptionFrame)
    between = [UserStoppedSpeakingFrame()] if turn_ends and in_turns else []
    return await run_script(
        ASRServerSTTService(url=url),
        transcripts,
        steps=[
            *utterance_frames(audio1, turn_starts=in_turns),
            lambda: transcripts.reached(1),
            *between,
            *utterance_frames(audio2, turn_starts=in_turns and turn_ends),
            lambda: transcripts.reached(2),
        ],
    )


async def test_speech_again_within_the_turn_reopens_it_and_the_next_final_covers_both(asr_server, speech):
    """No turn end between two utterances (a pause the VAD took for an end): the STT reopens the
    first final, tells the aggregator to drop it, and the second final is both, decoded as one."""
    (text1, audio1), (text2, audio2) = speech[3], speech[5]
    down = await two_utterances(asr_server.url, audio1, audio2, turn_ends=False)
    results = finals(down)
    reopened = [i for i, f in enumerate(down) if isinstance(f, TranscriptReopenedFrame)]
    final_indexes = [i for i, f in enumerate(down) if isinstance(f, TranscriptionFrame)]
    assert len(reopened) == 1 and final_indexes[0] < reopened[0] < final_indexes[1], down
    assert wer([f"{text1} {text2}"], [results[1].text]) <= 0.15, results[1].text


async def test_speech_after_a_sound_over_the_bot_is_not_joined_to_it(asr_server, speech):
    """A "mhm" over the bot's speech starts no turn: the next speech is an utterance of its own, not
    a continuation the STT reopens the last final for."""
    (_, audio1), (text2, audio2) = speech[3], speech[5]
    down = await two_utterances(asr_server.url, audio1, audio2, turn_ends=False, in_turns=False)
    assert not any(isinstance(f, TranscriptReopenedFrame) for f in down), down
    assert wer([text2], [finals(down)[1].text]) <= 0.15, finals(down)[1].text


def finals(frames) -> list[TranscriptionFrame]:
    return [f for f in frames if isinstance(f, TranscriptionFrame)]


async def test_final_transcript_is_finalized_and_follows_vad_stop(asr_server, speech):
    # ≈3 s each: interims come every second of speech, so there is time for one whatever the speed.
    (text1, audio1), (text2, audio2) = speech[3], speech[5]
    down = await two_utterances(asr_server.url, audio1, audio2, turn_ends=True)
    results = finals(down)
    assert [r.finalized for r in results] == [True, True]
    assert not any(isinstance(f, TranscriptReopenedFrame) for f in down)
    assert wer([text1, text2], [r.text for r in results]) <= 0.15, [r.text for r in results]
    stop_indexes = [i for i, f in enumerate(down) if isinstance(f, VADUserStoppedSpeakingFrame)]
    final_indexes = [i for i, f in enumerate(down) if isinstance(f, TranscriptionFrame)]
    assert stop_indexes[0] < final_indexes[0] < stop_indexes[1] < final_indexes[1]
    assert results[0].result["latency_ms"] >= 0
    assert any(isinstance(f, InterimTranscriptionFrame) for f in down)


async def test_resamples_pipeline_audio_to_16k(asr_server, speech):
    text, audio = speech[1]
    audio_24k = (soxr.resample(audio.astype(np.float32) / 32768, 16000, 24000) * 32767).astype(np.int16)
    transcripts = Watch(TranscriptionFrame)
    down = await run_script(
        ASRServerSTTService(url=asr_server.url),
        transcripts,
        steps=[*utterance_frames(audio_24k, sample_rate=24000), lambda: transcripts.reached(1)],
        pipeline_params=PipelineParams(audio_in_sample_rate=24000),
    )
    assert wer([text], [r.text for r in finals(down)]) <= 0.2


async def test_reconnects_after_server_crash(tmp_path, speech):
    (text1, audio1), (text2, audio2) = speech[2], speech[3]
    server = RestartableServer("servers.asr", ["--engine", "whisper"], tmp_path / "asr.log")
    server.run()
    stt = ASRServerSTTService(url=server.url)
    connections = Count()
    stt.add_event_handler("on_connected", connections.add)
    transcripts = Watch(TranscriptionFrame)
    restart = asyncio.create_task(server.crash_and_restart(after=transcripts.reached(1)))
    try:
        down = await run_script(
            stt,
            transcripts,
            steps=[
                *utterance_frames(audio1),
                lambda: restart,
                lambda: connections.reached(2),
                *utterance_frames(audio2),
                lambda: transcripts.reached(2),
            ],
        )
        await restart
    finally:
        restart.cancel()
        server.stop()
    texts = [r.text for r in finals(down)]
    assert len(texts) == 2 and wer([text1, text2], texts) <= 0.2, texts


async def test_waits_for_a_server_that_starts_late(tmp_path, speech):
    """Nothing listens when the call starts (the server restarts, or scales up from zero): the
    client keeps trying for `server_wait_s`, not for a count of attempts (ten, 0.5 s apart, would be
    over before the server below comes up), and transcribes once the server is there."""
    text, audio = speech[0]
    server = RestartableServer("servers.asr", ["--engine", "whisper"], tmp_path / "asr.log")
    stt = ASRServerSTTService(url=server.url, reconnect_backoff_min_wait=0.5, reconnect_backoff_max_wait=0.5,
                              server_wait_s=120)  # fmt: skip
    connections = Count()
    stt.add_event_handler("on_connected", connections.add)
    transcripts = Watch(TranscriptionFrame)

    async def start_late() -> None:
        await asyncio.sleep(8)  # the scenario: down for longer than ten quick attempts take
        await asyncio.to_thread(server.run)

    starting = asyncio.create_task(start_late())
    try:
        down = await run_script(
            stt,
            transcripts,
            steps=[lambda: starting, lambda: connections.reached(1), *utterance_frames(audio),
                   lambda: transcripts.reached(1)],
        )  # fmt: skip
    finally:
        starting.cancel()
        server.stop()
    assert wer([text], [r.text for r in finals(down)]) <= 0.2


async def test_a_call_that_ends_while_the_server_loads_leaves_no_connection():
    """The connection made at start waits for the server's `ready`, which a loading model holds back; a
    call that ends meanwhile (the caller heard "one moment" and hung up) closes it, so it holds no
    session of the server. A stand-in server that accepts and never says ready plays the loading one."""
    from websockets.asyncio.server import serve

    opened, closed = asyncio.Event(), asyncio.Event()

    async def loading(websocket) -> None:
        opened.set()
        try:
            await websocket.wait_closed()
        finally:
            closed.set()

    async with serve(loading, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        stt = ASRServerSTTService(url=f"ws://127.0.0.1:{port}", server_wait_s=60)
        await run_script(stt, steps=[opened.wait])
        await asyncio.wait_for(closed.wait(), 10)
