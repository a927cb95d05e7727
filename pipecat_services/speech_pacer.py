"""The bot's speech handed to the output transport as it plays, so that it can pause (`BotSpeechPacer`).

Pipecat's output transport queues all the audio the TTS sends, seconds ahead of what is heard, and
the only way to silence it is an interruption, which drops the reply. The pacer sits just before
the output transport and hands it the audio only as the transport plays it: a tap after the
transport (`PlayedAudioTap`: the transport passes each chunk on once written) reports what played,
and no more than two of its chunks are ever on their way. So `pause()` silences the bot within that, and
`resume()` goes on from the next piece: no word lost or repeated. The frames between the audio
keep their order. The timed ones (the words as heard: the TTS times each word from its context's
first audio) go on when that much of their context's audio has played, not by the clock, which a
pause would put ahead of the speech: the context still gets only the words heard. Pause and resume
are calls, not frames: a frame would pass five processors first.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from dataclasses import dataclass

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    SystemFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

PIECE_S = 0.02
CHUNKS_AHEAD = 2
"""Transport chunks on their way to the listener at most: the one it writes and the next, which must
be ready when that one has played. With the piece it is filling, what a pause still lets through."""
STALL_S = 0.3
"""Played audio not reported this long past its length counts as played: a transport that stopped
writing (a client gone) must not hold back the frames after the audio, an EndFrame among them."""
MAX_PAUSE_S = 2.9
"""Pipecat's output transport counts the bot as stopped after 3 s without audio
(`BOT_VAD_STOP_FALLBACK_SECS`): a longer pause would end the bot's turn under it."""
NS = 1_000_000_000


class BotSpeechPacer(FrameProcessor):
    """Just before the output transport: hands it the bot's audio as it plays, and holds it while
    paused. An interruption ends a pause and drops what it held. A pause must stay under Pipecat's
    3 s without audio after which the transport counts the bot as stopped (`MAX_PAUSE_S`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._queue: deque[Frame] = deque()
        """Downstream frames in order; the audio in `PIECE_S` pieces."""
        self._timed: list[tuple[int, int, Frame]] = []
        """Frames with a presentation time, by that time."""
        self._order = itertools.count()
        self._spoken: dict[str, _Spoken] = {}
        """Each TTS context's audio so far, by its context id."""
        self.paused = False
        self._ahead_s = 0.0
        """Audio handed on and not yet reported played."""
        self._progress_at = 0
        """When audio was last reported played, or handed on with none on its way."""
        self._chunk_s = 0.04
        """The transport's chunk, as its reports show (`TransportParams.audio_out_10ms_chunks`)."""
        self.tap = PlayedAudioTap(self)
        """Goes right after the output transport."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def pause(self) -> None:
        """Hold the bot's speech where it is, until `resume()` or an interruption."""
        if not self.paused:
            self.paused = True
            logger.debug(f"{self}: paused, {1000 * self._ahead_s:.0f} ms on its way")
        self._wake.set()

    def played(self, frame: OutputAudioRawFrame) -> None:
        """The transport wrote `frame` (the tap's report)."""
        self._chunk_s = _seconds(frame)
        self._ahead_s = max(0.0, self._ahead_s - self._chunk_s)
        self._progress_at = self._now()
        self._wake.set()

    def resume(self) -> None:
        """Go on speaking from where the pause held it."""
        self.paused = False
        self._wake.set()

    def _now(self) -> int:
        return self.get_clock().get_time()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._task = self.create_task(self._release(), "release")
        elif isinstance(frame, CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            self.resume()
            self._ahead_s = 0.0
            self._spoken.clear()
            self._queue = deque(f for f in self._queue if not f.interruptible)
            self._timed = [t for t in self._timed if not t[2].interruptible]
            heapq.heapify(self._timed)
            await self.push_frame(frame, direction)
        elif isinstance(frame, SystemFrame) or direction is FrameDirection.UPSTREAM:
            await self.push_frame(frame, direction)
        else:
            self._hold(frame)

    def _hold(self, frame: Frame) -> None:
        if isinstance(frame, OutputAudioRawFrame):
            context_id = getattr(frame, "context_id", None)
            if context_id and context_id not in self._spoken:
                self._spoken[context_id] = _Spoken(self._now())  # the TTS times its words from here
            self._queue.extend(_pieces(frame))
        elif frame.pts and not isinstance(frame, TTSStoppedFrame):
            if spoken := self._spoken.get(getattr(frame, "context_id", None)):
                spoken.pending += 1
            heapq.heappush(self._timed, (frame.pts, next(self._order), frame))
        else:
            self._queue.append(frame)
        self._wake.set()

    def _due(self, frame: Frame) -> bool:
        """A word is due once its context's audio has played up to it; a frame of no context we
        heard, by the clock."""
        spoken = self._spoken.get(getattr(frame, "context_id", None))
        if spoken is None:
            return frame.pts <= self._now()
        return spoken.finished or spoken.released_s - self._ahead_s >= (frame.pts - spoken.base_ns) / NS

    async def _push_timed(self) -> None:
        while self._timed and self._due(frame := self._timed[0][2]):
            heapq.heappop(self._timed)
            if (spoken := self._spoken.get(getattr(frame, "context_id", None))) is not None:
                spoken.pending -= 1
                self._forget_if_done(frame.context_id)
            await self.push_frame(frame)

    def _forget_if_done(self, context_id: str) -> None:
        spoken = self._spoken[context_id]
        if spoken.finished and spoken.pending <= 0:
            del self._spoken[context_id]

    async def _release(self) -> None:
        """Hand on what is due, then sleep until more is (or a frame or a pause wakes it)."""
        while True:
            self._wake.clear()
            await self._push_timed()
            while self._queue and not self.paused and not isinstance(self._queue[0], OutputAudioRawFrame):
                if isinstance(self._queue[0], EndFrame) and self._timed:
                    break  # the last words heard go first
                frame = self._queue.popleft()
                if isinstance(frame, TTSStoppedFrame) and frame.context_id in self._spoken:
                    self._spoken[frame.context_id].finished = True
                    self._forget_if_done(frame.context_id)
                await self.push_frame(frame)
                if isinstance(frame, EndFrame):
                    return
            while self._ahead_s < CHUNKS_AHEAD * self._chunk_s and not self.paused and self._audio_next():
                piece = self._queue.popleft()
                if not self._ahead_s:
                    self._progress_at = self._now()
                self._ahead_s += _seconds(piece)
                if spoken := self._spoken.get(getattr(piece, "context_id", None)):
                    spoken.released_s += _seconds(piece)
                await self.push_frame(piece)
            stall_s = self._ahead_s + STALL_S - (self._now() - self._progress_at) / NS
            if self._ahead_s and stall_s <= 0:
                self._ahead_s = 0.0  # the transport stopped writing: go on by the clock
                continue
            waits = [stall_s] if self._ahead_s else []
            if self._timed and getattr(self._timed[0][2], "context_id", None) not in self._spoken:
                waits.append((self._timed[0][0] - self._now()) / NS)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.005, min(waits)) if waits else None)
            except TimeoutError:
                pass

    def _audio_next(self) -> bool:
        return bool(self._queue) and isinstance(self._queue[0], OutputAudioRawFrame)

    async def _stop(self) -> None:
        if self._task is not None:
            await self.cancel_task(self._task)
            self._task = None

    async def cleanup(self) -> None:
        await self._stop()
        await super().cleanup()


@dataclass
class _Spoken:
    """A TTS context's audio at the pacer: when it began arriving (the TTS's base for its words'
    times), how much has been handed on, whether it has ended, and its words still held."""

    base_ns: int
    released_s: float = 0.0
    finished: bool = False
    pending: int = 0


class PlayedAudioTap(FrameProcessor):
    """Right after the output transport, which passes on each audio chunk once written: tells the
    pacer what played."""

    def __init__(self, pacer: BotSpeechPacer, **kwargs) -> None:
        super().__init__(**kwargs)
        self._pacer = pacer

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame) and direction is FrameDirection.DOWNSTREAM:
            self._pacer.played(frame)
        await self.push_frame(frame, direction)


def _seconds(frame: OutputAudioRawFrame) -> float:
    return frame.num_frames / frame.sample_rate


def _pieces(frame: OutputAudioRawFrame) -> list[OutputAudioRawFrame]:
    """`frame` cut into `PIECE_S` pieces of its own kind, as the output transport cuts its chunks."""
    size = int(frame.sample_rate * PIECE_S) * frame.num_channels * 2
    if len(frame.audio) <= size:
        return [frame]
    pieces = []
    for start in range(0, len(frame.audio), size):
        piece = type(frame)(frame.audio[start : start + size], frame.sample_rate, frame.num_channels)
        piece.transport_destination = frame.transport_destination
        piece.interruptible = frame.interruptible
        if hasattr(frame, "context_id"):
            piece.context_id = frame.context_id
        pieces.append(piece)
    return pieces
