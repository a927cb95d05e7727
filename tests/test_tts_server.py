"""The TTS server with the embedded Piper engine, over real WebSockets on loopback."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.scoring import wer
from servers.processes import free_port
from servers.tts import protocol
from servers.tts.client import Reply, TTSClient
from servers.tts.engines.piper import PiperEngine
from servers.tts.server import TTSServer
from servers.tts.text import normalize

REPLY = "Sure, the capital of France is Paris. It is famous for the Eiffel Tower and its museums."


async def speak(url: str, text: str, context_id: str = "c1") -> tuple[Reply, int]:
    async with TTSClient(url) as tts:
        return await tts.speak(context_id, text), tts.sample_rate


async def transcribe(whisper, pcm: bytes, rate: int) -> str:
    audio = np.frombuffer(bytes(pcm), dtype="<i2").astype(np.float32) / 32768
    return await whisper.transcribe(soxr.resample(audio, rate, 16000).astype(np.float32))


async def test_ready_announces_the_true_sample_rate(tts_server):
    async with TTSClient(tts_server.url) as tts:
        ready = tts.ready
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


async def test_long_digit_strings_are_spoken_in_groups(tts_server, whisper):
    reply, rate = await speak(tts_server.url, "Call 415-555-2671.")
    assert reply.segments[0].text == "Call four one five, five five five, two six seven one."
    heard = (await transcribe(whisper, reply.audio, rate)).lower()
    assert sum(heard.count(d) for d in ("five", "5")) >= 3, heard


async def test_cancel_ends_the_reply_and_no_audio_follows(tts_server):
    """Cancelled at its first audio, a reply far too long to be finished by then."""
    long_text = " ".join([REPLY] * 12)
    async with TTSClient(tts_server.url) as tts:
        await tts.text("c1", long_text)
        await tts.flush("c1")

        cancelled: list[bool] = []

        async def cancel_at_first_audio(_: Reply) -> None:
            if not cancelled:
                cancelled.append(True)
                await tts.cancel("c1")

        reply = await tts.collect("c1", on_audio=cancel_at_first_audio)
        assert reply.done.cancelled
        received_ms = len(reply.audio) / 2 / tts.sample_rate * 1000
        assert reply.done.audio_ms == pytest.approx(received_ms, abs=1), "audio the cancel's `done` did not count"
        shortest_whole_s = len(long_text.split()) * 0.25
        assert reply.done.audio_ms / 1000 < shortest_whole_s / 4, reply.done
        follow_up = await tts.speak("c2", "Still here.")  # audio of c1 arriving here fails the test
    assert follow_up.done.audio_ms > 300 and not follow_up.done.cancelled


async def test_concurrent_sessions_get_their_own_audio(tts_server, whisper):
    texts = ["The weather is lovely today.", "Spiders have eight legs.", "Please close the kitchen window."]
    replies = await asyncio.gather(*(speak(tts_server.url, t, f"ctx{i}") for i, t in enumerate(texts)))
    heard = [await transcribe(whisper, reply.audio, rate) for reply, rate in replies]
    assert wer(texts, heard) <= 0.2, heard


UNPUNCTUATED = " ".join(["the quick brown fox jumps over a lazy dog while seven green parrots sing"] * 60)[:4000]


@pytest.mark.parametrize("long_text", [UNPUNCTUATED, "4155552671" * 30], ids=["4000-chars-unpunctuated", "300-digits"])
async def test_a_long_reply_does_not_hold_up_another_sessions_first_audio(tts_server, long_text):
    """While one session synthesizes a 4000-character unpunctuated text or a 300-digit number (from
    its first audio on), a second session gets its whole short reply before the long one is over:
    the worker takes the sessions' bounded chunks in turn instead of one reply's at once."""
    async with TTSClient(tts_server.url) as long_session, TTSClient(tts_server.url) as short_session:
        speaking = asyncio.Event()

        async def on_audio(_: Reply) -> None:
            speaking.set()

        long_task = asyncio.create_task(long_session.speak("long", long_text, on_audio=on_audio, timeout=120))
        await speaking.wait()
        short = await short_session.speak("short", "Hello there.")
        assert not long_task.done(), "the long reply was over before the short one"
        await long_session.cancel("long")
        long = await long_task
    assert short.first_audio_at is not None and short.done.audio_ms > 300 and not short.done.cancelled
    assert long.done.cancelled
    assert all(len(s.written) <= 300 and "illion" not in s.text for s in long.segments)


class RecordingPiper(PiperEngine):
    """The real engine, recording the text of each call: one call is the worker's unit of work."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def synthesize(self, text: str, voice: str, language: str, first: bool):
        self.calls.append(text)
        return super().synthesize(text, voice, language, first)


@asynccontextmanager
async def in_process(server: TTSServer) -> AsyncIterator[str]:
    """`server` serving in this test's event loop (to look inside it); yields its URL."""
    port = free_port()
    serving = asyncio.create_task(server.serve("127.0.0.1", port, protocol.MAX_MESSAGE_BYTES))
    try:
        await asyncio.wait_for(server.loaded.wait(), 120)
        yield f"ws://127.0.0.1:{port}"
    finally:
        serving.cancel()
        with suppress(asyncio.CancelledError):
            await serving
        server.worker.shutdown()


async def test_the_engines_unit_of_work_is_bounded_whatever_the_text():
    """A 100-digit number in one segment: the engine gets it in parts of at most `max_part_chars`
    (a call per part, each cut at a digit group), never the whole spoken text at once."""
    engine = RecordingPiper()
    async with in_process(TTSServer(engine, max_lead_s=0)) as url:  # as fast as it can: only the unit of work matters
        engine.calls.clear()  # the warm-up call of load()
        async with TTSClient(url) as tts:
            reply = await tts.speak("c", "4155552671" * 10)
    spoken = normalize("4155552671" * 10)
    assert [s.text for s in reply.segments] == [spoken]
    assert max(map(len, engine.calls)) <= engine.max_part_chars < len(spoken)
    assert " ".join(engine.calls) == spoken and all(c.endswith(",") for c in engine.calls[:-1])


async def test_a_long_reply_keeps_pace_with_its_playback():
    """A reply is synthesized at most `max_lead_s` (+ one part) ahead of real-time playback, so a
    long one leaves the engine free for others; a slow machine only falls behind, never ahead."""
    engine, lead_s = PiperEngine(), 1.0
    arrivals: list[tuple[float, float]] = []

    async def on_audio(reply: Reply) -> None:
        arrivals.append((asyncio.get_running_loop().time(), len(reply.audio) / 2 / engine.sample_rate))

    async with in_process(TTSServer(engine, max_lead_s=lead_s)) as url, TTSClient(url) as tts:
        reply = await tts.speak("c", "The quick brown fox jumps over the lazy dog. " * 4, on_audio=on_audio)
    part_s = 5.0  # the most audio one part of at most max_part_chars makes
    first = arrivals[0][0]
    assert all(audio_s - (at - first) <= lead_s + part_s for at, audio_s in arrivals)
    total_s = reply.done.audio_ms / 1000
    assert total_s > lead_s + 2 * part_s, total_s  # long enough to tell paced from not
    assert arrivals[-1][0] - first >= total_s - lead_s - part_s


async def test_replies_on_one_session_are_spoken_in_order(tts_server):
    async with TTSClient(tts_server.url) as tts:
        for cid, text in (("a", "First reply."), ("b", "Second reply.")):
            await tts.text(cid, text)
            await tts.flush(cid)
        first, second = await tts.collect("a"), await tts.collect("b")
    assert first.done.audio_ms > 0 and second.done.audio_ms > 0


async def expect_error(tts: TTSClient, code: protocol.ErrorCode) -> None:
    while not isinstance(message := await tts.receive(timeout=10), protocol.Error):
        pass
    assert message.code == code, message


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
        (
            [protocol.Text("x", "word " * 799).to_json()] * (2 * protocol.MAX_PENDING_CHARS // 3995 + 1),
            protocol.ErrorCode.TEXT_TOO_LONG,
        ),
    ],
    ids=lambda v: v.value if isinstance(v, protocol.ErrorCode) else None,
)
async def test_bad_input_is_answered_and_session_keeps_working(tts_server, messages, code):
    async with TTSClient(tts_server.url) as tts:
        for message in messages:
            await tts.ws.send(message)
        await expect_error(tts, code)
        if code == protocol.ErrorCode.TEXT_TOO_LONG and len(messages) > 1:
            await tts.cancel("x")
        await tts.text("ok", "Fine.")
        await tts.flush("ok")
        while not isinstance(message := await tts.receive(), protocol.Done) or message.context_id != "ok":
            pass
    assert message.audio_ms > 0


async def test_oversized_frame_and_abrupt_disconnects_leave_others_unharmed(tts_server, whisper):
    async with connect(tts_server.url, max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (protocol.MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    for _ in range(3):
        tts = await TTSClient(tts_server.url).__aenter__()
        await tts.text("c", " ".join([REPLY] * 3))
        await tts.flush("c")
        await tts.receive()
        tts.ws.transport.abort()
    reply, rate = await speak(tts_server.url, "The server is still fine.")
    assert wer(["The server is still fine."], [await transcribe(whisper, reply.audio, rate)]) <= 0.2
    with urllib.request.urlopen(f"http://127.0.0.1:{tts_server.port}/health") as response:
        assert json.load(response)["status"] == "ok"


async def test_mark_is_echoed_once_the_text_before_it_is_synthesized(tts_server):
    async with TTSClient(tts_server.url) as tts:
        await tts.text("c", "Sure, the first part")
        await tts.mark("c", "m1")
        await tts.text("c", " and the second part.")
        await tts.mark("c", "m2")
        await tts.flush("c")
        reply = await tts.collect("c")
    events = [m.id if isinstance(m, protocol.Mark) else m.type for m in reply.messages]
    assert events == ["segment_done", "segment_done", "m1", "segment_done", "m2", "done"], events


class CountingPiper(PiperEngine):
    """The real Piper engine, counting the syntheses it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []

    def synthesize(self, text: str, voice: str, language: str, first: bool):
        self.calls.append((text, first))
        return super().synthesize(text, voice, language, first)


async def test_ready_only_after_one_synthesis():
    """/health says ready once the engine has spoken once: its first caller does not pay for warm-up."""
    engine = CountingPiper()
    server = TTSServer(engine)
    await server.load()
    assert server.health()[0] is True
    assert len(engine.calls) == 1 and engine.calls[0][1] is True
    engine.close()
