"""Phone calls: Twilio and Telnyx media streams into the bot, one pipeline per call.

    python bot.py -t twilio -x bot.example.com     carrier webhook: https://bot.example.com/
    python bot.py -t telnyx -x bot.example.com

A call starts with the carrier asking the webhook (`POST /`) what to do. The webhook checks the
request's signature with the carrier's own SDK and answers with stream instructions (TwiML / TeXML)
that carry a one-time token; the carrier then opens the media WebSocket (`/ws`) and its `start`
message must bring that token back within `STREAM_TOKEN_TTL_S`. Nobody else gets a pipeline: an
unsigned webhook gets 403, a stream without a fresh token is closed. Audio is 8 kHz mu-law both
ways (Pipecat's serializers, unmodified); an interruption sends the carrier `clear`; when the bot
ends the call its WebSocket closes (the call then hangs up: nothing follows `<Connect>`), and with
the account's API credentials the serializer also hangs up through the carrier's REST API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response
from loguru import logger
from pipecat.serializers.base_serializer import FrameSerializer

STREAM_TOKEN_TTL_S = 30.0
"""A carrier opens the stream within a second or two of the webhook's answer."""
MAX_PENDING_STREAMS = 1000
"""Tokens issued and not yet redeemed; a webhook flood past this gets 503, not memory."""
START_TIMEOUT_S = 10.0
"""How long a media WebSocket may take to send its `start` message."""
MAX_WEBHOOK_BYTES = 64 * 1024
"""A carrier's webhook is a few hundred bytes of form fields."""
TOKEN_PARAMETER = "stream_token"
"""The `<Parameter>` of the stream instructions that carries the one-time token."""


class WebhookRejected(Exception):
    """A webhook request that is not the carrier's (bad or missing signature)."""


class PhoneSetupError(RuntimeError):
    """Phone calls cannot be served as configured (a missing secret or public host)."""


@dataclass(frozen=True)
class StreamStart:
    """What a media stream's `start` message says about its call."""

    stream_id: str
    call_id: str
    token: str
    encoding: str


def file_name(call_id: str) -> str:
    """A carrier's call id as a file name: a call's transcript is named by it."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", call_id)[-64:] or "call"


class StreamTokens:
    """One-time stream tokens with a short life: the webhook issues, the media WebSocket redeems.
    Kept in this process; `modal_app.SharedStreamTokens` keeps them where every container sees them."""

    def __init__(self, ttl_s: float = STREAM_TOKEN_TTL_S, capacity: int = MAX_PENDING_STREAMS, clock=time.time) -> None:
        self.ttl_s, self.capacity, self.clock = ttl_s, capacity, clock
        self._expiry: dict[str, float] = {}

    async def issue(self) -> str | None:
        """A new token, or None while `capacity` unexpired ones wait."""
        now = self.clock()
        self._expiry = {token: t for token, t in self._expiry.items() if t > now}
        if len(self._expiry) >= self.capacity:
            return None
        token = secrets.token_urlsafe(24)
        self._expiry[token] = now + self.ttl_s
        return token

    async def redeem(self, token: str) -> bool:
        """Whether `token` was issued, is unexpired and unused (it is used now)."""
        expiry = self._expiry.pop(token, None)
        return expiry is not None and expiry > self.clock()


def stream_instructions(stream_url: str, token: str, **stream_attributes: str) -> str:
    """`<Response><Connect><Stream url=…><Parameter name="stream_token" …/>`: TwiML and TeXML alike.
    Nothing follows `<Connect>`, so the call ends when the stream does."""
    response = ElementTree.Element("Response")
    stream = ElementTree.SubElement(
        ElementTree.SubElement(response, "Connect"), "Stream", url=stream_url, **stream_attributes
    )
    ElementTree.SubElement(stream, "Parameter", name=TOKEN_PARAMETER, value=token)
    return ElementTree.tostring(response, encoding="unicode", xml_declaration=True)


class Carrier(ABC):
    """One carrier's webhook signature, stream instructions, `start` message and serializer."""

    name: str

    @abstractmethod
    def verify(self, url: str, headers: Mapping[str, str], body: bytes) -> None:
        """Raise WebhookRejected unless the carrier signed this request to `url`."""

    @abstractmethod
    def instructions(self, stream_url: str, token: str) -> str:
        """The webhook's answer: open a bidirectional stream to `stream_url` with `token`."""

    @abstractmethod
    def parse_start(self, message: dict[str, Any]) -> StreamStart:
        """The call's ids and token from its `start` message (KeyError/TypeError/ValueError when malformed)."""

    @abstractmethod
    def serializer(self, start: StreamStart) -> FrameSerializer:
        """Pipecat's serializer for this stream."""


class Twilio(Carrier):
    """Twilio Programmable Voice: TwiML `<Connect><Stream>`, `X-Twilio-Signature` (HMAC-SHA1 with the
    auth token, Twilio's `RequestValidator`). `TWILIO_ACCOUNT_SID` lets the serializer hang up."""

    name = "twilio"

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        from twilio.request_validator import RequestValidator

        self._auth_token = environ.get("TWILIO_AUTH_TOKEN", "")
        if not self._auth_token:
            raise PhoneSetupError("Twilio calls need TWILIO_AUTH_TOKEN: it checks that webhooks come from Twilio")
        self._account_sid = environ.get("TWILIO_ACCOUNT_SID", "")
        self._validator = RequestValidator(self._auth_token)

    def verify(self, url: str, headers: Mapping[str, str], body: bytes) -> None:
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if not self._validator.validate(url, params, headers.get("x-twilio-signature", "")):
            raise WebhookRejected("no valid X-Twilio-Signature")

    def instructions(self, stream_url: str, token: str) -> str:
        return stream_instructions(stream_url, token)

    def parse_start(self, message: dict[str, Any]) -> StreamStart:
        start = message["start"]
        parameters = start.get("customParameters") or {}
        return StreamStart(
            stream_id=str(start["streamSid"]), call_id=str(start["callSid"]),
            token=str(parameters.get(TOKEN_PARAMETER, "")), encoding="PCMU",
        )  # fmt: skip

    def serializer(self, start: StreamStart) -> FrameSerializer:
        from pipecat.serializers.twilio import TwilioFrameSerializer

        hang_up = bool(self._account_sid)
        return TwilioFrameSerializer(
            stream_sid=start.stream_id,
            call_sid=start.call_id,
            account_sid=self._account_sid or None,
            auth_token=self._auth_token if hang_up else None,
            params=TwilioFrameSerializer.InputParams(auto_hang_up=hang_up),
        )


class Telnyx(Carrier):
    """Telnyx TeXML `<Connect><Stream bidirectionalMode="rtp">`, signed with Ed25519
    (`telnyx-signature-ed25519` over `timestamp|body`, checked by Telnyx's SDK against the account's
    public key, `TELNYX_PUBLIC_KEY`). `TELNYX_API_KEY` lets the serializer hang up."""

    name = "telnyx"

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._public_key = environ.get("TELNYX_PUBLIC_KEY", "")
        if not self._public_key:
            raise PhoneSetupError(
                "Telnyx calls need TELNYX_PUBLIC_KEY (Mission Control → Keys & Credentials → Public Key): "
                "it checks that webhooks come from Telnyx"
            )
        if len(_b64decode(self._public_key)) != 32:
            raise PhoneSetupError("TELNYX_PUBLIC_KEY is not a base64 Ed25519 public key (32 bytes)")
        self._api_key = environ.get("TELNYX_API_KEY", "")
        from telnyx.lib.webhook_verification import verify_webhook_signature  # the whole SDK: seconds

        self._verify = verify_webhook_signature

    def verify(self, url: str, headers: Mapping[str, str], body: bytes) -> None:
        from telnyx.lib.webhook_verification import WebhookVerificationError

        try:
            self._verify(body, headers, self._public_key)
        except WebhookVerificationError as e:
            raise WebhookRejected(e.message) from None
        except UnicodeDecodeError:
            raise WebhookRejected("the body is not UTF-8") from None

    def instructions(self, stream_url: str, token: str) -> str:
        return stream_instructions(stream_url, token, codec="PCMU", bidirectionalMode="rtp", bidirectionalCodec="PCMU")

    def parse_start(self, message: dict[str, Any]) -> StreamStart:
        start = message["start"]
        parameters = start.get("custom_parameters") or {}
        encoding = str((start.get("media_format") or {}).get("encoding") or "PCMU")
        if encoding not in ("PCMU", "PCMA"):
            raise ValueError(f"Telnyx stream in {encoding}: only PCMU and PCMA are served")
        return StreamStart(
            stream_id=str(message["stream_id"]), call_id=str(start["call_control_id"]),
            token=str(parameters.get(TOKEN_PARAMETER, "")),
            encoding=encoding,
        )  # fmt: skip

    def serializer(self, start: StreamStart) -> FrameSerializer:
        from pipecat.serializers.telnyx import TelnyxFrameSerializer

        hang_up = bool(self._api_key)
        return TelnyxFrameSerializer(
            stream_id=start.stream_id,
            outbound_encoding=start.encoding,  # Pipecat's names: what Telnyx sends us
            inbound_encoding="PCMU",  # what we send (bidirectionalCodec)
            call_control_id=start.call_id,
            api_key=self._api_key or None,
            params=TelnyxFrameSerializer.InputParams(auto_hang_up=hang_up),
        )


CARRIERS: dict[str, type[Carrier]] = {"twilio": Twilio, "telnyx": Telnyx}

RunCall = Callable[[WebSocket, FrameSerializer, StreamStart], Awaitable[None]]
"""Runs one call on an accepted media WebSocket with its serializer (bot.py's `run_phone_call`)."""


def add_phone_routes(
    app: FastAPI, carrier: Carrier, public_host: str | None, run_call: RunCall, tokens: StreamTokens | None = None
) -> None:
    """The carrier's webhook (`POST /`) and media stream (`/ws`); added before Pipecat's runner adds
    its own (unsigned, tokenless) routes of the same paths, so these are the ones that answer.
    `public_host` None: the request's own Host (behind a proxy that sets it, as Modal's does)."""
    tokens = tokens or StreamTokens()

    @app.post("/")
    async def answer_call(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            return PlainTextResponse("webhook body too large", status_code=413)
        host = public_host or request.headers.get("host", "")
        url = f"https://{host}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        try:
            carrier.verify(url, request.headers, body)
        except WebhookRejected as e:
            logger.warning(f"{carrier.name} webhook refused from {_peer(request)}: {e}")
            return PlainTextResponse("forbidden", status_code=403)
        token = await tokens.issue()
        if token is None:
            logger.warning(f"{carrier.name} webhook: {tokens.capacity} streams pending; refusing a call")
            return PlainTextResponse("busy", status_code=503)
        return Response(carrier.instructions(f"wss://{host}/ws", token), media_type="application/xml")

    @app.websocket("/ws")
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            start = await asyncio.wait_for(_read_start(websocket, carrier), START_TIMEOUT_S)
        except (TimeoutError, ValueError) as e:
            logger.warning(f"{carrier.name} media stream refused: {str(e) or 'no start message in time'}")
            await _close(websocket, 1008)
            return
        if not await tokens.redeem(start.token):
            logger.warning(f"{carrier.name} media stream for call {start.call_id} refused: no valid stream token")
            await _close(websocket, 1008)
            return
        logger.info(f"{carrier.name} call {start.call_id}: stream {start.stream_id} started")
        try:
            await run_call(websocket, carrier.serializer(start), start)
        except Exception:
            logger.exception(f"{carrier.name} call {start.call_id} failed")
            await _close(websocket, 1011)


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None past MAX_WEBHOOK_BYTES (read no further)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            return None
    return body


async def _read_start(websocket: WebSocket, carrier: Carrier) -> StreamStart:
    """The stream's `start` message (after `connected`); ValueError for anything else."""
    for _ in range(3):
        try:
            message = json.loads(await websocket.receive_text())
        except (json.JSONDecodeError, KeyError, RuntimeError, WebSocketDisconnect) as e:
            raise ValueError(f"not a {carrier.name} media stream ({type(e).__name__})") from None
        if isinstance(message, dict) and message.get("event") == "start":
            try:
                return carrier.parse_start(message)
            except (KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"malformed {carrier.name} start message ({type(e).__name__})") from None
    raise ValueError("no start message")


async def _close(websocket: WebSocket, code: int) -> None:
    """Close with `code` (1008: refused, 1011: failed); the peer may have gone already."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=code)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"
