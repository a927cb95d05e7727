"""Pipecat STT service for our streaming ASR server (`servers/asr`), on `WebsocketSTTService`.

Audio streams to the server as it arrives. When VAD reports the user stopped, the service sends a
hard finalize; the server has usually finished decoding already (it speculates on its own silence
detector), so the final comes back within milliseconds. In Pipecat 1.14 the user turn stop
strategies hold the end of the turn until a `TranscriptionFrame(finalized=True)` arrives, or until
`ttfs_p99_latency` after the end of speech: that is what guarantees the final transcript reaches
the user context aggregator before the turn is closed, so we mark every final as finalized.

A final is sent at every VAD stop, and a pause inside a sentence is one. When the user speaks again
within the same turn (one the user aggregator started: a "mhm" over the bot's speech is none), the
service asks the server to reopen the last final (`reopen`: its next final decodes the whole turn
again as one) and tells the aggregator to drop the pieces (`TranscriptReopenedFrame`); a final still
on its way then is void.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import asdict

from loguru import logger
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import WebsocketSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt

from pipecat_services.model_server import SERVER_WAIT_S, ModelServerConnection
from pipecat_services.turn_end import TranscriptReopenedFrame
from servers.asr import protocol
from servers.ports import ASR_PORT

FINAL_WAIT_S = 1.5
"""How long after the end of speech a turn waits for its final transcript (Pipecat's
`ttfs_p99_latency`). A final normally arrives within milliseconds and ends the wait at once; this is
only the safety net for a slow one (a Whisper just restarted and cold, two busy cores), where
Pipecat's 0.6 s closed the turn without the user's words."""


class ASRServerSTTService(ModelServerConnection, WebsocketSTTService):
    """Streams audio to our ASR server and pushes interim and finalized transcriptions."""

    Settings = STTSettings
    """English only: our ASR engines are English models."""

    def __init__(
        self,
        *,
        url: str = f"ws://127.0.0.1:{ASR_PORT}",
        ttfs_p99_latency: float = FINAL_WAIT_S,
        reconnect_backoff_min_wait: float = 0.5,
        reconnect_backoff_max_wait: float = 2.0,
        server_wait_s: float = SERVER_WAIT_S,
        settings: STTSettings | None = None,
        **kwargs,
    ) -> None:
        """`ttfs_p99_latency`: end of speech → final transcript, p99; the turn's fallback wait.
        `server_wait_s`: how long to wait for a server that is down or cold (`model_server.py`)."""
        defaults = STTSettings(model=None, language=Language.EN)
        if settings is not None:
            defaults.apply_update(settings)
        super().__init__(
            settings=defaults,
            ttfs_p99_latency=ttfs_p99_latency,
            reconnect_backoff_min_wait=reconnect_backoff_min_wait,
            reconnect_backoff_max_wait=reconnect_backoff_max_wait,
            **kwargs,
        )
        self._url = url
        self._wire = protocol
        self._server_wait_s = server_wait_s
        self._reconnect_max_wait_s = reconnect_backoff_max_wait
        self._resampler = create_stream_resampler()
        self._user_turn = False
        """The user aggregator started the user's turn and has not ended it."""
        self._finalized_in_turn = False
        """A hard finalize was sent since the user's turn began: speech now continues its utterance."""
        self._finals_due = 0
        """Hard finalizes sent whose final has not come back."""
        self._void_finals = 0
        """Of those, the finals a reopen made void."""

    def can_generate_metrics(self) -> bool:
        return True

    async def _connect_websocket(self) -> None:
        """A new server session: nothing of the last one's utterances is due or open."""
        self._finalized_in_turn, self._finals_due, self._void_finals = False, 0, 0
        await super()._connect_websocket()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        if self._is_open():
            if self.sample_rate != protocol.SAMPLE_RATE:
                audio = await self._resampler.resample(audio, self.sample_rate, protocol.SAMPLE_RATE)
            try:
                await self._websocket.send(audio)
            except Exception as e:
                yield ErrorFrame(error=f"ASR send failed: {e}")
                return
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UserStartedSpeakingFrame | UserStoppedSpeakingFrame):
            self._user_turn = isinstance(frame, UserStartedSpeakingFrame)
            self._finalized_in_turn = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._is_open():
            self.request_finalize()
            self._finalized_in_turn = self._user_turn  # a sound over the bot's speech is no turn to continue
            self._finals_due += 1
            await self._websocket.send(protocol.Finalize(hard=True).to_json())
        elif isinstance(frame, VADUserStartedSpeakingFrame) and self._finalized_in_turn and self._is_open():
            self._finalized_in_turn = False
            self._void_finals = self._finals_due
            await self._websocket.send(protocol.Reopen().to_json())
            await self.push_frame(TranscriptReopenedFrame())

    async def _receive_messages(self) -> None:
        async for raw in self._websocket:
            try:
                message = protocol.parse_server_message(raw)
            except protocol.ProtocolError as e:
                logger.warning(f"{self}: unparseable server message: {e}")
                continue
            await self._on_server_message(message)

    async def _on_server_message(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.Interim):
            await self.push_frame(InterimTranscriptionFrame(message.text, self._user_id, time_now_iso8601()))
        elif isinstance(message, protocol.Final):
            logger.debug(f"{self}: final in {message.latency_ms:.0f} ms: {message.text!r}")
            self._finals_due = max(0, self._finals_due - 1)
            if self._void_finals:
                self._void_finals -= 1
            elif message.text:
                self.confirm_finalize()
                await self.push_frame(
                    TranscriptionFrame(
                        message.text, self._user_id, time_now_iso8601(), Language.EN, result=asdict(message)
                    )
                )
                await self.emit_stt_usage_metrics()
                await self._handle_transcription(message.text, True, Language.EN)
        elif isinstance(message, protocol.Error):
            logger.warning(f"{self}: server error {message.code}: {message.message}")

    @traced_stt
    async def _handle_transcription(self, transcript: str, is_final: bool, language: Language | None = None) -> None:
        """A final transcript, as Pipecat's STT span records it (a no-op unless tracing)."""
