"""A carrier's side of a phone call, for tests and benchmarks: Twilio's or Telnyx's webhook and Media
Streams protocol, as their public docs describe them, against `bot.py -t twilio|telnyx` on loopback.

It signs the webhook as the carrier does (Twilio: HMAC-SHA1 of the URL and form fields with the auth
token, computed by Twilio's own `RequestValidator`; Telnyx: Ed25519 over `timestamp|body` with a key
pair made here, whose public half the bot is given), opens the stream the TwiML / TeXML names, with
the token its `<Parameter>` carries, and sends `connected`, `start`, then the caller's audio as 20 ms
base64 mu-law `media` messages in real time (silence between turns), `dtmf` for keys and `stop` to
hang up. The caller's audio goes through a phone line first: 300-3400 Hz, 8 kHz, G.711 mu-law.
The bot's `media` is recorded with arrival times, its `mark`s are answered once the audio before
them has played, its `clear`s noted. A phone line carries no messages about turns: with the bot's
transcripts folder (`BOT_TRANSCRIPTS`), the call's transcript gives them (`turn_latency`,
`assistant_turn`), as the WebRTC client's data channel does.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import json
import secrets
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import aiohttp
import numpy as np
import soxr
from scipy.signal import butter, sosfilt

from benchmarks.audio import speech_bounds
from benchmarks.voice_client import VoiceClient
from phone_calls import TOKEN_PARAMETER, file_name
from servers.processes import LocalServer

LINE_RATE = 8000
CHUNK = LINE_RATE // 50  # 20 ms, as carriers send it
PHONE_BAND = butter(4, [300, 3400], btype="bandpass", fs=16_000, output="sos")
TRANSCRIPT_EVENTS = {"latency": "turn_latency", "assistant": "assistant_turn", "user": "user_turn"}
"""Transcript lines → the `server-message` types the WebRTC client receives for them."""


def phone_line(audio_16k: np.ndarray) -> bytes:
    """16 kHz int16 speech as a carrier delivers it: telephone band, 8 kHz, G.711 mu-law."""
    band = sosfilt(PHONE_BAND, audio_16k.astype(np.float64) / 32768)
    narrow = soxr.resample(band.astype(np.float32), 16_000, LINE_RATE)
    return audioop.lin2ulaw((np.clip(narrow, -1, 1) * 32767).astype(np.int16).tobytes(), 2)


def from_line(ulaw: bytes, resampler: soxr.ResampleStream) -> np.ndarray:
    """mu-law 8 kHz from the bot → 16 kHz int16 (`resampler`: the stream's, across its chunks)."""
    pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16).astype(np.float32) / 32768
    return (np.clip(resampler.resample_chunk(pcm), -1, 1) * 32767).astype(np.int16)


@dataclass(frozen=True)
class CarrierAccount:
    """What the carrier holds and the bot is given: Twilio's auth token, or Telnyx's key pair."""

    name: str
    secret: str

    @classmethod
    def new(cls, name: str) -> CarrierAccount:
        if name == "telnyx":
            from nacl.signing import SigningKey

            return cls(name, base64.b64encode(bytes(SigningKey.generate())).decode())
        return cls(name, secrets.token_hex(16))

    @property
    def bot_env(self) -> dict[str, str]:
        """The bot's environment for this account."""
        if self.name == "telnyx":
            from nacl.signing import SigningKey

            key = SigningKey(base64.b64decode(self.secret)).verify_key
            return {"TELNYX_PUBLIC_KEY": base64.b64encode(bytes(key)).decode()}
        return {"TWILIO_AUTH_TOKEN": self.secret}

    def signed_webhook(self, url: str, call_id: str) -> tuple[bytes, dict[str, str]]:
        """The incoming-call webhook's form body and headers, signed for `url`."""
        fields = {"CallSid": call_id, "From": "+15550100", "To": "+15550199", "CallStatus": "ringing"}
        body = urlencode(fields).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.name == "telnyx":
            from nacl.signing import SigningKey

            timestamp = str(int(time.time()))
            signed = SigningKey(base64.b64decode(self.secret)).sign(f"{timestamp}|{body.decode()}".encode())
            headers |= {
                "telnyx-timestamp": timestamp,
                "telnyx-signature-ed25519": base64.b64encode(signed.signature).decode(),
            }
        else:
            from twilio.request_validator import RequestValidator

            headers["X-Twilio-Signature"] = RequestValidator(self.secret).compute_signature(url, fields)
        return body, headers

    def start_message(self, stream_id: str, call_id: str, token: str) -> dict[str, Any]:
        if self.name == "telnyx":
            return {
                "event": "start", "sequence_number": "1", "stream_id": stream_id,
                "start": {
                    "call_control_id": call_id, "from": "+15550100", "to": "+15550199",
                    "custom_parameters": {TOKEN_PARAMETER: token},
                    "media_format": {"encoding": "PCMU", "sample_rate": LINE_RATE, "channels": 1},
                },
            }  # fmt: skip
        return {
            "event": "start", "sequenceNumber": "1", "streamSid": stream_id,
            "start": {
                "streamSid": stream_id, "callSid": call_id, "accountSid": "AC" + "0" * 32, "tracks": ["inbound"],
                "customParameters": {TOKEN_PARAMETER: token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": LINE_RATE, "channels": 1},
            },
        }  # fmt: skip

    def connected_message(self) -> dict[str, Any]:
        if self.name == "telnyx":
            return {"event": "connected", "version": "1.0.0"}
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


class PhoneCallClient(VoiceClient):
    """One phone call to the bot, placed the way Twilio or Telnyx places it."""

    def __init__(
        self, base_url: str, account: CarrierAccount, public_host: str, transcripts: Path | None = None
    ) -> None:
        super().__init__()
        self.base_url, self.account, self.public_host = base_url.rstrip("/"), account, public_host
        self.call_id = ("CA" if account.name == "twilio" else "v3:") + secrets.token_hex(16)
        self.stream_id = secrets.token_hex(16)
        self.transcript = transcripts / f"{file_name(self.call_id)}.jsonl" if transcripts else None
        self.clears: list[float] = []
        self.token: str | None = None
        self._pending = np.zeros(0, dtype=np.uint8)
        self._drained = asyncio.Event()
        self._drained.set()
        self.last_sent_at = 0.0
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task] = []
        self._sequence = 1

    async def answer(self) -> tuple[int, str]:
        """The carrier's webhook request for this call: (status, body)."""
        url = f"https://{self.public_host}/"
        body, headers = self.account.signed_webhook(url, self.call_id)
        async with aiohttp.ClientSession() as http, http.post(f"{self.base_url}/", data=body, headers=headers) as r:
            return r.status, await r.text()

    async def connect(self, token: str | None = None) -> None:
        """The webhook, then the stream it names; `token` overrides the one it issued (tests)."""
        status, xml = await self.answer()
        if status != 200:
            raise PermissionError(f"webhook answered {status}: {xml}")
        stream = ElementTree.fromstring(xml).find("./Connect/Stream")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        self.token = parameters[TOKEN_PARAMETER]
        await self.open_stream(urlparse(stream.get("url")).path, self.token if token is None else token)

    async def open_stream(self, path: str, token: str) -> None:
        """The media WebSocket at `path` on the bot (what the TLS proxy in front of it forwards to)."""
        if self._http is not None:
            await self._http.close()
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.base_url.replace("http", "ws", 1) + path)
        await self._send(self.account.connected_message())
        await self._send(self.account.start_message(self.stream_id, self.call_id, token))
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._speak())]
        if self.transcript:
            self._tasks.append(asyncio.create_task(self._follow_transcript()))

    async def say(self, audio_16k: np.ndarray) -> float:
        """Speak in real time; returns when the speech in it ended (its last voiced 20 ms was sent)."""
        line = np.frombuffer(phone_line(audio_16k), dtype=np.uint8)
        self._pending = np.concatenate([self._pending, line])
        self._drained = asyncio.Event()
        await self._drained.wait()
        return self.last_sent_at - (len(audio_16k) / 16_000 - speech_bounds(audio_16k)[1])

    async def press(self, digits: str) -> None:
        """Keypad presses, as `dtmf` messages 150 ms apart."""
        for digit in digits:
            await self._send({"event": "dtmf", **self._stream(), "dtmf": {"digit": digit, "track": "inbound_track"}})
            await asyncio.sleep(0.15)

    async def hang_up(self) -> None:
        """The caller hangs up: `stop`, then the carrier closes the stream."""
        call = {"call_control_id": self.call_id} if self.account.name == "telnyx" else {"callSid": self.call_id}
        await self._send({"event": "stop", **self._stream(), "stop": call})
        await self.close()

    async def wait_for_close(self, timeout: float) -> int | None:
        """The close code once the bot has closed the stream, None if it has not within `timeout`."""
        deadline = time.monotonic() + timeout
        while self._ws is not None and not self._ws.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self._ws.close_code if self._ws is not None and self._ws.closed else None

    async def close(self) -> None:
        self._drained.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()

    def _stream(self) -> dict[str, str]:
        return {"stream_id": self.stream_id} if self.account.name == "telnyx" else {"streamSid": self.stream_id}

    async def _send(self, message: dict[str, Any]) -> None:
        self._sequence += 1
        number = {"sequence_number" if self.account.name == "telnyx" else "sequenceNumber": str(self._sequence)}
        await self._ws.send_str(json.dumps({**number, **message}))

    async def _speak(self) -> None:
        """One 20 ms `media` message every 20 ms: queued speech, else silence (a line never pauses)."""
        try:
            await self._stream_media()
        finally:
            self._drained.set()  # a closed stream plays nothing more: `say` returns

    async def _stream_media(self) -> None:
        silence = bytes([0xFF]) * CHUNK  # mu-law zero
        started, sent = time.monotonic(), 0
        while not self._ws.closed:
            chunk = silence
            if len(self._pending):
                chunk, self._pending = self._pending[:CHUNK].tobytes(), self._pending[CHUNK:]
                chunk += silence[len(chunk) :]
                self.last_sent_at = time.monotonic()
                if not len(self._pending):
                    self._drained.set()
            media = {"track": "inbound", "chunk": str(sent + 1), "timestamp": str(sent * 20)}
            await self._send(
                {"event": "media", **self._stream(), "media": {**media, "payload": base64.b64encode(chunk).decode()}}
            )
            sent += 1
            await asyncio.sleep(max(0.0, started + sent * 0.02 - time.monotonic()))

    async def _receive(self) -> None:
        played_until, resampler = 0.0, soxr.ResampleStream(LINE_RATE, 16_000, 1, dtype="float32")
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data, now = json.loads(message.data), time.monotonic()
            if data.get("event") == "media":
                audio = from_line(base64.b64decode(data["media"]["payload"]), resampler)
                self.audio.add(now, audio)
                played_until = max(played_until, now) + len(audio) / 16_000
            elif data.get("event") == "clear":
                self.clears.append(now)
                played_until = now
            elif data.get("event") == "mark":
                self._tasks.append(asyncio.create_task(self._mark(data["mark"], max(0.0, played_until - now))))
        self.ended_at = self.ended_at or time.monotonic()

    async def _mark(self, mark: dict[str, Any], after_s: float) -> None:
        """A mark goes back once the audio sent before it has played."""
        await asyncio.sleep(after_s)
        if self._ws is not None and not self._ws.closed:
            await self._send({"event": "mark", **self._stream(), "mark": mark})

    async def _follow_transcript(self) -> None:
        """The call's transcript lines as they are written, as the `server-message`s they stand for."""
        offset = 0
        while True:
            if self.transcript.exists():
                with self.transcript.open("rb") as f:
                    f.seek(offset)
                    for line in f:
                        if not line.endswith(b"\n"):
                            break
                        offset += len(line)
                        record = json.loads(line)
                        if kind := TRANSCRIPT_EVENTS.get(record.get("event")):
                            data = {**record, "type": kind}
                            self.messages.append((time.monotonic(), {"type": "server-message", "data": data}))
            await asyncio.sleep(0.05)


@contextmanager
def phone_bot(carrier: str, folder: Path) -> Iterator[Callable[[], PhoneCallClient]]:
    """`bot.py -t carrier` on a free loopback port, on the model servers its settings name (the local
    stack's by default), trusting a new account and writing transcripts to `folder`; yields a
    factory of calls to it."""
    account, public_host = CarrierAccount.new(carrier), "phone.localhost"
    folder.mkdir(parents=True, exist_ok=True)
    env = account.bot_env | {"BOT_TRANSCRIPTS": str(folder)}
    bot = LocalServer("bot", ["-t", carrier, "-x", public_host], folder / "bot.log", health="/status", env=env)
    bot.run()
    try:
        yield lambda: PhoneCallClient(bot.http_url, account, public_host, folder)
    finally:
        bot.stop()
