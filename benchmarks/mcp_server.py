"""An MCP server (the `mcp` package's own) with the tools benchmark's tools and canned results, over
stdio or streamable HTTP: `python -m benchmarks.tools --mcp` calls them through the bot's MCP
client, and the tests use it as the real MCP server a user would run.

    python -m benchmarks.mcp_server                  # stdio
    python -m benchmarks.mcp_server --http 8765      # http://127.0.0.1:8765/mcp

Besides the benchmark's tools it serves `fetch_report` (a 50,000-character result) and
`reset_database` (a tool no allow-list should let through).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema

from benchmarks.tool_sets import ANSWER_TOOLS, BENCH_TOOLS, canned_result

REPORT_CHARS = 50_000
EXTRA_TOOLS = [
    FunctionSchema(name="fetch_report", description="Fetch the full quarterly report.", properties={}, required=[]),
    FunctionSchema(name="reset_database", description="Erase every record.", properties={}, required=[]),
]


def served_tools() -> list[FunctionSchema]:
    """Every tool of the benchmark's sets, once, then the extras."""
    tools = {t.name: t for t in [*BENCH_TOOLS, *ANSWER_TOOLS, *EXTRA_TOOLS]}
    return list(tools.values())


def result(name: str, arguments: dict[str, Any]) -> str:
    if name == "fetch_report":
        return ("Revenue grew in every region. " * (REPORT_CHARS // 30 + 1))[:REPORT_CHARS]
    if name == "reset_database":
        return json.dumps({"erased": True})
    return json.dumps(canned_result(name, arguments))


def mcp_server() -> Server:
    tools = served_tools()

    async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t.name,
                    description=t.description,
                    inputSchema={"type": "object", "properties": t.properties, "required": t.required},
                )
                for t in tools
            ]
        )

    async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        text = result(params.name, dict(params.arguments or {}))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server("voice-agent-bench", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(server: Server) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


@contextmanager
def http_mcp_server(port: int, start_timeout_s: float = 60.0) -> Iterator[str]:
    """This server in a process of its own on 127.0.0.1:`port`; yields its URL once it listens."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.mcp_server", "--http", str(port)], cwd=root)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MCP server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    server = mcp_server()
    if args.http:
        uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=args.http, log_level="warning")
    else:
        anyio.run(serve_stdio, server)


if __name__ == "__main__":
    main()
