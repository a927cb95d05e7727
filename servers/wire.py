"""What every server's wire protocol shares: JSON messages with a "type", and their parsing."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_TYPE = "unknown_type"


class ProtocolError(ValueError):
    """A message that breaks the protocol; servers answer it with an `error` message carrying `code`."""

    def __init__(self, code: str, message: str, context_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.context_id = context_id


@dataclass(frozen=True)
class Message:
    """A JSON message: its dataclass fields plus "type"."""

    type: ClassVar[str]

    def to_json(self) -> str:
        return json.dumps({"type": self.type, **asdict(self)})


def parse_message(raw: str | bytes, known: dict[str, type[Message]]) -> Message:
    """Parse one JSON text frame into the dataclass its "type" names; raises ProtocolError."""
    try:
        data: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(BAD_JSON, f"not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError(BAD_MESSAGE, 'expected a JSON object with a string "type"')
    kind = data.pop("type")
    cls = known.get(kind)
    if cls is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind!r}")
    try:
        return cls(**data)
    except TypeError as e:
        raise ProtocolError(BAD_MESSAGE, f"bad {kind!r} message: {e}") from None


def by_type(*messages: type[Message]) -> dict[str, type[Message]]:
    return {m.type: m for m in messages}
