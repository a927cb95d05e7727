"""What a call leaves behind, when asked: a JSONL transcript and, optionally, a stereo recording.

The transcript has one line per event, written as it happens (a crash keeps everything said so
far): `user` and `assistant` turns (the assistant's is what was heard: after a barge-in,
`interrupted` and the words played), `tool_call` and `tool_result`, and `latency` (the per-turn
numbers of `turn_metrics.py`). Each line carries `at`, the wall-clock time (ISO 8601, UTC).
The recording is Pipecat's `AudioBufferProcessor` in stereo (user left, bot right), appended to
a WAV file every few seconds, so a call of any length costs a few seconds of memory.
"""

from __future__ import annotations

import json
import wave
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipecat.frames.frames import FunctionCallInProgressFrame, FunctionCallResultFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor

RECORDING_FLUSH_S = 5
"""Seconds of call audio held before they are appended to the WAV file."""


class CallTranscript(BaseObserver):
    """Writes `<folder>/<call_id>.jsonl`; the bot feeds it turns and latency, it sees tool calls itself."""

    def __init__(self, folder: Path, call_id: str) -> None:
        super().__init__()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{call_id}.jsonl"
        self._file = self.path.open("a", buffering=1)
        self._seen: deque[int] = deque(maxlen=64)

    def write(self, event: str, **fields: Any) -> None:
        if self._file.closed:
            return
        line = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
        self._file.write(json.dumps(line, default=str) + "\n")

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if not isinstance(frame, FunctionCallInProgressFrame | FunctionCallResultFrame) or frame.id in self._seen:
            return
        self._seen.append(frame.id)  # a frame passes several processors: write it once
        if isinstance(frame, FunctionCallInProgressFrame):
            self.write("tool_call", name=frame.function_name, id=frame.tool_call_id, arguments=frame.arguments)
        else:
            self.write("tool_result", name=frame.function_name, id=frame.tool_call_id, result=frame.result)

    def close(self) -> None:
        self._file.close()


class CallRecording:
    """Stereo WAV of the call (user left, bot right), written as it goes; `processor` goes after the output."""

    def __init__(self, path: Path, sample_rate: int = 16000) -> None:
        self.path = path
        self.processor = AudioBufferProcessor(
            sample_rate=sample_rate, num_channels=2, buffer_size=sample_rate * 2 * 2 * RECORDING_FLUSH_S,
            auto_start_recording=True,
        )  # fmt: skip
        self._wav: wave.Wave_write | None = None
        self.processor.add_event_handler("on_audio_data", self._append)

    async def _append(self, _: AudioBufferProcessor, audio: bytes, sample_rate: int, channels: int) -> None:
        if self._wav is None:
            self._wav = wave.open(str(self.path), "wb")
            self._wav.setnchannels(channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(sample_rate)
        self._wav.writeframes(audio)

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
