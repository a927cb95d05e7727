"""Start a model server for a benchmark, unless the user points at a running one."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from servers.common import wait_healthy

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def running_server(module: str, url: str | None, args: list[str], log: Path) -> AsyncIterator[str]:
    """Yield `url` if given, else start `python -m module` on a free port and yield its URL."""
    if url:
        yield url
        return
    port = free_port()
    cmd = [sys.executable, "-m", module, "--port", str(port), *args]
    with log.open("w") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        await asyncio.to_thread(wait_healthy, f"http://127.0.0.1:{port}/health", process)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
