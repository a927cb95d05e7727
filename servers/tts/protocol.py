"""The TTS server's wire protocol, imported by both the server and the Pipecat client.

One WebSocket per client session; within it, each reply is a *context* named by the client.

client → server (JSON text frames)
  {"type": "start", "context_id": "c1", "voice": "joe", "language": "en"}   voice/language optional
  {"type": "text", "context_id": "c1", "text": "Hello there. "}     as the LLM produces it
  {"type": "flush", "context_id": "c1"}     no more text: speak what is queued, then `done`
  {"type": "cancel", "context_id": "c1"}    stop now: no audio for c1 follows the `done`
  {"type": "mark", "context_id": "c1", "id": "m1"}   speak what came before, then echo the mark

server → client
  {"type": "ready", "protocol": 1, "engine": "piper", "sample_rate": 22050, "voices": [...], "languages": [...]}
  binary frames: audio, see `pack_audio` (context id + PCM s16le mono at `sample_rate`)
  {"type": "segment_done", "context_id": "c1", "index": 0, "text": "It costs twenty dollars.",
   "written": "It costs $20.", "audio_ms": 812.0}    text as spoken, and as the client wrote it
  {"type": "mark", "context_id": "c1", "id": "m1"}   everything sent before m1 is synthesized
  {"type": "done", "context_id": "c1", "audio_ms": 2310.0, "cancelled": false}
  {"type": "error", "code": "unknown_context", "message": "...", "context_id": "c1"}   session stays open

A `text` for a context that was never started starts it with the session defaults. Contexts are
spoken in the order they were started; starting one flushes any earlier context still open.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from servers import wire
from servers.wire import Message, ProtocolError, by_type, parse_message

PROTOCOL_VERSION = 1
MAX_TEXT_CHARS = 4_000
"""One `text` message; an LLM sends a sentence at a time."""
MAX_PENDING_CHARS = 20_000
"""Text queued and not yet spoken in one context."""
MAX_MESSAGE_BYTES = 64 * 1024
MAX_CONTEXT_ID_CHARS = 128


class ErrorCode(StrEnum):
    """The `code` of an error message."""

    BAD_JSON = wire.BAD_JSON
    BAD_MESSAGE = wire.BAD_MESSAGE
    UNKNOWN_TYPE = wire.UNKNOWN_TYPE
    TEXT_TOO_LONG = "text_too_long"
    UNKNOWN_VOICE = "unknown_voice"
    UNKNOWN_LANGUAGE = "unknown_language"
    UNKNOWN_CONTEXT = "unknown_context"
    CONTEXT_CLOSED = "context_closed"
    BINARY_NOT_ACCEPTED = "binary_not_accepted"
    INTERNAL = "internal"


@dataclass(frozen=True)
class Start(Message):
    """Client → server: a new context (one reply), with its voice and language."""

    type: ClassVar[str] = "start"
    context_id: str
    voice: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class Text(Message):
    """Client → server: more text of a context, as the LLM streams it."""

    type: ClassVar[str] = "text"
    context_id: str
    text: str


@dataclass(frozen=True)
class Flush(Message):
    """Client → server: the context's text is complete; speak the rest."""

    type: ClassVar[str] = "flush"
    context_id: str


@dataclass(frozen=True)
class Cancel(Message):
    """Client → server: stop the context (barge-in); no more audio for it."""

    type: ClassVar[str] = "cancel"
    context_id: str


@dataclass(frozen=True)
class Mark(Message):
    """Both ways: the client asks, the server echoes it once the audio before it is synthesized."""

    type: ClassVar[str] = "mark"
    context_id: str
    id: str


@dataclass(frozen=True)
class Ready(Message):
    """Server → client, first: the model is loaded; engine, sample rate, voices, languages, protocol."""

    type: ClassVar[str] = "ready"
    engine: str
    sample_rate: int
    voices: list[str]
    languages: list[str]
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class SegmentDone(Message):
    """Server → client: one segment's audio is sent; its text and duration."""

    type: ClassVar[str] = "segment_done"
    context_id: str
    index: int
    text: str
    audio_ms: float
    written: str = ""


@dataclass(frozen=True)
class Done(Message):
    """Server → client: a flushed context has been spoken to its end."""

    type: ClassVar[str] = "done"
    context_id: str
    audio_ms: float
    cancelled: bool = False


@dataclass(frozen=True)
class Error(Message):
    """Server → client: a request that was refused, and why."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    context_id: str | None = None


CLIENT_MESSAGES = by_type(Start, Text, Flush, Cancel, Mark)
SERVER_MESSAGES = by_type(Ready, SegmentDone, Mark, Done, Error)


def parse_client_message(raw: str | bytes) -> Message:
    """Parse and validate a client frame; raises ProtocolError with the code to answer."""
    message = parse_message(raw, CLIENT_MESSAGES)
    context_id = message.context_id
    if not isinstance(context_id, str) or not 0 < len(context_id) <= MAX_CONTEXT_ID_CHARS:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f'"context_id" must be a string of 1-{MAX_CONTEXT_ID_CHARS} characters'
        )
    if isinstance(message, Text):
        if not isinstance(message.text, str):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, '"text" must be a string', context_id)
        if len(message.text) > MAX_TEXT_CHARS:
            raise ProtocolError(
                ErrorCode.TEXT_TOO_LONG, f"text of {len(message.text)} characters exceeds {MAX_TEXT_CHARS}", context_id
            )
    if isinstance(message, Start):
        for name in ("voice", "language"):
            if getattr(message, name) is not None and not isinstance(getattr(message, name), str):
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f'"{name}" must be a string', context_id)
    return message


def parse_server_message(raw: str | bytes) -> Message:
    return parse_message(raw, SERVER_MESSAGES)


_HEADER = struct.Struct("<H")


def pack_audio(context_id: str, pcm: bytes) -> bytes:
    """Binary audio frame: uint16 LE length of the UTF-8 context id, the id, then PCM s16le."""
    cid = context_id.encode()
    return _HEADER.pack(len(cid)) + cid + pcm


def unpack_audio(frame: bytes) -> tuple[str, bytes]:
    (n,) = _HEADER.unpack_from(frame)
    return frame[2 : 2 + n].decode(), frame[2 + n :]
