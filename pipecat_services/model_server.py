"""The WebSocket plumbing our Pipecat services share with their model servers.

Each server greets a connection with a `ready` message (engine, sample rate, protocol version)
once its model is loaded; a service is connected only after that. The shared model-server token
(`servers.auth`, from the environment) goes with every handshake.

The connection is made in the background when the pipeline starts: a server that is still loading
holds its `ready` back, and waiting for it there would hold every frame of the call behind it (the
bot's "one moment", `model_readiness.py`, among them).

A service waits for its server up to `server_wait_s`, whether the server is not listening yet (it
restarts, or starts after the bot), holds the handshake (Modal's proxy while a container scales up
from zero) or is still loading its model: reconnects are bounded by that time, not by a count of
attempts, so a cold server is waited for instead of given up on after a few seconds.
"""

from __future__ import annotations

import asyncio
import math
from types import ModuleType
from typing import Any

from loguru import logger
from websockets.protocol import State

from servers.auth import auth_headers

SERVER_WAIT_S = 60.0
"""Default of `server_wait_s`: a local server restarts and loads in well under it."""


class ModelServerConnection:
    """Mixin placed before `WebsocketSTTService`/`WebsocketTTSService` in a service's bases.

    The subclass sets `_url` and `_wire` (the server's protocol module: `parse_server_message`,
    `Ready`, `PROTOCOL_VERSION`, `MAX_MESSAGE_BYTES`) and implements `_receive_messages`.
    """

    _url: str
    _wire: ModuleType
    _server_wait_s: float = SERVER_WAIT_S
    _reconnect_max_wait_s: float = 2.0
    """The longest backoff between reconnects, as given to Pipecat's `WebsocketService`."""
    _receive_task: asyncio.Task | None = None
    _connecting: asyncio.Task | None = None
    server_info: Any = None

    async def start(self, frame: Any) -> None:
        await super().start(frame)
        self._connecting = self.create_task(self._connect(), "connect")

    async def connected(self) -> bool:
        """Whether the connection is open, once the one made at start has succeeded or failed."""
        if self._connecting is not None and not self._connecting.done():
            await asyncio.wait([self._connecting])
        return self._is_open()

    async def _try_reconnect(self, max_retries: int = 10, report_error: Any = None) -> bool:
        """Attempts enough to span `server_wait_s` at the longest backoff (each fails fast while
        nothing listens)."""
        window = math.ceil(self._server_wait_s / self._reconnect_max_wait_s)
        return await super()._try_reconnect(max_retries=max(max_retries, window), report_error=report_error)

    async def _connect(self) -> None:
        await super()._connect()
        await self._connect_websocket()
        if self._receive_task is None:
            self._receive_task = self.create_task(self._receive_task_handler(self._report_error))

    async def _disconnect(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            await self.cancel_task(self._connecting)
        await super()._disconnect()
        if self._receive_task is not None:
            await self.cancel_task(self._receive_task)
            self._receive_task = None
        await self._disconnect_websocket()

    async def _connect_websocket(self) -> None:
        """Connect and wait for the server's `ready`; only then is the connection ours to send on
        (audio sent before it would be refused by the server, and the words in it lost)."""
        websocket = None
        try:
            websocket = await self._websocket_connect(
                self._url, max_size=self._wire.MAX_MESSAGE_BYTES, additional_headers=auth_headers(self._url),
                open_timeout=self._server_wait_s,
            )  # fmt: skip
            first = await asyncio.wait_for(websocket.recv(), self._server_wait_s)
            ready = self._wire.parse_server_message(first)
            if not isinstance(ready, self._wire.Ready):
                raise ConnectionError(f"expected ready, got {first!r}")
            if ready.protocol != self._wire.PROTOCOL_VERSION:
                raise ConnectionError(
                    f"server speaks protocol {ready.protocol}, we speak {self._wire.PROTOCOL_VERSION}"
                )
            self.server_info = ready
            self._websocket = websocket
            logger.info(f"{self}: connected to {self._url} ({ready.engine}, {ready.sample_rate} Hz)")
            await self._call_event_handler("on_connected")
        except Exception as e:
            self._websocket = None
            await self.push_error(error_msg=f"{self._url}: {e}", exception=e)
            await self._call_event_handler("on_connection_error", str(e))
        finally:  # a connection that never became ours, cancelled (the call hung up) or refused, is closed
            if websocket is not None and websocket is not self._websocket:
                await websocket.close()

    async def _disconnect_websocket(self) -> None:
        try:
            if self._websocket is not None:
                await self._websocket.close()
        finally:
            self._websocket = None
            await self._call_event_handler("on_disconnected")

    def _is_open(self) -> bool:
        return self._websocket is not None and self._websocket.state is State.OPEN
