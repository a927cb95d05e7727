"""Start a model server for a benchmark, unless the user points at a running one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from servers.processes import LocalServer


@asynccontextmanager
async def running_server(module: str, url: str | None, args: list[str], log: Path) -> AsyncIterator[str]:
    """Yield `url` if given, else start `python -m module` on a free port and yield its URL."""
    if url:
        yield url
        return
    server = LocalServer(module, args, log)
    try:
        await asyncio.to_thread(server.run)
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)
