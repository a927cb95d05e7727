"""What tests and benchmarks do with a call, whatever carries it (WebRTC, a phone line): speak,
then watch the bot's audio as it arrives and the messages it sends about its turns."""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.audio import speech_bounds
from pipecat_services.spoken_phrases import FILLERS

SILENT_RMS = 300.0  # int16 RMS below this is silence (about -40 dBFS)


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


def rms(chunk: np.ndarray) -> float:
    return float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) if len(chunk) else 0.0


@dataclass
class BargeIn:
    """One reply interrupted by the user, as seen from the client."""

    round_trip_ms: float
    """The transport's path both ways: the interrupted turn's client V2V less the bot's own server V2V."""
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


class VoiceClient:
    """A call's client side: `connect`, `say`, `close` come from the transport's client; the bot's
    audio (`audio`, 16 kHz) and its `server-message`s (`messages`, with arrival times) are read here."""

    def __init__(self) -> None:
        self.audio = BotAudio()
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.ended_at: float | None = None
        """When the bot ended the call (its audio ended, or the connection closed)."""

    async def connect(self) -> None:
        raise NotImplementedError

    async def say(self, audio_16k: np.ndarray) -> float:
        """Speak in real time; returns the monotonic time the speech in it ended."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

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

    async def whole_reply(self, since: float, timeout: float = 90.0) -> np.ndarray | None:
        """The bot's whole reply after `since`: from its first audio until its assistant turn has ended
        (a pause inside the reply, which a busy host may make, does not cut it); None if none came."""
        start = await self.wait_for_reply_start(since, timeout)
        if start is None or await self.wait_for_answer(since, timeout) is None:
            return None
        await asyncio.sleep(0.3)  # the reply's last audio may arrive just after the message
        return self.audio.between(start - 0.1, time.monotonic())

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
