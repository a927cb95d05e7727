"""Tools from MCP servers: a real MCP server (benchmarks/mcp_server.py, the `mcp` package's own) over
stdio and streamable HTTP, reached through Pipecat's `MCPClient` as the bot reaches it. The bot
calling one from a spoken question is in tests/test_bot.py."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipecat.services.llm_service import FunctionCallParams

from benchmarks.mcp_server import http_mcp_server
from pipecat_services.mcp_tools import MCPConfigError, MCPServer, MCPToolbox, cut_result, read_mcp_servers
from servers.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = ("get_weather", "fetch_report")


def stdio_server(tools: tuple[str, ...] = ALLOWED) -> MCPServer:
    return MCPServer(
        name="bench",
        tools=tools,
        command=sys.executable,
        args=("-m", "benchmarks.mcp_server"),
        env={"PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with http_mcp_server(free_port()) as url:
        yield url


async def call(toolbox: MCPToolbox, name: str, arguments: dict) -> str:
    """What the model would get back from a call of `name`."""
    results: list = []

    async def keep(result, properties=None) -> None:
        results.append(result)

    tool = next(t for t in toolbox.tools if t.name == name)
    await tool.handler(
        FunctionCallParams(
            function_name=name, tool_call_id="1", arguments=arguments, llm=None, context=None,
            result_callback=keep, pipeline_worker=None,
        )
    )  # fmt: skip
    return results[0]


@pytest.mark.servers
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_only_the_allowed_tools_are_offered_and_they_answer(transport: str, request) -> None:
    server = (
        stdio_server()
        if transport == "stdio"
        else MCPServer(name="bench", tools=ALLOWED, url=request.getfixturevalue("http_url"))
    )
    toolbox = await MCPToolbox.connect([server], timeout_s=60)
    try:
        assert [t.name for t in toolbox.tools] == list(ALLOWED)  # the server also has reset_database
        weather = json.loads(await call(toolbox, "get_weather", {"city": "Paris"}))
        assert weather == {"city": "Paris", "temperature_c": 18, "conditions": "light rain"}
    finally:
        await toolbox.close()


@pytest.mark.servers
async def test_an_oversized_result_is_cut_to_the_cap() -> None:
    toolbox = await MCPToolbox.connect([stdio_server()], timeout_s=60, max_result_chars=500)
    try:
        report = await call(toolbox, "fetch_report", {})
    finally:
        await toolbox.close()
    assert (
        len(report) == 500 and report.startswith("Revenue grew") and report.endswith("[cut: 50000 characters in all]")
    )


@pytest.mark.servers
async def test_a_dead_server_leaves_its_tools_out_and_the_others_in() -> None:
    dead_http = MCPServer(name="gone", tools=("lookup",), url=f"http://127.0.0.1:{free_port()}/mcp")
    dead_stdio = MCPServer(name="exits", tools=("lookup",), command=sys.executable, args=("-c", "pass"))
    started = time.monotonic()
    toolbox = await MCPToolbox.connect([dead_http, dead_stdio, stdio_server(("get_weather",))], timeout_s=30)
    try:
        assert [t.name for t in toolbox.tools] == ["get_weather"]
    finally:
        await toolbox.close()
    assert time.monotonic() - started < 30


async def test_a_server_that_never_answers_is_given_up_at_the_timeout() -> None:
    silent = MCPServer(
        name="silent", tools=("lookup",), command=sys.executable, args=("-c", "import time; time.sleep(60)")
    )
    started = time.monotonic()
    toolbox = await MCPToolbox.connect([silent], timeout_s=1.0)
    await toolbox.close()
    assert toolbox.tools == [] and time.monotonic() - started < 10


def test_cut_result_keeps_short_results_whole() -> None:
    assert cut_result("18 degrees", 100) == "18 degrees"
    assert len(cut_result("x" * 1000, 100)) == 100


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"command": "python"}, "list the tools"),
        ({"command": "python", "tools": []}, "list the tools"),
        ({"tools": ["a"]}, "either a command"),
        ({"command": "python", "url": "http://x/mcp", "tools": ["a"]}, "either a command"),
        ({"command": "python", "args": [1], "tools": ["a"]}, "take strings"),
    ],
)
def test_a_bad_mcp_file_says_what_to_fix(tmp_path: Path, entry: dict, complaint: str) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"shop": entry}}))
    with pytest.raises(MCPConfigError, match=complaint):
        read_mcp_servers(path)


def test_the_common_mcp_file_shape_is_read(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    servers = {
        "shop": {"command": "python", "args": ["shop.py"], "env": {"DB": "/d"}, "tools": ["order_status"]},
        "docs": {"url": "http://127.0.0.1:8765/mcp", "headers": {"Authorization": "Bearer t"}, "tools": ["search"]},
    }
    path.write_text(json.dumps({"mcpServers": servers}))
    shop, docs = read_mcp_servers(path)
    assert (shop.command, shop.args, shop.env, shop.tools) == ("python", ("shop.py",), {"DB": "/d"}, ("order_status",))
    assert (docs.url, docs.headers, docs.tools) == (
        "http://127.0.0.1:8765/mcp",
        {"Authorization": "Bearer t"},
        ("search",),
    )
