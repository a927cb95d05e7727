"""Command lines of our servers: loguru logging, flags with environment-variable defaults, one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from servers import auth
from servers.auth import TOKEN_ENV, load_token
from servers.serving import SessionLimits

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


def add_server_flags(
    parser: argparse.ArgumentParser, prefix: str, port: int, serves: str = "WebSocket and GET /health"
) -> None:
    add_flag(parser, "--host", f"{prefix}_HOST", DEFAULT_HOST, "interface to bind")
    add_flag(parser, "--port", f"{prefix}_PORT", port, f"TCP port ({serves})")
    add_flag(parser, "--log-level", f"{prefix}_LOG_LEVEL", "INFO", "loguru level")
    parser.add_argument(
        "--insecure", action="store_true",
        help=f"serve a non-loopback --host without a token ({TOKEN_ENV}): anyone who reaches it may use it",
    )  # fmt: skip


def add_limit_flags(parser: argparse.ArgumentParser, prefix: str) -> None:
    """What one client may take of a WebSocket server (`SessionLimits`)."""
    defaults = SessionLimits()
    add_flag(parser, "--max-sessions", f"{prefix}_MAX_SESSIONS", defaults.max_sessions, "sessions at once")
    add_flag(parser, "--max-sessions-per-client", f"{prefix}_MAX_SESSIONS_PER_CLIENT", defaults.max_sessions_per_client,
             "sessions at once from one client address")  # fmt: skip
    add_flag(parser, "--max-messages-per-s", f"{prefix}_MAX_MESSAGES_PER_S", defaults.max_messages_per_s,
             "messages per second one session may send before its reads slow down")  # fmt: skip
    add_flag(parser, "--idle-timeout", f"{prefix}_IDLE_TIMEOUT", defaults.idle_timeout_s,
             "seconds a session may send nothing before it is closed")  # fmt: skip


def session_limits(args: argparse.Namespace) -> SessionLimits:
    return SessionLimits(args.max_sessions, args.max_sessions_per_client, args.max_messages_per_s, args.idle_timeout)


def refuse_insecure_bind(name: str, args: argparse.Namespace) -> None:
    """Exit with one line rather than serve a LAN without a token; say so loudly when told to."""
    try:
        token = load_token()
        auth.check_bind(args.host, token, args.insecure)
    except auth.InsecureBind as e:
        raise SystemExit(f"{name}: {e}") from None
    except OSError as e:
        raise SystemExit(f"{name}: cannot read the token file ({auth.TOKEN_FILE_ENV}): {e}") from None
    if token is None and not auth.is_loopback(args.host):
        logger.warning(f"--insecure: serving {args.host} without a token; anyone who can reach it may use it")


def main_with_clear_errors(
    name: str, serve: Callable[[argparse.Namespace], Awaitable[None]], args: argparse.Namespace
) -> None:
    """Run `serve(args)`; a taken port or a model that fails to load exits with one line, not a traceback."""
    setup_logging(args.log_level)
    refuse_insecure_bind(name, args)
    try:
        asyncio.run(serve(args))
    except OSError as e:
        raise SystemExit(f"{name}: cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    except Exception as e:
        logger.opt(exception=e).debug("startup failure")
        raise SystemExit(f"{name}: {args.engine} engine failed to start: {e}") from None
