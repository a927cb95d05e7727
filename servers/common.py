"""Plumbing shared by our model servers: logging, env-backed CLI flags, WebSocket + /health serving."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from loguru import logger
from websockets.asyncio.server import Request, Response, ServerConnection, serve

DEFAULT_HOST = "127.0.0.1"


def setup_logging(level: str) -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper())


def add_flag(parser: argparse.ArgumentParser, flag: str, env: str, default: Any, help: str, **kwargs: Any) -> None:
    """Add `--flag` whose default comes from the environment variable `env`, else `default`."""
    kind = kwargs.pop("type", type(default) if default is not None else str)
    value = os.environ.get(env)
    parser.add_argument(
        flag,
        type=kind,
        default=kind(value) if value is not None else default,
        help=f"{help} (env {env}, default {default})",
        **kwargs,
    )


def add_server_flags(parser: argparse.ArgumentParser, prefix: str, port: int) -> None:
    add_flag(parser, "--host", f"{prefix}_HOST", DEFAULT_HOST, "interface to bind")
    add_flag(parser, "--port", f"{prefix}_PORT", port, "TCP port (WebSocket and GET /health)")
    add_flag(parser, "--log-level", f"{prefix}_LOG_LEVEL", "INFO", "loguru level")


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


def main_with_clear_errors(name: str, serve: Callable[[argparse.Namespace], Awaitable[None]], args: argparse.Namespace) -> None:
    """Run `serve(args)`; a taken port or a model that fails to load exits with one line, not a traceback."""
    setup_logging(args.log_level)
    try:
        asyncio.run(serve(args))
    except OSError as e:
        raise SystemExit(f"{name}: cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    except Exception as e:
        logger.opt(exception=e).debug("startup failure")
        raise SystemExit(f"{name}: {args.engine} engine failed to start: {e}") from None


def port_is_free(host: str, port: int) -> bool:
    """Nobody listens there (connections of a stopped server in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def load_nemo_model(model_class: Any, name: str, device: Any) -> Any:
    """A NeMo model from a local `.nemo` file, or by its Hugging Face name (downloaded once, cached)."""
    logger.info(f"loading {name} on {device}")
    if name.endswith(".nemo"):
        return model_class.restore_from(name, map_location=device)
    return model_class.from_pretrained(model_name=name, map_location=device)


class ServerExited(RuntimeError):
    """The process we were waiting for ended before it became healthy."""


def wait_healthy(
    url: str, process: subprocess.Popen | None = None, timeout: float = 300.0, interval: float = 0.2
) -> None:
    """Poll `url` (a /health) until it answers 200 (503 while loading); ServerExited if `process`
    ends first, TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerExited(f"exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s")


class ModelServer:
    """What every model server owns: one engine loaded once, its sessions, /health, the serve loop.

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
