"""A headless Playground: an aiortc peer that talks to the bot the way the browser client does.

It posts an SDP offer to the runner's `/api/offer`, sends a microphone track fed from WAV audio in
real time (silence in between), records the bot's audio with arrival times, and keeps the RTVI
messages from the data channel (client-ready, keep-alive pings, the bot's `server-message`s).
Used by the conversation benchmark and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import bisect
import fractions
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import soxr
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from benchmarks.audio import speech_bounds
from pipecat_services.spoken_phrases import FILLERS

RATE = 48_000
FRAME = RATE // 50  # 20 ms
SILENT_RMS = 300.0  # int16 RMS below this is silence (about -40 dBFS)


class MicrophoneTrack(MediaStreamTrack):
    """Audio track that plays queued speech in real time and silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._pts = 0
        self._start: float | None = None
        self._drained: asyncio.Event = asyncio.Event()
        self._drained.set()
        self.last_sent_at = 0.0

    def play(self, audio_16k: np.ndarray) -> asyncio.Event:
        """Queue 16 kHz int16 speech; the returned event is set when its last sample has been sent."""
        audio = soxr.resample(audio_16k.astype(np.float32) / 32768, 16_000, RATE)
        self._pending = np.concatenate([self._pending, (audio * 32767).astype(np.int16)])
        self._drained = asyncio.Event()
        return self._drained

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = np.zeros(FRAME, dtype=np.int16)
        take = min(FRAME, len(self._pending))
        if take:
            samples[:take] = self._pending[:take]
            self._pending = self._pending[take:]
            self.last_sent_at = time.monotonic()
            if not len(self._pending):
                self._drained.set()
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


@dataclass
class BotAudio:
    """The bot's audio as 20 ms-ish chunks of 16 kHz int16, each with its arrival time, and the
    arrival times of the non-silent ones (judged once, as they arrive: callers poll these)."""

    chunks: list[tuple[float, np.ndarray]] = field(default_factory=list)
    voiced: list[float] = field(default_factory=list)

    def add(self, at: float, chunk: np.ndarray) -> None:
        self.chunks.append((at, chunk))
        if rms(chunk) > SILENT_RMS:
            self.voiced.append(at)

    def between(self, start: float, end: float) -> np.ndarray:
        parts = [c for t, c in self.chunks if start <= t < end]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def forget_before(self, at: float) -> None:
        """Drop what arrived before `at`: a long session keeps only what it may still look at."""
        self.chunks = self.chunks[bisect.bisect_left(self.chunks, at, key=lambda c: c[0]) :]
        self.voiced = self.voiced[bisect.bisect_left(self.voiced, at) :]

    def voiced_times(self, start: float, end: float = float("inf")) -> list[float]:
        """Arrival times of the non-silent chunks in [start, end)."""
        return [t for t in self.voiced[bisect.bisect_left(self.voiced, start) :] if t < end]


@dataclass
class BargeIn:
    """One reply interrupted by the user, as seen from the client."""

    round_trip_ms: float
    """The WebRTC path both ways: the interrupted turn's client V2V less the bot's own server V2V."""
    heard_ms: float
    """Start of the interrupting speech at this client → the bot's last audio arriving here."""
    played_s: float
    """How long the reply had been playing at this client when the interruption began."""
    reply_start: float
    """When the reply's first audio arrived here (this client's clock)."""
    stored: dict[str, Any] | None
    """The bot's `assistant_turn` message for the interrupted reply: what went into its context."""

    @property
    def stop_ms(self) -> float:
        """Interrupting speech reaching the bot → its last audio leaving it."""
        return self.heard_ms - self.round_trip_ms


def rms(chunk: np.ndarray) -> float:
    return float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) if len(chunk) else 0.0


class WebRTCVoiceClient:
    """One voice session with the bot over SmallWebRTC, as the Playground would open it."""

    def __init__(self, base_url: str, body: dict[str, Any] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.body = body or {}
        self.mic = MicrophoneTrack()
        self.audio = BotAudio()
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._channel = self._pc.createDataChannel("rtvi")
        self._tasks: list[asyncio.Task] = []
        self._remote_audio = asyncio.Event()
        self.session_id: str | None = None
        self.ended_at: float | None = None
        """When the bot ended the call (its audio track ended, or the connection closed)."""

    async def connect(self, timeout: float = 20.0, via_start: bool = False) -> None:
        """Offer and wait for the media and data channel. `via_start`: first POST /start for a session,
        then offer to /sessions/{id}/api/offer, as the Playground does; else one POST /api/offer."""
        self._pc.addTrack(self.mic)
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._channel.on("message", self._on_message)
        opened = asyncio.Event()
        self._channel.on("open", opened.set)
        await self._pc.setLocalDescription(await self._pc.createOffer())
        offer = {"sdp": self._pc.localDescription.sdp, "type": "offer", "request_data": self.body}
        async with aiohttp.ClientSession() as http:
            offer_url = f"{self.base_url}/api/offer"
            if via_start:
                async with http.post(
                    f"{self.base_url}/start", json={"transport": "webrtc", "body": self.body}
                ) as response:
                    response.raise_for_status()
                    self.session_id = (await response.json())["sessionId"]
                offer_url = f"{self.base_url}/sessions/{self.session_id}/api/offer"
            async with http.post(offer_url, json=offer) as response:
                response.raise_for_status()
                answer = await response.json()
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(asyncio.gather(opened.wait(), self._remote_audio.wait()), timeout)
        self._tasks.append(asyncio.create_task(self._keep_alive()))
        self._send({"label": "rtvi-ai", "type": "client-ready", "id": uuid.uuid4().hex, "data": {"version": "1.0.0"}})

    async def say(self, audio_16k: np.ndarray) -> float:
        """Speak in real time; returns the monotonic time the speech in it ended (its last voiced
        window was sent), where client-side voice-to-voice starts."""
        await self.mic.play(audio_16k).wait()
        return self.mic.last_sent_at - (len(audio_16k) / 16_000 - speech_bounds(audio_16k)[1])

    def server_messages(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        """The bot's `server-message` payloads of type `kind` received after `since`."""
        return [
            m["data"]
            for t, m in self.messages
            if t >= since and m.get("type") == "server-message" and m.get("data", {}).get("type") == kind
        ]

    async def wait_for_message(self, kind: str, since: float, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.server_messages(kind, since):
                return found[0]
            await asyncio.sleep(0.05)
        return None

    async def wait_for_reply(
        self, since: float, timeout: float = 30.0, quiet: float = 1.5
    ) -> tuple[float, float] | None:
        """Wait until the bot has spoken after `since` and then been quiet for `quiet` s.

        Returns the arrival times of the reply's first and last voiced audio, or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            voiced = self.audio.voiced_times(since)
            if voiced and time.monotonic() - voiced[-1] >= quiet:
                return voiced[0], voiced[-1]
            await asyncio.sleep(0.05)
        return None

    async def wait_for_reply_start(self, since: float, timeout: float = 30.0) -> float | None:
        """The arrival time of the bot's first voiced audio after `since`, or None on timeout."""
        deadline = time.monotonic() + timeout
        while not (voiced := self.audio.voiced_times(since)):
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return voiced[0]

    async def barge_in(
        self, request: np.ndarray, interruption: np.ndarray, after_s: float = 2.0, reply_wait_s: float = 10.0
    ) -> BargeIn:
        """Ask for a long reply, speak `interruption` `after_s` into it, measure how soon the bot stops;
        `reply_wait_s`: how long after the interruption the reply may take to end (it may go on).

        `interruption` must have no pause inside: the bot's audio until it ends counts as the old reply."""
        speech_end = await self.say(request)
        deadline = time.monotonic() + 60
        while not (voiced := self.audio.voiced_times(speech_end)):
            if time.monotonic() > deadline:
                raise TimeoutError("the bot never started its reply")
            await asyncio.sleep(0.05)
        latency = await self.wait_for_message("turn_latency", speech_end, timeout=5) or {}
        await asyncio.sleep(after_s)
        while time.monotonic() - self.audio.voiced[-1] > 0.04 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # interrupt a word, not a pause between two
        started = time.monotonic() + speech_bounds(interruption)[0]
        ended = await self.say(interruption)
        stored = await self.wait_for_message("assistant_turn", started - 3, timeout=reply_wait_s)
        # Audio before the interruption ended is the old reply: no answer to it can start earlier.
        talked_over = self.audio.voiced_times(started, ended)
        last = talked_over[-1] if talked_over else started
        return BargeIn(
            round_trip_ms=1000 * (voiced[0] - speech_end) - latency.get("server_v2v_ms", 0.0),
            heard_ms=1000 * max(0.0, last - started),
            played_s=started - voiced[0],
            reply_start=voiced[0],
            stored=stored,
        )

    async def wait_for_answer(self, since: float, timeout: float) -> list[str] | None:
        """The texts of the bot's assistant turns after `since` (what went into its context), once one
        has words that are not a filler (the answer, played whole); None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            texts = [m["text"] for m in self.server_messages("assistant_turn", since) if m["text"].strip()]
            if any(text not in FILLERS for text in texts):
                return texts
            await asyncio.sleep(0.05)
        return None

    async def wait_for_end(self, timeout: float) -> float | None:
        """When the bot ended the call, waiting at most `timeout` s for it; None if it did not."""
        deadline = time.monotonic() + timeout
        while self.ended_at is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.ended_at

    def forget_before(self, at: float) -> None:
        """Drop the audio and messages that arrived before `at` (a soak runs for hours)."""
        self.audio.forget_before(at)
        self.messages = [(t, m) for t, m in self.messages if t >= at]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.mic.stop()
        await self._pc.close()

    def _send(self, message: dict[str, Any] | str) -> None:
        if self._channel.readyState == "open":
            self._channel.send(message if isinstance(message, str) else json.dumps(message))

    def _on_message(self, raw: str | bytes) -> None:
        try:
            self.messages.append((time.monotonic(), json.loads(raw)))
        except ValueError:
            pass

    def _on_connection_state(self) -> None:
        if self._pc.connectionState in ("closed", "failed") and self.ended_at is None:
            self.ended_at = time.monotonic()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._record(track)))

    async def _record(self, track: MediaStreamTrack) -> None:
        resampler = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self.ended_at = self.ended_at or time.monotonic()
                return
            self._remote_audio.set()
            samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
            if resampler is None:
                resampler = soxr.ResampleStream(frame.sample_rate, 16_000, 1, dtype="float32")
            mono = resampler.resample_chunk(samples.astype(np.float32) / 32768)
            if len(mono):
                self.audio.add(time.monotonic(), (mono * 32767).astype(np.int16))

    async def _keep_alive(self) -> None:
        """The server counts the session alive while pings arrive (the browser client sends them too)."""
        while True:
            self._send(f"ping: {time.time()}")
            await asyncio.sleep(1.0)
