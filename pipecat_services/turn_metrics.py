"""Per-turn latency: one log line and one metrics frame per user turn.

Watches the pipeline's frames and, when the bot starts speaking after a user turn, reports:
- STT final: VAD stop → the finalized transcript (our STT client finalizes on VAD stop);
- LLM TTFB: the LLM service's own TTFB (first token, or first whole segment when interleaving);
- TTS TTFB: the TTS service's own TTFB (first text sent → first audio back);
- server V2V: VAD stop → BotStartedSpeaking, plus the VAD's stop_secs (the silence it waited out),
  i.e. from the moment the user really stopped talking, as the reference system reports it;
- tool: in a turn that called tools, the time the calls ran (first call started → last result),
  which the server V2V includes;
- a timeline: when each stage's first frame passed, in ms after the end of the user's speech (the
  VAD stop minus its stop_secs), so every millisecond of the server V2V has a place: VAD stop, STT
  final, turn stopped (the context reaches the LLM), LLM first text, TTS first audio, bot speaking;
  with the prompt tokens the LLM server evaluated and how long that took.

The report goes out through the `on_turn_latency` event; bot.py logs it and queues it as a
`MetricsFrame` (TurnLatencyMetricsData) and an RTVI server message, so clients see it too.
"""

from __future__ import annotations

import time

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    LLMContextFrame,
    LLMTextFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import MetricsData, TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.tts_service import TTSService

TIMELINE = ("vad_stop", "stt_final", "turn_stopped", "llm_first_text", "tts_first_audio", "bot_speaking")
"""The marks of a turn's timeline, in the order a turn passes them."""


class PromptCacheMetricsData(MetricsData):
    """The server's KV-cache reuse for a turn's prompt.

    `value` (the cache hit ratio) = cached_tokens / reusable_tokens: of the prompt tokens the server
    has already seen in this conversation (everything but the new user turn), the share it served
    from its cache. cached_tokens / prompt_tokens is the share of the whole prompt, which can never
    reach 1 because the new user turn is always new.
    """

    value: float
    cached_tokens: int
    reusable_tokens: int
    prompt_tokens: int
    evaluated_tokens: int = 0
    """Prompt tokens the server evaluated this turn (not from its cache), in `evaluation_ms`."""
    evaluation_ms: float = 0.0


class TurnLatencyMetricsData(MetricsData):
    """One user turn's latencies in milliseconds (None: the stage reported nothing this turn)."""

    turn: int
    user_text: str
    stt_final_ms: float | None
    llm_ttfb_ms: float | None
    tts_ttfb_ms: float | None
    server_v2v_ms: float
    tool_ms: float | None = None
    timeline_ms: dict[str, float] = {}
    """TIMELINE marks passed this turn → ms after the end of the user's speech."""
    llm_evaluated_tokens: int | None = None
    llm_evaluation_ms: float | None = None

    def log_line(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f} ms"

        return (
            f"turn {self.turn}: STT final {ms(self.stt_final_ms)} | LLM TTFB {ms(self.llm_ttfb_ms)} | "
            f"TTS TTFB {ms(self.tts_ttfb_ms)} | server V2V {ms(self.server_v2v_ms)}"
            f"{f' (tool {ms(self.tool_ms)})' if self.tool_ms is not None else ''} | heard {self.user_text!r}"
            f"\n  timeline after speech end: {self.timeline_line()}"
        )

    def timeline_line(self) -> str:
        marks = " | ".join(f"{name} +{self.timeline_ms[name]:.0f}" for name in TIMELINE if name in self.timeline_ms)
        if self.llm_evaluated_tokens is not None:
            marks += f" (LLM evaluated {self.llm_evaluated_tokens} prompt tokens in {self.llm_evaluation_ms:.0f} ms)"
        return marks


class TurnLatencyObserver(BaseObserver):
    """Measures each user turn from VAD stop to the bot's first audio; emits `on_turn_latency`."""

    def __init__(self) -> None:
        super().__init__(observe_every_push=False)
        self._turns = 0
        self._user_speaking = False
        self._reset()
        self._register_event_handler("on_turn_latency")

    def _reset(self) -> None:
        self._vad_stop: float | None = None
        self._stop_secs = 0.0
        self._user_text = ""
        self._stt_final: float | None = None
        self._llm_ttfb: float | None = None
        self._tts_ttfb: float | None = None
        self._tool_started: float | None = None
        self._tool_done: float | None = None
        self._marks: dict[str, float] = {}
        self._evaluated: tuple[int, float] | None = None

    def _mark(self, name: str) -> None:
        self._marks.setdefault(name, time.time())

    def _on_vad(self, frame: VADUserStartedSpeakingFrame | VADUserStoppedSpeakingFrame) -> None:
        """The user aggregator sends each VAD frame both ways: upstream at once (the STT finalizes on
        it), downstream after its own turn analysis, which may be after the final it caused. The first
        copy counts, so that final is never reset away."""
        speaking = isinstance(frame, VADUserStartedSpeakingFrame)
        if speaking == self._user_speaking:
            return
        self._user_speaking = speaking
        self._reset()
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_stop, self._stop_secs = frame.timestamp, frame.stop_secs
            self._marks["vad_stop"] = frame.timestamp

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, VADUserStartedSpeakingFrame | VADUserStoppedSpeakingFrame):
            self._on_vad(frame)
        elif data.direction != FrameDirection.DOWNSTREAM or self._vad_stop is None:
            return
        elif isinstance(frame, TranscriptionFrame) and frame.finalized:
            self._user_text = f"{self._user_text} {frame.text}".strip()
            self._stt_final = time.time() - self._vad_stop
            self._mark("stt_final")
        elif isinstance(frame, LLMContextFrame):
            self._mark("turn_stopped")
        elif isinstance(frame, LLMTextFrame) and isinstance(data.source, LLMService):
            self._mark("llm_first_text")
        elif isinstance(frame, TTSAudioRawFrame) and isinstance(data.source, TTSService):
            self._mark("tts_first_audio")
        elif isinstance(frame, MetricsFrame):
            self._take_ttfb(data, frame)
        elif isinstance(frame, FunctionCallInProgressFrame):
            self._tool_started = self._tool_started or time.time()
        elif isinstance(frame, FunctionCallResultFrame):
            self._tool_done = time.time()
        elif isinstance(frame, BotStartedSpeakingFrame) and not self._user_text:
            self._reset()  # speech with no words (a cough, a "mhm" over the bot's speech) was no turn
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._mark("bot_speaking")
            await self._report(time.time())

    def _take_ttfb(self, data: FramePushed, frame: MetricsFrame) -> None:
        for metric in frame.data:
            if isinstance(metric, PromptCacheMetricsData) and self._evaluated is None:
                self._evaluated = (metric.evaluated_tokens, metric.evaluation_ms)
            if not isinstance(metric, TTFBMetricsData) or metric.value <= 0:
                continue
            if isinstance(data.source, LLMService) and self._llm_ttfb is None:
                self._llm_ttfb = metric.value
            elif isinstance(data.source, TTSService) and self._tts_ttfb is None:
                self._tts_ttfb = metric.value

    async def _report(self, bot_started: float) -> None:
        assert self._vad_stop is not None
        self._turns += 1

        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds * 1000, 1)

        speech_end = self._vad_stop - self._stop_secs
        latency = TurnLatencyMetricsData(
            processor="TurnLatency",
            turn=self._turns,
            user_text=self._user_text,
            stt_final_ms=ms(self._stt_final),
            llm_ttfb_ms=ms(self._llm_ttfb),
            tts_ttfb_ms=ms(self._tts_ttfb),
            server_v2v_ms=round((bot_started - self._vad_stop + self._stop_secs) * 1000, 1),
            tool_ms=ms(self._tool_done - self._tool_started) if self._tool_started and self._tool_done else None,
            timeline_ms={name: round((at - speech_end) * 1000, 1) for name, at in self._marks.items()},
            llm_evaluated_tokens=self._evaluated[0] if self._evaluated else None,
            llm_evaluation_ms=self._evaluated[1] if self._evaluated else None,
        )
        self._reset()
        logger.info(latency.log_line())
        await self._call_event_handler("on_turn_latency", latency)
