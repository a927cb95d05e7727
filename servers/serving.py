"""What every WebSocket model server owns: one engine loaded once, its sessions and their limits,
GET /health, the token check at the handshake, the serve loop."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from loguru import logger
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from servers import metrics
from servers.auth import is_authorized, load_token

HealthFn = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (ready, details) for GET /health: 200 when ready, 503 while loading."""
AdmitFn = Callable[[ServerConnection], Response | None]
"""At the handshake: None to admit the WebSocket, else the HTTP response that refuses it."""
IDLE_CLOSE_CODE = 4008
"""WebSocket close code of a session with nothing sent either way for `SessionLimits.idle_timeout_s`."""


@dataclass(frozen=True)
class SessionLimits:
    """What one client may take of a server, so that no client can exhaust it for the others."""

    max_sessions: int = 64
    max_sessions_per_client: int = 64
    """The bot is usually a server's only client (one session per call): lower it for a shared LAN server."""
    max_messages_per_s: float = 1000.0
    """Beyond this a session's messages are read more slowly: TCP back-pressure on a flood, no error."""
    idle_timeout_s: float = 600.0
    """A session with nothing sent either way this long is closed (code 4008)."""


class LimitedConnection(ServerConnection):
    """A server connection whose reads are paced (`max_messages_per_s`) and that closes itself when
    nothing went either way for `idle_timeout_s` (a client listening to a long reply is not idle)."""

    limits = SessionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._allowance = self.limits.max_messages_per_s
        self._checked = self._active = time.monotonic()

    async def send(self, *args: Any, **kwargs: Any) -> None:
        self._active = time.monotonic()
        await super().send(*args, **kwargs)

    async def recv(self, decode: bool | None = None) -> Any:
        rate = self.limits.max_messages_per_s
        now = time.monotonic()
        self._allowance = min(rate, self._allowance + (now - self._checked) * rate)
        self._checked = now
        if self._allowance < 1:
            await asyncio.sleep((1 - self._allowance) / rate)
        self._allowance -= 1
        while (idle_left := self._active + self.limits.idle_timeout_s - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(idle_left):  # websockets' recv is safe to cancel
                    message = await super().recv(decode)
            except TimeoutError:
                continue  # something may have been sent meanwhile
            self._active = time.monotonic()
            return message
        logger.info(f"closing {self.remote_address}: idle for {self.limits.idle_timeout_s:.0f} s")
        await self.close(IDLE_CLOSE_CODE, f"idle for {self.limits.idle_timeout_s:.0f} s")
        return await super().recv(decode)  # raises ConnectionClosed, as for any closed session


def refuse(connection: ServerConnection, status: HTTPStatus, why: str, server: str = "model") -> Response:
    logger.warning(f"refused {connection.remote_address[0]}: {why}")
    metrics.REFUSED.labels(server, str(status.value)).inc()
    return connection.respond(status, why + "\n")


def _respond(connection: ServerConnection, status: HTTPStatus, body: str, content_type: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


def _handshake(
    health: HealthFn, token: str | None, admit: AdmitFn, kind: str
) -> Callable[[ServerConnection, Request], Response | None]:
    """Answer GET /health (open to anyone: readiness, engine, session count) and GET /metrics (with the token, like
    everything else); refuse a WebSocket without the token (401) or beyond the session limits (`admit`)."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?")[0]
        if path == "/health":
            ready, details = health()
            body = json.dumps({"status": "ok" if ready else "loading", **details}) + "\n"
            return _respond(
                connection, HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, body, "application/json"
            )
        if not is_authorized(request.headers.get("Authorization"), token):
            return refuse(connection, HTTPStatus.UNAUTHORIZED, "missing or wrong token", kind)
        if path == "/metrics":
            body, content_type = metrics.exposition()
            return _respond(connection, HTTPStatus.OK, body.decode(), content_type)
        return admit(connection)

    return process_request


async def run_server(
    handler: Callable[[ServerConnection], Awaitable[None]],
    host: str,
    port: int,
    health: HealthFn,
    max_size: int,
    on_started: Callable[[], Awaitable[None]] | None = None,
    admit: AdmitFn = lambda connection: None,
    limits: SessionLimits = SessionLimits(),
    kind: str = "model",
) -> None:
    """Serve `handler` until SIGINT/SIGTERM; plain HTTP GET /health is answered on the same port.
    With a token (`servers.auth`), a WebSocket handshake without it gets HTTP 401."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    token = load_token()
    connection = type("Connection", (LimitedConnection,), {"limits": limits})
    async with serve(
        handler, host, port, process_request=_handshake(health, token, admit, kind), max_size=max_size,
        create_connection=connection,
    ):  # fmt: skip
        guard = "token required" if token else "no token: anyone who can reach it"
        logger.info(f"listening on ws://{host}:{port} ({guard}; health: http://{host}:{port}/health)")
        if on_started is not None:
            await on_started()
        await stop.wait()
        logger.info("shutting down")


class ModelServer:
    """One engine loaded once, its sessions, /health, the serve loop.

    Subclasses implement `handle(ws)` for one connection; `load_engine` says where the blocking
    `engine.load()` runs (a plain thread here).
    """

    kind = "model"

    def __init__(self, engine: Any, limits: SessionLimits = SessionLimits()) -> None:
        self.engine = engine
        self.limits = limits
        self.loaded = asyncio.Event()
        self._clients: Counter[str] = Counter()
        self._ids = itertools.count(1)

    @property
    def sessions(self) -> int:
        """Open sessions (connections past the handshake)."""
        return self._clients.total()

    def session_name(self) -> str:
        return f"{self.kind}-{next(self._ids)}"

    async def load_engine(self) -> None:
        await asyncio.to_thread(self.engine.load)

    async def warm_up(self) -> None:
        """One real inference through the loaded engine, so that "ready" means it has answered once
        (CUDA kernels compiled, lazy allocations made) and the first caller does not pay for it."""

    async def load(self) -> None:
        started = time.perf_counter()
        await self.load_engine()
        loaded = time.perf_counter()
        await self.warm_up()
        self.loaded.set()
        ready = time.perf_counter()
        logger.info(
            f"engine {self.engine.name} ready in {ready - started:.1f} s "
            f"(load {loaded - started:.1f} s, warm-up inference {ready - loaded:.1f} s)"
        )

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.loaded.is_set(), {"engine": self.engine.name, "sessions": self.sessions}

    async def handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def admit(self, connection: ServerConnection) -> Response | None:
        if self.sessions >= self.limits.max_sessions:
            return refuse(
                connection, HTTPStatus.SERVICE_UNAVAILABLE, f"server full ({self.sessions} sessions)", self.kind
            )
        if self._clients[connection.remote_address[0]] >= self.limits.max_sessions_per_client:
            why = f"too many sessions from {connection.remote_address[0]} (limit {self.limits.max_sessions_per_client})"
            return refuse(connection, HTTPStatus.TOO_MANY_REQUESTS, why, self.kind)
        return None

    async def _session(self, ws: ServerConnection) -> None:
        client = ws.remote_address[0]
        self._clients[client] += 1
        metrics.SESSIONS.labels(self.kind).inc()
        try:
            await self.handle(ws)
        finally:
            metrics.SESSIONS.labels(self.kind).dec()
            self._clients[client] -= 1
            if not self._clients[client]:
                del self._clients[client]

    async def serve(self, host: str, port: int, max_message_bytes: int) -> None:
        """Listen at once (/health says "loading"), load the engine, serve until SIGINT/SIGTERM."""
        await run_server(
            self._session, host, port, self.health, max_message_bytes, on_started=self.load, admit=self.admit,
            limits=self.limits, kind=self.kind,
        )  # fmt: skip
        self.engine.close()
