"""What every WebSocket model server owns: one engine loaded once, its sessions, GET /health, the serve loop."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from loguru import logger
from websockets.asyncio.server import Request, Response, ServerConnection, serve

HealthFn = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (ready, details) for GET /health: 200 when ready, 503 while loading."""


def _health_responder(health: HealthFn) -> Callable[[ServerConnection, Request], Response | None]:
    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] != "/health":
            return None
        ready, details = health()
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        body = json.dumps({"status": "ok" if ready else "loading", **details})
        response = connection.respond(status, body + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    return process_request


async def run_server(
    handler: Callable[[ServerConnection], Awaitable[None]],
    host: str,
    port: int,
    health: HealthFn,
    max_size: int,
    on_started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve `handler` until SIGINT/SIGTERM; plain HTTP GET /health is answered on the same port."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(handler, host, port, process_request=_health_responder(health), max_size=max_size):
        logger.info(f"listening on ws://{host}:{port} (health: http://{host}:{port}/health)")
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

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.loaded = asyncio.Event()
        self.sessions = 0
        self._ids = itertools.count(1)

    def session_name(self) -> str:
        return f"{self.kind}-{next(self._ids)}"

    async def load_engine(self) -> None:
        await asyncio.to_thread(self.engine.load)

    async def load(self) -> None:
        started = time.perf_counter()
        await self.load_engine()
        self.loaded.set()
        logger.info(f"engine {self.engine.name} ready in {time.perf_counter() - started:.1f} s")

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.loaded.is_set(), {"engine": self.engine.name, "sessions": self.sessions}

    async def handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def serve(self, host: str, port: int, max_message_bytes: int) -> None:
        """Listen at once (/health says "loading"), load the engine, serve until SIGINT/SIGTERM."""
        await run_server(self.handle, host, port, self.health, max_message_bytes, on_started=self.load)
        self.engine.close()
