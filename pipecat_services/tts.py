"""Pipecat TTS service for our streaming TTS server (`servers/tts`), on `WebsocketTTSService`.

Each LLM reply is one server context (Pipecat reuses the context id within a turn): text goes out
token by token as the LLM produces it (the server cuts it into clauses and sentences itself, so
Pipecat's own sentence aggregation would only add delay), the end of the reply flushes the context,
and an interruption
cancels it on the server, which then sends no more audio for it. Audio that was already on its way
is dropped by the base class, because the interrupted context no longer exists. Each finished
segment's words get timestamps spread over its audio, so Pipecat emits the text as it is heard
and an interrupted reply leaves only its spoken words in the context. TTFB is measured by the base
class from the first text sent to the first audio appended. With an `Interleaver`
scheduler, `TTSMarkFrame`s from the LLM are forwarded to the server and their echoes reported back.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame, TTSStoppedFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TextAggregationMode, WebsocketTTSService
from pipecat.utils.tracing.service_decorators import traced_tts

from pipecat_services.interleaving import Interleaver, TTSMarkFrame
from pipecat_services.model_server import SERVER_WAIT_S, ModelServerConnection
from servers.ports import TTS_PORT
from servers.tts import protocol


class TTSServerTTSService(ModelServerConnection, WebsocketTTSService):
    """Sends LLM text to our TTS server and plays the audio it streams back."""

    Settings = TTSSettings
    """`voice` and `language`: None picks the server's first (see its `ready` message)."""

    def __init__(
        self,
        *,
        url: str = f"ws://127.0.0.1:{TTS_PORT}",
        settings: TTSSettings | None = None,
        interleaver: Interleaver | None = None,
        reconnect_backoff_min_wait: float = 0.5,
        reconnect_backoff_max_wait: float = 2.0,
        server_wait_s: float = SERVER_WAIT_S,
        **kwargs,
    ) -> None:
        """`settings`: `TTSServerTTSService.Settings(voice=..., language=...)`. `server_wait_s`: how long to
        wait for a server that is down or cold (`model_server.py`)."""
        defaults = TTSSettings(model=None, voice=None, language=None)
        if settings is not None:
            defaults.apply_update(settings)
        super().__init__(
            text_aggregation_mode=TextAggregationMode.TOKEN,
            push_start_frame=True,
            push_stop_frames=True,
            push_text_frames=False,
            pause_frame_processing=True,
            settings=defaults,
            reconnect_backoff_min_wait=reconnect_backoff_min_wait,
            reconnect_backoff_max_wait=reconnect_backoff_max_wait,
            **kwargs,
        )
        self._url = url
        self._wire = protocol
        self._server_wait_s = server_wait_s
        self._reconnect_max_wait_s = reconnect_backoff_max_wait
        self._started: set[str] = set()
        self._interleaver = interleaver
        self._last_context_id: str | None = None
        self._spoken_s: dict[str, float] = {}

    def can_generate_metrics(self) -> bool:
        return True

    async def _disconnect_websocket(self) -> None:
        """The server forgets its contexts with the connection: so do we."""
        self._started.clear()
        self._spoken_s.clear()
        await super()._disconnect_websocket()

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        if not await self.connected():
            await self._connect()
        try:
            if context_id not in self._started:
                await self._websocket.send(
                    protocol.Start(context_id, self._settings.voice, self._language_code()).to_json()
                )
                self._started.add(context_id)
            await self._websocket.send(protocol.Text(context_id, text).to_json())
            self._last_context_id = context_id
            await self.start_tts_usage_metrics(text)
        except Exception as e:
            yield ErrorFrame(error=f"TTS server send failed: {e}")
            yield TTSStoppedFrame(context_id=context_id)
            return
        yield None

    def _language_code(self) -> str | None:
        language = self._settings.language
        return str(language).split("-")[0].lower() if language else None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, TTSMarkFrame):
            await super().process_frame(frame, direction)
            return
        if self._interleaver is None:
            return
        if self._last_context_id in self._started and self._is_open():
            self._interleaver.tts_started(frame.mark_id)
            await self._websocket.send(protocol.Mark(self._last_context_id, frame.mark_id).to_json())
        else:
            self._interleaver.reached(frame.mark_id)

    async def flush_audio(self, context_id: str | None = None) -> None:
        """The LLM reply is complete: let the server speak what it has queued, then `done`."""
        context_id = context_id or self.get_active_audio_context_id()
        if context_id in self._started and self._is_open():
            await self._websocket.send(protocol.Flush(context_id).to_json())

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        if context_id in self._started and self._is_open():
            self._started.discard(context_id)
            await self._websocket.send(protocol.Cancel(context_id).to_json())
        await self.stop_all_metrics()
        await super().on_audio_context_interrupted(context_id)

    async def _receive_messages(self) -> None:
        async for raw in self._websocket:
            if isinstance(raw, bytes):
                context_id, pcm = protocol.unpack_audio(raw)
                if self.audio_context_available(context_id):
                    frame = TTSAudioRawFrame(pcm, self.server_info.sample_rate, 1, context_id=context_id)
                    await self.append_to_audio_context(context_id, frame)
                continue
            message = protocol.parse_server_message(raw)
            if isinstance(message, protocol.SegmentDone):
                await self._time_words(message)
            elif isinstance(message, protocol.Mark) and self._interleaver is not None:
                self._interleaver.reached(message.id)
            elif isinstance(message, protocol.Done):
                await self._finish(message.context_id)
            elif isinstance(message, protocol.Error):
                if message.code != protocol.ErrorCode.UNKNOWN_CONTEXT:
                    logger.warning(f"{self}: server error {message.code}: {message.message}")
                    await self.push_error(error_msg=f"TTS server: {message.message}")
                if message.context_id:
                    await self._finish(message.context_id)

    async def _time_words(self, segment: protocol.SegmentDone) -> None:
        """Give each word of the segment a start time in proportion to its characters."""
        start = self._spoken_s.get(segment.context_id, 0.0)
        duration = segment.audio_ms / 1000
        self._spoken_s[segment.context_id] = start + duration
        words = (segment.written or segment.text).split()  # the LLM's own words: Pipecat matches them
        total = sum(len(w) + 1 for w in words)
        times, before = [], 0
        for word in words:
            times.append((word, start + duration * before / total))
            before += len(word) + 1
        await self.add_word_timestamps(times, segment.context_id)

    async def _finish(self, context_id: str) -> None:
        self._started.discard(context_id)
        self._spoken_s.pop(context_id, None)
        if self.audio_context_available(context_id):
            await self.append_to_audio_context(context_id, TTSStoppedFrame(context_id=context_id))
            await self.remove_audio_context(context_id)
