"""A headless Playground: an aiortc peer that talks to the bot the way the browser client does.

It posts an SDP offer to the runner's `/api/offer`, sends a microphone track fed from WAV audio in
real time (silence in between), records the bot's audio with arrival times, and keeps the RTVI
messages from the data channel (client-ready, keep-alive pings, the bot's `server-message`s).
Used by the conversation benchmark and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
import uuid
from typing import Any

import aiohttp
import numpy as np
import soxr
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from benchmarks.audio import speech_bounds
from benchmarks.voice_client import VoiceClient

RATE = 48_000
FRAME = RATE // 50  # 20 ms


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


class WebRTCVoiceClient(VoiceClient):
    """One voice session with the bot over SmallWebRTC, as the Playground would open it."""

    def __init__(self, base_url: str, body: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.body = body or {}
        self.mic = MicrophoneTrack()
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._channel = self._pc.createDataChannel("rtvi")
        self._tasks: list[asyncio.Task] = []
        self._remote_audio = asyncio.Event()
        self.session_id: str | None = None

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
