"""Plumbing shared by our model servers: logging, env-backed CLI flags, WebSocket + /health serving."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
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
