"""Pipecat LLM service for llama-server: `TokenLLMService` on the llama-server backend.

    LlamaServerLLMService(base_url=f"http://127.0.0.1:{LLM_PORT}", interleaving=Interleaving(Interleaver()), ...)

Everything but the HTTP endpoints is generic and lives in `../service.py`; the endpoints in
`client.py`, the GBNF grammars that constrain tool calls in `grammar.py`.
"""

from __future__ import annotations

from typing import Any

from pipecat_services.llm.llama_server.client import LlamaServerBackend
from pipecat_services.llm.service import TokenLLMService
from pipecat_services.model_server import SERVER_WAIT_S
from servers.ports import LLM_PORT


class LlamaServerLLMService(TokenLLMService):
    """The bot's LLM service on llama-server: exact cache reuse, prefill, interleaving, tool calls."""

    def __init__(
        self, *, base_url: str = f"http://127.0.0.1:{LLM_PORT}", server_wait_s: float = SERVER_WAIT_S, **kwargs: Any
    ) -> None:
        """`server_wait_s`: how long a request waits for a server that is loading or restarting. Other
        arguments: `TokenLLMService`."""
        super().__init__(backend=LlamaServerBackend(base_url, server_wait_s), **kwargs)
