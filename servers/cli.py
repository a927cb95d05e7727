"""Command lines of our servers: loguru logging, flags with environment-variable defaults, one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

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
