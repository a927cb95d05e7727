"""Start a model server for a benchmark, unless the user points at a running one."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(health_url: str, process: subprocess.Popen | None = None, timeout: float = 300.0) -> None:
    """Poll GET /health until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(health_url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{health_url} not healthy after {timeout:.0f} s")


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
