"""One bot per call: the Playground's WebRTC signalling, answered by a worker that runs only that call.

Pipecat's runner answers the offer in the process that then runs the call, so a server of many calls
is one process that a redeploy takes down with all of them. Here a stateless signalling app (any
number of copies) starts a call worker per call (`start_call`) and relays the call's offer and ICE
candidates to it through a `Mailbox` (on Modal a `modal.Queue`, `modal_app.py`); the worker answers
with Pipecat's own `SmallWebRTCRequestHandler` and runs our `bot()` for that one connection.

Routes (those of Pipecat's runner that the Playground and `benchmarks/webrtc_client.py` use):
`GET /` → `/client/` (the Playground), `GET /status`, `POST /start` → `{sessionId, iceConfig}`,
`POST|PATCH /sessions/{id}/api/offer` (offer, ICE candidates), `POST /api/offer` (a call in one request).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse
from loguru import logger

ANSWER_TIMEOUT_S = 120.0
"""How long an offer waits for its worker's answer (a cold worker included); Modal cuts requests at 150 s."""
OFFER_WAIT_S = 60.0
"""How long a started worker waits for the call's first offer before it gives up."""


class Mailbox(Protocol):
    """Messages between the signalling app and call workers, by partition (one inbox per call, one
    reply partition per request)."""

    async def send(self, partition: str, message: dict[str, Any]) -> None: ...

    async def receive(self, partition: str, timeout: float) -> dict[str, Any] | None:
        """The next message of `partition`, or None after `timeout` seconds."""

    async def clear(self, partition: str) -> None: ...


StartCall = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Start the worker of call `session_id` with the client's `body` (returns once it is started)."""
BotEntry = Callable[[Any], Awaitable[None]]
"""`bot.bot`: runs one call given Pipecat's SmallWebRTCRunnerArguments."""


def inbox(session_id: str) -> str:
    return f"{session_id}:in"


def signalling_app(
    mailbox: Mailbox,
    start_call: StartCall,
    ice_servers: list[dict[str, Any]],
    answer_timeout_s: float = ANSWER_TIMEOUT_S,
) -> FastAPI:
    """The web side: serves the Playground, starts a worker per call, relays its signalling."""
    app = FastAPI(title="voice agent signalling")
    try:
        from pipecat_ai_prebuilt.frontend import PipecatPrebuiltUI

        app.mount("/client", PipecatPrebuiltUI)
    except ImportError:
        logger.warning("pipecat-ai-prebuilt not installed: no Playground at /client")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(url="/client/")

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return {"status": "ready", "transports": ["webrtc"]}

    @app.post("/start")
    async def start(request: Request) -> dict[str, Any]:
        data = await _json(request)
        if data.get("transport", "webrtc") != "webrtc":
            raise HTTPException(400, f"transport {data.get('transport')!r} is not served here (webrtc only)")
        session_id = str(uuid.uuid4())
        await start_call(session_id, data.get("body") or {})
        result: dict[str, Any] = {"sessionId": session_id}
        if ice_servers:
            result["iceConfig"] = {"iceServers": ice_servers}
        return result

    @app.post("/api/offer")
    async def offer_new_call(request: Request) -> dict[str, Any]:
        data = await _json(request)
        session_id = str(uuid.uuid4())
        await start_call(session_id, data.get("request_data") or data.get("requestData") or {})
        return await relay_offer(session_id, data)

    @app.post("/sessions/{session_id}/api/offer")
    async def offer(session_id: str, request: Request) -> dict[str, Any]:
        return await relay_offer(_checked(session_id), await _json(request))

    @app.patch("/sessions/{session_id}/api/offer")
    async def ice_candidates(session_id: str, request: Request) -> dict[str, str]:
        data = await _json(request)
        candidates = data.get("candidates") or []
        if (
            not isinstance(data.get("pc_id"), str)
            or not isinstance(candidates, list)
            or not all(map(_is_candidate, candidates))
        ):
            raise HTTPException(400, "expected {pc_id, candidates: [{candidate, sdp_mid, sdp_mline_index}]}")
        message = {"op": "ice", "pc_id": data["pc_id"], "candidates": candidates}
        await mailbox.send(inbox(_checked(session_id)), message)
        return {"status": "success"}

    async def relay_offer(session_id: str, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data.get("sdp"), str) or data.get("type") != "offer":
            raise HTTPException(400, "expected {sdp, type: 'offer'}")
        reply_to = f"{session_id}:{uuid.uuid4().hex[:8]}"
        fields = ("sdp", "type", "pc_id", "restart_pc")
        message = {"op": "offer", "reply_to": reply_to, **{k: data.get(k) for k in fields}}
        message["request_data"] = data.get("request_data") or data.get("requestData")
        await mailbox.send(inbox(session_id), message)
        reply = await mailbox.receive(reply_to, answer_timeout_s)
        if reply is None:
            raise HTTPException(504, f"call {session_id} did not answer within {answer_timeout_s:.0f} s")
        if reply["status"] != 200:
            raise HTTPException(reply["status"], reply["detail"])
        return reply["answer"]

    return app


def _checked(session_id: str) -> str:
    """Session ids are the UUIDs /start hands out (they name mailbox partitions: bounded, no surprises)."""
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        raise HTTPException(400, "not a session id") from None


def _is_candidate(candidate: Any) -> bool:
    return (
        isinstance(candidate, dict) and isinstance(candidate.get("candidate"), str)
        and isinstance(candidate.get("sdp_mid"), str | None)
        and isinstance(candidate.get("sdp_mline_index"), int | None)
    )  # fmt: skip


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "the body is not a JSON object")
    return data


async def serve_call(
    mailbox: Mailbox,
    session_id: str,
    body: dict[str, Any],
    ice_servers: list[dict[str, Any]],
    bot: BotEntry,
    offer_wait_s: float = OFFER_WAIT_S,
) -> None:
    """The worker side: answer this call's offers and ICE candidates, run the bot until the call ends."""
    from pipecat.runner.types import SmallWebRTCRunnerArguments
    from pipecat.transports.smallwebrtc.connection import IceServer
    from pipecat.transports.smallwebrtc.request_handler import (
        ConnectionMode,
        IceCandidate,
        SmallWebRTCPatchRequest,
        SmallWebRTCRequest,
        SmallWebRTCRequestHandler,
    )

    handler = SmallWebRTCRequestHandler(
        ice_servers=[IceServer(**s) for s in ice_servers] or None, connection_mode=ConnectionMode.SINGLE
    )
    call: asyncio.Task | None = None
    started = asyncio.Event()

    async def start_bot(connection: Any) -> None:
        nonlocal call
        arguments = SmallWebRTCRunnerArguments(webrtc_connection=connection, body=body, session_id=session_id)
        call = asyncio.create_task(bot(arguments), name=f"call-{session_id}")

    async def answer(message: dict[str, Any]) -> dict[str, Any]:
        nonlocal call
        request = SmallWebRTCRequest(
            sdp=message["sdp"], type=message["type"], pc_id=message.get("pc_id"),
            restart_pc=message.get("restart_pc"), request_data=message.get("request_data") or body,
        )  # fmt: skip
        first = call is None
        try:
            return {"status": 200, "answer": await handler.handle_web_request(request, start_bot)}
        except Exception as e:
            if first and call is not None:  # a bot on a connection that was never answered: drop it
                call.cancel()
                call = None
            if isinstance(e, HTTPException):
                return {"status": e.status_code, "detail": e.detail}
            logger.exception(f"call {session_id}: offer failed")
            return {"status": 500, "detail": f"offer failed: {e}"}
        finally:
            if call is not None:
                started.set()

    async def add_candidates(message: dict[str, Any]) -> None:
        candidates = [IceCandidate(c["candidate"], c["sdp_mid"], c["sdp_mline_index"]) for c in message["candidates"]]
        try:
            await handler.handle_patch_request(SmallWebRTCPatchRequest(pc_id=message["pc_id"], candidates=candidates))
        except HTTPException as e:
            logger.warning(f"call {session_id}: ICE candidates for {message['pc_id']}: {e.detail}")

    async def next_message() -> dict[str, Any] | None:
        try:
            return await mailbox.receive(inbox(session_id), offer_wait_s if call is None else 30.0)
        except Exception:
            logger.exception(f"call {session_id}: mailbox read failed")
            await asyncio.sleep(1.0)
            return None

    async def relay() -> None:
        deadline = asyncio.get_running_loop().time() + offer_wait_s
        while True:
            message = await next_message()
            if message is None:
                if call is None and asyncio.get_running_loop().time() >= deadline:
                    logger.warning(f"call {session_id}: no offer within {offer_wait_s:.0f} s; giving up")
                    return
                continue
            try:
                if message.get("op") == "offer":
                    await mailbox.send(message["reply_to"], await answer(message))
                elif message.get("op") == "ice":
                    await add_candidates(message)
            except Exception:  # one bad message never ends the call's signalling
                logger.exception(f"call {session_id}: cannot handle a {message.get('op')!r} message")

    relaying = asyncio.create_task(relay(), name=f"signalling-{session_id}")
    waiting = asyncio.create_task(started.wait())
    try:
        await asyncio.wait({relaying, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if call is not None:
            await call
    finally:
        relaying.cancel()
        waiting.cancel()
        await handler.close()
        await mailbox.clear(inbox(session_id))
        logger.info(f"call {session_id}: ended")
