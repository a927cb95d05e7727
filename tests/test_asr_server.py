"""The ASR server with the embedded whisper engine, driven over real WebSockets on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.asr import landmarks_in_order, long_speech
from benchmarks.audio import chunks
from benchmarks.scoring import wer
from servers.asr import protocol
from servers.asr.client import ASRClient

SILENCE_400MS = np.zeros(6400, dtype=np.int16)


async def stream_utterance(client: ASRClient, audio: np.ndarray, realtime: bool = True) -> None:
    """Send speech then 400 ms of silence in 20 ms frames, paced like a microphone."""
    for frame in chunks(np.concatenate([audio, SILENCE_400MS])):
        await client.send_audio(frame)
        if realtime:
            await asyncio.sleep(0.02)


async def transcribe(url: str, audio: np.ndarray) -> protocol.Final:
    async with ASRClient(url) as client:
        await stream_utterance(client, audio)
        return await client.finalize()


async def test_ready_announces_engine_and_format(asr_server):
    async with ASRClient(asr_server.url) as client:
        assert client.ready == protocol.Ready(engine="whisper", sample_rate=16000, protocol=protocol.PROTOCOL_VERSION)


async def test_transcripts_match_clean_speech(asr_server, speech):
    finals = [await transcribe(asr_server.url, audio) for _, audio in speech]
    texts = [f.text for f in finals]
    assert wer([t for t, _ in speech], texts) <= 0.15, texts
    for final, (_, audio) in zip(finals, speech, strict=False):
        assert final.audio_ms == pytest.approx((len(audio) + len(SILENCE_400MS)) / 16, abs=1)
        assert final.latency_ms >= 0


async def test_four_concurrent_sessions_get_their_own_text(asr_server, speech):
    chosen = speech[:4]
    finals = await asyncio.gather(*(transcribe(asr_server.url, audio) for _, audio in chosen))
    texts = [f.text for f in finals]
    assert wer([t for t, _ in chosen], texts) <= 0.15, texts
    for i, text in enumerate(texts):
        own = wer([chosen[i][0]], [text])
        assert all(own < wer([other], [text]) for j, (other, _) in enumerate(chosen) if j != i), texts


async def test_interim_text_while_speaking(asr_server, speech):
    _, audio = max(speech, key=lambda s: len(s[1]))
    async with ASRClient(asr_server.url) as client:
        await stream_utterance(client, audio)
        final = await client.finalize()
    assert client.interims, "no interim text for a 2+ s utterance"
    assert all(isinstance(t, str) and t for t in client.interims)
    assert final.text


async def test_reset_drops_the_utterance_in_progress(asr_server, speech):
    (_, first), (second_text, second) = speech[0], speech[1]
    async with ASRClient(asr_server.url) as client:
        await stream_utterance(client, first, realtime=False)
        await client.reset()
        await stream_utterance(client, second, realtime=False)
        final = await client.finalize()
    assert wer([second_text], [final.text]) <= 0.2, final.text


async def test_consecutive_turns_on_one_session(asr_server, speech):
    async with ASRClient(asr_server.url) as client:
        texts = []
        for _, audio in speech[:3]:
            await stream_utterance(client, audio, realtime=False)
            await client.soft_finalize()
            texts.append((await client.finalize()).text)
    assert wer([t for t, _ in speech[:3]], texts) <= 0.15, texts


async def test_a_reopened_final_is_decoded_again_with_what_follows(asr_server, say_wav):
    """The bot's path for a pause it took for an end: final, reopen, more words, one final for all."""
    async with ASRClient(asr_server.url) as client:
        for frame in chunks(np.concatenate([say_wav("What do you call"), SILENCE_400MS[:4000]])):
            await client.send_audio(frame)
        piece = await client.finalize()
        await client.reopen()
        for frame in chunks(np.concatenate([SILENCE_400MS[:1600], say_wav("a baby cat?")])):
            await client.send_audio(frame)
        await stream_utterance(client, np.zeros(0, dtype=np.int16), realtime=False)
        final = await client.finalize()
        await stream_utterance(client, say_wav("Thank you."), realtime=False)
        next_turn = await client.finalize()
    assert "cat" not in piece.text.lower(), piece
    assert re.fullmatch(r"what do you call a baby cat\?", final.text.lower()), final
    assert final.audio_ms > piece.audio_ms, (piece, final)
    assert "cat" not in next_turn.text.lower(), next_turn


async def test_finalize_of_silence_is_empty(asr_server):
    async with ASRClient(asr_server.url) as client:
        for frame in chunks(np.zeros(16000, dtype=np.int16)):
            await client.send_audio(frame)
        final = await client.finalize()
    assert final.text == ""


async def expect_error(ws, code: protocol.ErrorCode) -> protocol.Error:
    while True:
        message = protocol.parse_server_message(await asyncio.wait_for(ws.recv(), 10))
        if isinstance(message, protocol.Error):
            assert message.code == code, message
            assert message.message
            return message


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", protocol.ErrorCode.BAD_JSON),
        ('["finalize"]', protocol.ErrorCode.BAD_MESSAGE),
        ('{"type": "transcribe"}', protocol.ErrorCode.UNKNOWN_TYPE),
        ('{"type": "finalize", "hard": "yes"}', protocol.ErrorCode.BAD_MESSAGE),
        ('{"type": "finalize", "hard": true, "extra": 1}', protocol.ErrorCode.BAD_MESSAGE),
        (b"\x01\x02\x03", protocol.ErrorCode.BAD_AUDIO),
        (b"\x00" * (protocol.MAX_AUDIO_FRAME_BYTES + 2), protocol.ErrorCode.FRAME_TOO_LARGE),
    ],
)
async def test_bad_input_is_answered_and_session_keeps_working(asr_server, speech, frame, code):
    text, audio = speech[0]
    async with connect(asr_server.url) as ws:
        assert isinstance(protocol.parse_server_message(await ws.recv()), protocol.Ready)
        await ws.send(frame)
        await expect_error(ws, code)
        for pcm in chunks(np.concatenate([audio, SILENCE_400MS])):
            await ws.send(pcm)
        await ws.send(protocol.Finalize(hard=True).to_json())
        while not isinstance(final := protocol.parse_server_message(await ws.recv()), protocol.Final):
            pass
    assert wer([text], [final.text]) <= 0.2


async def test_huge_frame_closes_only_that_session(asr_server, speech):
    text, audio = speech[2]
    async with ASRClient(asr_server.url) as bystander:
        async with connect(asr_server.url, max_size=None) as ws:
            await ws.recv()
            await ws.send(b"\x00" * (protocol.MAX_MESSAGE_BYTES + 2))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await stream_utterance(bystander, audio, realtime=False)
        final = await bystander.finalize()
    assert wer([text], [final.text]) <= 0.2


async def test_abrupt_disconnects_do_not_hurt_the_server(asr_server, speech):
    text, audio = speech[3]
    for _ in range(3):
        ws = await connect(asr_server.url)
        await ws.recv()
        for pcm in chunks(audio[:8000]):
            await ws.send(pcm)
        await ws.send(protocol.Finalize(hard=True).to_json())
        ws.transport.abort()
    final = await transcribe(asr_server.url, audio)
    assert wer([text], [final.text]) <= 0.2
    with urllib.request.urlopen(f"http://127.0.0.1:{asr_server.port}/health") as response:
        health = json.load(response)
    assert health["status"] == "ok" and health["engine"] == "whisper"


@pytest.fixture(scope="module")
def long_speeches(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("long_speech")
    return {seconds: long_speech(seconds, folder) for seconds in (60, 120)}


@pytest.mark.parametrize("seconds", [60, 120])
async def test_long_speech_comes_back_whole_and_in_order(asr_server, long_speeches, seconds):
    """Streamed faster than real time: the engine's commits depend on the audio alone (and back-pressure
    holds a fast client), so the text is what a real-time stream gets; the latency is the benchmark's."""
    reference, audio = long_speeches[seconds]
    async with ASRClient(asr_server.url) as client:
        await stream_utterance(client, audio, realtime=False)
        final = await client.finalize(timeout=120)
    assert final.audio_ms == pytest.approx((len(audio) + len(SILENCE_400MS)) / 16, abs=1)
    assert wer([reference], [final.text]) <= 0.15, final.text
    landmarks, heard, out_of_place = landmarks_in_order(reference, final.text)
    assert out_of_place == 0 and heard >= 0.8 * landmarks, final.text


async def test_a_hard_finalize_the_engine_fails_still_gets_its_final():
    """Every hard finalize gets one final (the STT counts on it to tell a late final from the next):
    empty when the engine failed, the error after it, and the session goes on."""
    from servers.asr.engines.base import ASRStream
    from servers.asr.server import Session

    class FailingStream(ASRStream):
        async def feed(self, samples):
            pass

        async def finalize(self, hard):
            raise RuntimeError("decoder fell over")

        async def reset(self):
            pass

    class Socket:
        def __init__(self, frames):
            self.frames, self.sent = frames, []

        def __aiter__(self):
            return self._frames()

        async def _frames(self):
            for frame in self.frames:
                yield frame

        async def send(self, text):
            self.sent.append(protocol.parse_server_message(text))

    finalize = protocol.Finalize(hard=True).to_json()
    socket = Socket([bytes(640), finalize, finalize])
    session = Session(socket, "s")
    session.stream = FailingStream(lambda _: None)
    await session.serve()
    kinds = [(type(m).__name__, getattr(m, "text", getattr(m, "code", None))) for m in socket.sent]
    assert kinds == [("Final", ""), ("Error", "internal")] * 2, kinds
