"""Tools from MCP servers (`--mcp FILE`), through Pipecat's `MCPClient`.

The file has the shape other MCP hosts read, with an allow-list per server:

    {"mcpServers": {
        "shop": {"command": "python", "args": ["shop_server.py"], "env": {"SHOP_DB": "/data/shop.db"},
                 "tools": ["order_status"]},
        "docs": {"url": "http://127.0.0.1:8765/mcp", "headers": {"Authorization": "Bearer ..."},
                 "tools": ["search_docs"]}}}

A server runs over stdio (`command`, `args`, `env`) or streamable HTTP (`url`, `headers`). Only the
tools a server lists under `tools` are offered to the model: a small model picks worse among many,
and a tool nobody chose is no tool to call. A result longer than `max_result_chars` is cut before
it reaches the prompt. A server that cannot be reached within `timeout_s` when a call starts is
left out of that call (its tools are not offered); one that fails or stalls during a call gives the
model an error (the LLM service's `function_call_timeout_secs`) and the call goes on.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema

MAX_RESULT_CHARS = 2000
"""About 500 tokens of the context window; what a spoken answer can use of a result."""


class MCPConfigError(ValueError):
    """The `--mcp` file is not one this bot can use; the message says what to fix."""


@dataclass(frozen=True)
class MCPServer:
    """One entry of `mcpServers`: how to reach the server, and the tools the bot may call."""

    name: str
    tools: tuple[str, ...]
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_entry(cls, name: str, entry: Any) -> MCPServer:
        if not isinstance(entry, dict):
            raise MCPConfigError(f"mcpServers.{name}: expected an object, got {entry!r}")
        tools = entry.get("tools")
        if not isinstance(tools, list) or not tools or not all(isinstance(t, str) for t in tools):
            raise MCPConfigError(f'mcpServers.{name}: list the tools the bot may call, e.g. "tools": ["tool_name"]')
        if ("command" in entry) == ("url" in entry):
            raise MCPConfigError(f"mcpServers.{name}: give either a command (stdio) or a url (streamable HTTP)")
        server = cls(
            name=name,
            tools=tuple(tools),
            command=entry.get("command"),
            args=tuple(entry.get("args", ())),
            env=dict(entry.get("env", {})),
            url=entry.get("url"),
            headers=dict(entry.get("headers", {})),
        )
        if not all(isinstance(v, str) for v in (*server.args, *server.env.values(), *server.headers.values())):
            raise MCPConfigError(f"mcpServers.{name}: args, env and headers take strings")
        return server

    def client_params(self, timeout_s: float) -> Any:
        """The `mcp` package's connection parameters for Pipecat's `MCPClient`."""
        from mcp import StdioServerParameters
        from mcp.client.session_group import StreamableHttpParameters

        if self.url:
            return StreamableHttpParameters(url=self.url, headers=self.headers or None, timeout=timeout_s)
        return StdioServerParameters(command=self.command, args=list(self.args), env=self.env or None)


def read_mcp_servers(path: str | Path) -> list[MCPServer]:
    """The servers of an `--mcp` file, checked (`MCPConfigError` says what is wrong)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MCPConfigError(f"--mcp {path}: {e}") from e
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict) or not servers:
        raise MCPConfigError(f'--mcp {path}: expected {{"mcpServers": {{"name": {{...}}}}}}')
    return [MCPServer.from_entry(name, entry) for name, entry in servers.items()]


def cut_result(text: str, max_chars: int = MAX_RESULT_CHARS) -> str:
    """A tool's result no longer than `max_chars`, saying that it was cut."""
    if len(text) <= max_chars:
        return text
    note = f" [cut: {len(text)} characters in all]"
    return text[: max(0, max_chars - len(note))] + note


class MCPToolbox:
    """The allowed tools of the MCP servers that answered, for one call, and their connections, which
    `close()` ends (a stdio server is a process of its own)."""

    def __init__(self, tools: list[FunctionSchema], clients: list[Any]) -> None:
        self.tools = tools
        self._clients = clients

    @classmethod
    async def connect(
        cls, servers: list[MCPServer], *, timeout_s: float, max_result_chars: int = MAX_RESULT_CHARS
    ) -> MCPToolbox:
        """Every server at once, each given `timeout_s`; the tools in the servers' and lists' order."""
        from pipecat.services.mcp_service import MCPClient

        async def one(server: MCPServer) -> tuple[list[FunctionSchema], Any]:
            client = MCPClient(
                server.client_params(timeout_s),
                tools_filter=list(server.tools),
                tools_output_filters={tool: lambda text: cut_result(text, max_result_chars) for tool in server.tools},
            )
            try:
                schema = await asyncio.wait_for(client.tools(), timeout_s)
            except asyncio.CancelledError:
                await _close(client)
                raise
            except Exception as e:
                logger.warning(f"MCP server {server.name!r} unavailable ({type(e).__name__}: {e}); its tools are off")
                await _close(client)
                return [], None
            offered = {t.name: t for t in schema.standard_tools}
            missing = [t for t in server.tools if t not in offered]
            if missing:
                logger.warning(f"MCP server {server.name!r} lacks {missing}; it has {sorted(offered)} of those")
            return [offered[t] for t in server.tools if t in offered], client

        found = await asyncio.gather(*(one(server) for server in servers))
        return cls([tool for tools, _ in found for tool in tools], [client for _, client in found if client])

    async def close(self) -> None:
        await asyncio.gather(*(_close(client) for client in self._clients))
        self._clients = []


async def _close(client: Any) -> None:
    try:
        await asyncio.wait_for(client.close(), 5)
    except Exception as e:
        logger.debug(f"closing an MCP client: {type(e).__name__}: {e}")
