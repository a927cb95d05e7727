"""The llama-server backend of `TokenLLMService` (`../backend.py`): its HTTP endpoints.

- `/apply-template`: the model's own chat template (from the GGUF, `--jinja`), so one code path
  serves Nemotron and the embedded Qwen alike.
- `/tokenize`: text → token ids, special tokens parsed.
- `/props`: the context size of a slot (`default_generation_settings.n_ctx`), the conversation's budget.
- `/completion` with `n_probs` and one token: the reply's first token and the distribution it came
  from (does the reply begin with a tool call?); the reply's stream goes on from it.
- `/completion` with a token-id prompt, `cache_prompt` and a slot (-1: the server picks the one
  whose cache matches best), streamed (SSE) with the ids of every generated token. Closing the
  stream stops generation on the server. Constraints are llama.cpp GBNF grammars (`grammar.py`).

A server that is loading its model (HTTP 503) or not listening (restarting, starting after the bot) is
waited for until its `/health` says loaded, at most `server_wait_s`, and the request is sent again:
a turn asked during a load is answered as soon as the model is up, not lost.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from loguru import logger

from pipecat_services.llm.backend import NEXT_TOKENS, FirstToken, LLMBackend, Piece
from pipecat_services.llm.llama_server.grammar import SPEECH_ONLY_GBNF, CallGrammar
from pipecat_services.model_server import SERVER_WAIT_S
from servers.auth import auth_headers

HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=5)
"""One /health probe: a server (or Modal's proxy) that holds it counts as not loaded yet."""
NOT_LISTENING = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ConnectionTimeoutError)
"""Before any response: the server is restarting, starting after the bot, or scaling up."""


ANY_SLOT = -1
"""llama-server picks the slot whose cache matches best, so with `--parallel N` each conversation
keeps its own."""


class LlamaServerError(RuntimeError):
    """llama-server answered with an error, or never became ready."""


class LlamaServerBackend(LLMBackend):
    """The `LLMBackend` on llama-server's HTTP API."""

    def __init__(self, base_url: str, server_wait_s: float = SERVER_WAIT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.server_wait_s = server_wait_s
        self._session: aiohttp.ClientSession | None = None

    def __str__(self) -> str:
        return f"llama-server at {self.base_url}"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # llama-server may close a connection after a stream we stopped reading; never reuse one.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                headers=auth_headers(self.base_url),  # llama-server's --api-key is the model servers' token
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def is_loaded(self) -> bool:
        """llama-server's /health: 200 once the model is loaded (and its warm-up decode has run)."""
        try:
            async with self.session.get(self.base_url + "/health", timeout=HEALTH_TIMEOUT) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def wait_loaded(self, wait_s: float | None = None) -> None:
        """Until the server is loaded; LlamaServerError after `wait_s` (default `server_wait_s`)."""
        limit = self.server_wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + limit
        logger.info(f"{self}: waiting for the model to load")
        while not await self.is_loaded():
            if time.monotonic() > deadline:
                raise LlamaServerError(f"{self} not loaded after {limit:.0f} s")
            await asyncio.sleep(0.25)

    @asynccontextmanager
    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """The response to one request, waiting once for a server that is loading or not listening."""
        for attempt in (1, 2):
            try:
                response = await self.session.request(method, self.base_url + path, json=body)
            except NOT_LISTENING:
                if attempt == 2:
                    raise
            else:
                async with response:
                    if response.status == 200:
                        yield response
                        return
                    if response.status != 503 or attempt == 2:
                        raise LlamaServerError(f"{path}: HTTP {response.status}: {(await response.text())[:300]}")
            await self.wait_loaded()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._request("POST", path, body) as response:
            return await response.json()

    async def context_size(self) -> int | None:
        async with self._request("GET", "/props") as response:
            return (await response.json()).get("default_generation_settings", {}).get("n_ctx")

    async def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        body: dict[str, Any] = {"messages": messages}
        if tools:
            body["tools"] = tools
        return (await self._post("/apply-template", body))["prompt"]

    async def tokenize(self, text: str) -> list[int]:
        body = {"content": text, "add_special": False, "parse_special": True}
        return (await self._post("/tokenize", body))["tokens"]

    async def prefill(self, tokens: list[int]) -> dict[str, Any]:
        body = {"prompt": tokens, "n_predict": 0, "cache_prompt": True, "id_slot": ANY_SLOT}
        return (await self._post("/completion", body)).get("timings", {})

    async def first_token(self, tokens: list[int], fields: dict[str, Any], top: int = NEXT_TOKENS) -> FirstToken:
        body = {
            "prompt": tokens,
            "n_predict": 1,
            "n_probs": top,
            "cache_prompt": True,
            "id_slot": ANY_SLOT,
            "return_tokens": True,
            **fields,
        }
        reply = await self._post("/completion", body)
        probabilities = reply["completion_probabilities"][0]["top_logprobs"]
        return FirstToken(
            top=[(p["token"], math.exp(p["logprob"])) for p in probabilities],
            piece=Piece(
                text=reply.get("content", ""),
                tokens=reply.get("tokens", []),
                stop=reply.get("stop_type") in ("eos", "word"),  # not "limit": the one token asked for
                timings=reply.get("timings", {}),
            ),
        )

    async def stream(self, tokens: list[int], n_predict: int, fields: dict[str, Any]) -> AsyncIterator[Piece]:
        body = {
            "prompt": tokens,
            "n_predict": n_predict,
            "cache_prompt": True,
            "id_slot": ANY_SLOT,
            "stream": True,
            "return_tokens": True,
            "timings_per_token": True,
            **fields,
        }
        async with self._request("POST", "/completion", body) as response:
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                yield Piece(
                    text=event.get("content", ""),
                    tokens=event.get("tokens", []),
                    stop=event.get("stop", False),
                    timings=event.get("timings", {}),
                )

    def call_fields(self, names: tuple[str, ...], forced: bool) -> dict[str, Any]:
        grammar = CallGrammar(names)
        return grammar.forced_fields() if forced else grammar.lazy_fields()

    def speech_fields(self) -> dict[str, Any]:
        return {"grammar": SPEECH_ONLY_GBNF}
