"""The ASR server's wire protocol, imported by both the server and the Pipecat client.

One WebSocket per client session:

client → server
  binary frames                 PCM s16le, 16 kHz, mono; at most MAX_AUDIO_FRAME_BYTES each
  {"type": "finalize", "hard": false}   soft: the user probably stopped (VAD); start decoding now
  {"type": "finalize", "hard": true}    the user stopped: answer with one `final`
  {"type": "reopen"}                    the user went on in the same turn: the next `final` covers the
                                        last one's words too, decoded again with what follows as one
  {"type": "reset"}                     drop the utterance in progress and any carried context

server → client
  {"type": "ready", "protocol": 2, "engine": "whisper", "sample_rate": 16000}   once, first
  {"type": "interim", "text": "..."}                       while the user speaks
  {"type": "final", "text": "...", "latency_ms": 12.3, "audio_ms": 2400.0}
        the answer to each hard finalize (empty if the engine failed: an `error` follows);
        latency_ms = hard finalize received → final sent
  {"type": "error", "code": "bad_audio", "message": "..."}   the session stays open

Audio sent before `ready` is rejected with `not_ready`. Every message is a small JSON object
with a "type" field; unknown types get `unknown_type`, non-JSON text gets `bad_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from servers import wire
from servers.wire import Message, ProtocolError, by_type, parse_message

PROTOCOL_VERSION = 2
SAMPLE_RATE = 16_000
MAX_AUDIO_FRAME_BYTES = 64_000
"""2 s of audio: clients send 10-100 ms frames; anything bigger is a client bug."""
MAX_MESSAGE_BYTES = 1 << 20
"""WebSocket frames above this are refused by the transport with close code 1009."""


class ErrorCode(StrEnum):
    """The `code` of an error message."""

    BAD_JSON = wire.BAD_JSON
    BAD_MESSAGE = wire.BAD_MESSAGE
    UNKNOWN_TYPE = wire.UNKNOWN_TYPE
    BAD_AUDIO = "bad_audio"
    FRAME_TOO_LARGE = "frame_too_large"
    NOT_READY = "not_ready"
    INTERNAL = "internal"


@dataclass(frozen=True)
class Ready(Message):
    """Server → client, first: the model is loaded; engine, audio format, protocol version."""

    type: ClassVar[str] = "ready"
    engine: str
    sample_rate: int = SAMPLE_RATE
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Interim(Message):
    """Server → client: the words so far, which may still change."""

    type: ClassVar[str] = "interim"
    text: str


@dataclass(frozen=True)
class Final(Message):
    """Server → client: the finalized words of an utterance."""

    type: ClassVar[str] = "final"
    text: str
    latency_ms: float
    audio_ms: float


@dataclass(frozen=True)
class Error(Message):
    """Server → client: a request or frame that was refused, and why."""

    type: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True)
class Finalize(Message):
    """Client → server: the speech ended; send the final transcript now."""

    type: ClassVar[str] = "finalize"
    hard: bool


@dataclass(frozen=True)
class Reopen(Message):
    """Client → server: the last final was not the turn's end; decode it again with what follows."""

    type: ClassVar[str] = "reopen"


@dataclass(frozen=True)
class Reset(Message):
    """Client → server: forget the audio so far."""

    type: ClassVar[str] = "reset"


SERVER_MESSAGES = by_type(Ready, Interim, Final, Error)
CLIENT_MESSAGES = by_type(Finalize, Reopen, Reset)


def parse_client_message(raw: str | bytes) -> Message:
    """Parse a text frame from a client; raises ProtocolError with the code to answer."""
    message = parse_message(raw, CLIENT_MESSAGES)
    if isinstance(message, Finalize) and not isinstance(message.hard, bool):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, '"hard" must be true or false')
    return message


def parse_server_message(raw: str | bytes) -> Message:
    """Parse a text frame from the server (used by clients)."""
    return parse_message(raw, SERVER_MESSAGES)


def check_audio_frame(frame: bytes) -> None:
    """Raise ProtocolError unless `frame` is a plausible PCM s16le chunk."""
    if len(frame) > MAX_AUDIO_FRAME_BYTES:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"audio frame of {len(frame)} bytes exceeds {MAX_AUDIO_FRAME_BYTES}; send ≤ 2 s per frame",
        )
    if len(frame) % 2:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"odd audio frame length {len(frame)}: expected s16le samples")
