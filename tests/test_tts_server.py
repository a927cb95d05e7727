"""The TTS server with the embedded Piper engine, over real WebSockets on loopback."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks.scoring import wer
from servers.tts import protocol

REPLY = "Sure, the capital of France is Paris. It is famous for the Eiffel Tower and its museums."


@dataclass
class Reply:
    audio: bytearray = field(default_factory=bytearray)
    segments: list[protocol.SegmentDone] = field(default_factory=list)
    done: protocol.Done | None = None
    first_audio_s: float | None = None


async def open_session(url: str) -> tuple[ClientConnection, protocol.Ready]:
    ws = await connect(url)
    ready = protocol.parse_server_message(await ws.recv())
    assert isinstance(ready, protocol.Ready)
    return ws, ready


async def collect(ws: ClientConnection, context_id: str, on_audio=None) -> Reply:
    """Read until `done` for `context_id`; audio for other contexts is an error."""
    reply, started = Reply(), time.perf_counter()
    while reply.done is None:
        raw = await asyncio.wait_for(ws.recv(), 30)
        if isinstance(raw, bytes):
            cid, pcm = protocol.unpack_audio(raw)
            assert cid == context_id
            reply.first_audio_s = reply.first_audio_s or time.perf_counter() - started
            reply.audio += pcm
            if on_audio is not None:
                await on_audio(reply)
            continue
        message = protocol.parse_server_message(raw)
        assert not isinstance(message, protocol.Error), message
        if isinstance(message, protocol.SegmentDone):
            reply.segments.append(message)
        elif isinstance(message, protocol.Done):
            reply.done = message
    return reply


async def speak(url: str, text: str, context_id: str = "c1") -> tuple[Reply, int]:
    ws, ready = await open_session(url)
    async with ws:
        await ws.send(protocol.Start(context_id).to_json())
        await ws.send(protocol.Text(context_id, text).to_json())
        await ws.send(protocol.Flush(context_id).to_json())
        return await collect(ws, context_id), ready.sample_rate


async def transcribe(whisper, pcm: bytes, rate: int) -> str:
    audio = np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float32) / 32768
    return await whisper.transcribe(soxr.resample(audio, rate, 16000).astype(np.float32))


async def test_ready_announces_the_true_sample_rate(tts_server):
    ws, ready = await open_session(tts_server.url)
    await ws.close()
    assert ready.engine == "piper" and ready.sample_rate == 22050
    assert ready.voices == ["joe"] and ready.languages == ["en"]


async def test_round_trip_is_intelligible_and_plausibly_timed(tts_server, whisper):
    reply, rate = await speak(tts_server.url, REPLY)
    seconds = len(reply.audio) / 2 / rate
    assert 0.25 < seconds / len(REPLY.split()) < 0.6, seconds
    assert reply.done.audio_ms == pytest.approx(seconds * 1000, abs=1)
    assert sum(s.audio_ms for s in reply.segments) == pytest.approx(reply.done.audio_ms, abs=1)
    assert [s.text for s in reply.segments] == [
        "Sure,",
        "the capital of France is Paris.",
        "It is famous for the Eiffel Tower and its museums.",
    ]
    heard = await transcribe(whisper, reply.audio, rate)
    assert wer([REPLY], [heard]) <= 0.2, heard


async def test_text_is_normalised_before_synthesis(tts_server, whisper):
    reply, rate = await speak(tts_server.url, "It costs $20 🎉.")
    assert reply.segments[0].text == "It costs twenty dollars."
    assert reply.segments[0].written == "It costs $20 🎉."
    heard = (await transcribe(whisper, reply.audio, rate)).lower()
    assert "twenty" in heard or "20" in heard, heard


async def test_cancel_ends_the_reply_and_no_audio_follows(tts_server):
    """Cancelled at its first audio, a reply far too long to be finished by then."""
    long_text = " ".join([REPLY] * 12)
    ws, ready = await open_session(tts_server.url)
    async with ws:
        await ws.send(protocol.Text("c1", long_text).to_json())
        await ws.send(protocol.Flush("c1").to_json())

        cancelled: list[bool] = []

        async def cancel_at_first_audio(_: Reply) -> None:
            if not cancelled:
                cancelled.append(True)
                await ws.send(protocol.Cancel("c1").to_json())

        reply = await collect(ws, "c1", on_audio=cancel_at_first_audio)
        assert reply.done.cancelled
        received_ms = len(reply.audio) / 2 / ready.sample_rate * 1000
        assert reply.done.audio_ms == pytest.approx(received_ms, abs=1), "audio the cancel's `done` did not count"
        shortest_whole_s = len(long_text.split()) * 0.25
        assert reply.done.audio_ms / 1000 < shortest_whole_s / 4, reply.done
        await ws.send(protocol.Text("c2", "Still here.").to_json())
        await ws.send(protocol.Flush("c2").to_json())
        follow_up = await collect(ws, "c2")  # audio of c1 arriving here fails the test
    assert follow_up.done.audio_ms > 300 and not follow_up.done.cancelled


async def test_concurrent_sessions_get_their_own_audio(tts_server, whisper):
    texts = ["The weather is lovely today.", "Spiders have eight legs.", "Please close the kitchen window."]
    replies = await asyncio.gather(*(speak(tts_server.url, t, f"ctx{i}") for i, t in enumerate(texts)))
    heard = [await transcribe(whisper, reply.audio, rate) for reply, rate in replies]
    assert wer(texts, heard) <= 0.2, heard


async def test_replies_on_one_session_are_spoken_in_order(tts_server):
    ws, _ = await open_session(tts_server.url)
    async with ws:
        for cid, text in (("a", "First reply."), ("b", "Second reply.")):
            await ws.send(protocol.Text(cid, text).to_json())
            await ws.send(protocol.Flush(cid).to_json())
        first, second = await collect(ws, "a"), await collect(ws, "b")
    assert first.done.audio_ms > 0 and second.done.audio_ms > 0


async def expect_error(ws: ClientConnection, code: protocol.ErrorCode) -> None:
    while True:
        raw = await asyncio.wait_for(ws.recv(), 10)
        if isinstance(raw, str) and isinstance(message := protocol.parse_server_message(raw), protocol.Error):
            assert message.code == code, message
            return


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (["{oops"], protocol.ErrorCode.BAD_JSON),
        (['{"type": "sing", "context_id": "x"}'], protocol.ErrorCode.UNKNOWN_TYPE),
        (['{"type": "text", "text": "no context"}'], protocol.ErrorCode.BAD_MESSAGE),
        ([b"\x00\x01"], protocol.ErrorCode.BINARY_NOT_ACCEPTED),
        ([protocol.Text("x", "a" * (protocol.MAX_TEXT_CHARS + 1)).to_json()], protocol.ErrorCode.TEXT_TOO_LONG),
        ([protocol.Start("x", voice="nobody").to_json()], protocol.ErrorCode.UNKNOWN_VOICE),
        ([protocol.Start("x", language="klingon").to_json()], protocol.ErrorCode.UNKNOWN_LANGUAGE),
        ([protocol.Flush("never-started").to_json()], protocol.ErrorCode.UNKNOWN_CONTEXT),
        ([protocol.Cancel("nothing").to_json()], protocol.ErrorCode.UNKNOWN_CONTEXT),
        ([protocol.Start("x").to_json(), protocol.Start("x").to_json()], protocol.ErrorCode.BAD_MESSAGE),
        (
            [protocol.Text("x", "Hi.").to_json(), protocol.Flush("x").to_json(), protocol.Text("x", "More.").to_json()],
            protocol.ErrorCode.CONTEXT_CLOSED,
        ),
    ],
)
async def test_bad_input_is_answered_and_session_keeps_working(tts_server, messages, code):
    ws, _ = await open_session(tts_server.url)
    async with ws:
        for message in messages:
            await ws.send(message)
        await expect_error(ws, code)
        await ws.send(protocol.Text("ok", "Fine.").to_json())
        await ws.send(protocol.Flush("ok").to_json())
        while not (isinstance(raw := await asyncio.wait_for(ws.recv(), 30), str) and '"done"' in raw and '"ok"' in raw):
            pass
        assert json.loads(raw)["audio_ms"] > 0


async def test_oversized_frame_and_abrupt_disconnects_leave_others_unharmed(tts_server, whisper):
    async with connect(tts_server.url, max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (protocol.MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    for _ in range(3):
        ws, _ = await open_session(tts_server.url)
        await ws.send(protocol.Text("c", " ".join([REPLY] * 3)).to_json())
        await ws.send(protocol.Flush("c").to_json())
        await ws.recv()
        ws.transport.abort()
    reply, rate = await speak(tts_server.url, "The server is still fine.")
    assert wer(["The server is still fine."], [await transcribe(whisper, reply.audio, rate)]) <= 0.2
    with urllib.request.urlopen(f"http://127.0.0.1:{tts_server.port}/health") as response:
        assert json.load(response)["status"] == "ok"


async def test_mark_is_echoed_once_the_text_before_it_is_synthesized(tts_server):
    ws, _ = await open_session(tts_server.url)
    async with ws:
        await ws.send(protocol.Text("c", "Sure, the first part").to_json())
        await ws.send(protocol.Mark("c", "m1").to_json())
        await ws.send(protocol.Text("c", " and the second part.").to_json())
        await ws.send(protocol.Mark("c", "m2").to_json())
        await ws.send(protocol.Flush("c").to_json())
        events = []
        while not events or events[-1] != "done":
            raw = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(raw, str):
                message = protocol.parse_server_message(raw)
                events.append(message.id if isinstance(message, protocol.Mark) else message.type)
    assert events == ["segment_done", "segment_done", "m1", "segment_done", "m2", "done"], events
