"""NVIDIA engine: nvidia/nemotron-speech-streaming-en-0.6b, a cache-aware streaming FastConformer-RNNT.

How audio becomes text, and why:

- Features are exact incremental log-mel frames (see nemotron_features): each call computes only the
  new frames, never the whole utterance again.
- Every encoder step feeds `pre_cache` mel frames repeated from the previous step (the left context
  of the causal subsampling convs) plus `chunk` new frames, then drops the `drop` encoder frames the
  repeat produced. All three numbers come from `encoder.streaming_cfg` once the attention context
  [left, R] is set; for 8x subsampling they are chunk = 8(R+1) frames (R+1 encoder frames of 80 ms),
  pre_cache = 9 and drop = 2. A stream starts with `pre_cache` frames of silence, as NeMo's own
  cache-aware pipeline does, so every step of every stream has the same shape and any set of streams
  can share one batched call.
- One worker thread owns the model. It takes every job that is waiting (up to `max_batch`, after a
  short collection window), stacks those streams' encoder caches along the batch axis and runs one
  `conformer_stream_step` for all of them, then splits caches and hypotheses back per stream. A
  slow or busy session never holds a lock over the others, and the event loop never runs the model.
- Nothing grows with the utterance: features keep only the STFT overlap, caches have fixed shapes,
  and a hypothesis past `max_hypothesis_tokens` moves its words (all but the last ones, cut at a word
  start) to the stream's committed transcript. NeMo concatenates and re-decodes the whole hypothesis
  at every step, so an unbounded one would cost O(n) per 80-160 ms step and memory without end.
- A hard finalize flushes the utterance with the least padding that encodes every real frame (see
  `finalize_padding`), returns the text and starts the next utterance with an empty hypothesis but
  the same encoder caches: the acoustic left context carries over. `reset()` wipes everything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from loguru import logger
from torch import Tensor

from servers import metrics
from servers.asr.engines.base import ASREngine, ASRStream, InterimCallback
from servers.asr.engines.nemotron_features import IncrementalFeaturizer, MelTail
from servers.asr.engines.transcript import Transcript
from servers.nemo_loading import ASR_MODEL, load_nemo_model

if TYPE_CHECKING:
    from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis


def _steady(value: int | list[int]) -> int:
    """streaming_cfg gives [first step, later steps] pairs for causal subsampling; every step here is a later one."""
    return value[-1] if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class StreamingGeometry:
    """Shape of one encoder step, in mel frames (`drop` in encoder frames)."""

    chunk: int
    pre_cache: int
    drop: int

    @classmethod
    def of(cls, encoder: Any) -> StreamingGeometry:
        cfg = encoder.streaming_cfg
        chunk, shift = _steady(cfg.chunk_size), _steady(cfg.shift_size)
        if chunk != shift:
            raise ValueError(
                f"overlapping chunks (chunk {chunk} != shift {shift}): only chunked_limited attention is supported"
            )
        return cls(chunk=chunk, pre_cache=_steady(cfg.pre_encode_cache_size), drop=cfg.drop_extra_pre_encoded)


def finalize_padding(pending: int, chunk: int) -> int:
    """Silence frames appended at a hard finalize to `pending` real frames not yet encoded.

    With chunked_limited attention a frame attends to its whole chunk and to nothing after it, so the
    only frames still owed are those of the unfinished chunk. Completing that chunk with silence
    gives every real frame the full in-chunk look-ahead it was trained with (and the decoder the
    padded frames to emit late tokens on); more padding would change no real frame's encoding, only
    add steps. Hence pad = (-pending) mod chunk, always < chunk = 8(R+1) frames. The reference's
    (R+1)·shift frames are R+1 whole chunks of silence: 80 ms at R=0 but 15.7 s at R=13.
    """
    return -pending % chunk


@dataclass
class _StreamState:
    """Everything one stream carries between steps. Only the worker thread touches it while a job is queued."""

    tail: MelTail
    pending: Tensor
    """[features, n] mel frames computed but not yet encoded."""
    pre_cache: Tensor
    """[features, pre_cache] the last mel frames of the previous step."""
    cache_channel: Tensor
    """[layers, 1, left context, d_model] attention cache."""
    cache_time: Tensor
    """[layers, 1, d_model, conv kernel - 1] causal-conv cache."""
    cache_len: Tensor
    """[1] valid length of cache_channel."""
    hyp: Hypothesis | None = None
    committed: Transcript = field(default_factory=Transcript)
    """Words moved out of `hyp` to keep it short (see NemotronEngine._commit_words)."""
    text: str = ""


@dataclass
class _Job:
    state: _StreamState
    final: bool
    done: concurrent.futures.Future[str]


class NemotronEngine(ASREngine):
    """Nemotron Speech streaming ASR on NeMo: every open stream decoded in one batched step."""

    name = "nemotron"

    def __init__(
        self,
        model: str = ASR_MODEL,
        right_context: int = 1,
        device: str | None = None,
        max_batch: int = 32,
        batch_window_ms: float = 2.0,
        max_hypothesis_tokens: int = 256,
    ) -> None:
        """`model`: a hub name or a .nemo path; `right_context` R: look-ahead in 80 ms encoder frames
        (the chunk is R+1 of them: R=1 is 160 ms); `batch_window_ms`: how long the worker waits for
        more streams after the first job of a batch, trading that much latency for larger batches;
        `max_hypothesis_tokens`: the longest hypothesis carried between steps (≈30 s of speech)."""
        self.model_name = model
        self.right_context = right_context
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_batch = max_batch
        self.batch_window = batch_window_ms / 1000
        self.max_hypothesis_tokens = max_hypothesis_tokens
        self._word_starts: np.ndarray = np.zeros(0, dtype=bool)
        self.model: Any = None
        self.geometry: StreamingGeometry | None = None
        self.featurizer: IncrementalFeaturizer | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    @classmethod
    def from_model(
        cls,
        asr_model: Any,
        right_context: int = 1,
        max_batch: int = 32,
        batch_window_ms: float = 2.0,
        max_hypothesis_tokens: int = 256,
    ) -> NemotronEngine:
        """An engine around an already built NeMo model (tests, or a caller that loaded it itself)."""
        device = next(asr_model.parameters()).device
        engine = cls(
            model="<in-memory>",
            right_context=right_context,
            device=str(device),
            max_batch=max_batch,
            batch_window_ms=batch_window_ms,
            max_hypothesis_tokens=max_hypothesis_tokens,
        )
        engine._setup(asr_model)
        return engine

    def load(self) -> None:
        from nemo.collections.asr.models import ASRModel

        self._setup(load_nemo_model(ASRModel, self.model_name, self.device))

    def _setup(self, asr_model: Any) -> None:
        """Put the model in streaming inference mode and start the batching worker."""
        from nemo.collections.asr.models import EncDecRNNTModel
        from omegaconf import open_dict

        if not isinstance(asr_model, EncDecRNNTModel) or not hasattr(asr_model.encoder, "set_default_att_context_size"):
            raise TypeError(f"{type(asr_model).__name__} is not a cache-aware streaming RNNT model")
        encoder = asr_model.encoder
        contexts = [list(c) for c in encoder.att_context_size_all if c[1] == self.right_context]
        if not contexts:
            raise ValueError(
                f"right_context {self.right_context} not among the model's contexts {encoder.att_context_size_all}"
            )
        normalize = asr_model.cfg.preprocessor.get("normalize", "NA")
        if normalize in ("per_feature", "all_features"):
            raise ValueError(f"preprocessor normalize={normalize!r} needs whole-utterance statistics and cannot stream")
        asr_model.eval()
        encoder.set_default_att_context_size(contexts[0])
        decoding = asr_model.cfg.decoding
        with open_dict(decoding):
            decoding.strategy = "greedy_batch"
            decoding.preserve_alignments = False
            decoding.compute_timestamps = False
        asr_model.change_decoding_strategy(decoding, verbose=False)
        self.model = asr_model
        self.geometry = StreamingGeometry.of(encoder)
        self.featurizer = IncrementalFeaturizer(asr_model.preprocessor)
        tokenizer = asr_model.tokenizer
        pieces = tokenizer.ids_to_tokens(list(range(tokenizer.vocab_size)))
        self._word_starts = np.array([p.startswith("\u2581") for p in pieces], dtype=bool)
        logger.info(f"nemotron att context {contexts[0]}: {self.geometry}, batches of up to {self.max_batch}")
        self._worker = threading.Thread(target=self._work, name="nemotron-batcher", daemon=True)
        self._worker.start()

    def open_stream(self, on_interim: InterimCallback) -> NemotronStream:
        return NemotronStream(self, on_interim)

    def close(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=10)
            self._worker = None
        self.model = None

    def new_state(self) -> _StreamState:
        """A fresh stream: no audio, silence as the first pre-encode cache, zero encoder caches, no hypothesis."""
        assert self.featurizer is not None and self.geometry is not None, "load() first"
        channel, conv, channel_len = self.model.encoder.get_initial_cache_state(
            batch_size=1, dtype=torch.float32, device=self.device
        )
        return _StreamState(
            tail=self.featurizer.new_tail(),
            pending=self._silence(0),
            pre_cache=self._silence(self.geometry.pre_cache),
            cache_channel=channel,
            cache_time=conv,
            cache_len=channel_len,
        )

    def _silence(self, n_frames: int) -> Tensor:
        assert self.featurizer is not None
        return self.featurizer.silence_frame[:, None].expand(-1, n_frames).clone()

    def submit(self, state: _StreamState, final: bool) -> concurrent.futures.Future[str]:
        """Queue a stream's ready audio for the worker; the future gives the stream's text afterwards."""
        if self._worker is None:
            raise RuntimeError("engine not loaded")
        done: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._queue.put(_Job(state, final, done))
        return done

    def _work(self) -> None:
        """The batching loop: one batch of waiting jobs at a time, until close()."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            live = [job for job in jobs if job.done.set_running_or_notify_cancel()]
            metrics.QUEUE_DEPTH.labels("asr").set(self._queue.qsize())
            if live:
                metrics.BATCH_SIZE.labels("asr").observe(len(live))
                self._run(live)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus whatever else arrives within the batch window, up to max_batch."""
        jobs = [first]
        deadline = time.monotonic() + self.batch_window
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self, jobs: list[_Job]) -> None:
        try:
            with torch.inference_mode():
                texts = self._process(jobs)
        except Exception as exc:
            logger.exception(f"nemotron batch of {len(jobs)} failed")
            for job in jobs:
                job.done.set_exception(exc)
            return
        for job, text in zip(jobs, texts, strict=False):
            job.done.set_result(text)

    def _process(self, jobs: list[_Job]) -> list[str]:
        """Features for all jobs in one call, then batched encoder steps until no stream has a full chunk."""
        assert self.featurizer is not None and self.geometry is not None
        chunk = self.geometry.chunk
        states = [job.state for job in jobs]
        finals = [job.final for job in jobs]
        new_frames = self.featurizer.extract([s.tail for s in states], finals)
        for state, frames, final in zip(states, new_frames, finals, strict=False):
            state.pending = torch.cat([state.pending, frames], dim=1)
            if final:
                pad = finalize_padding(state.pending.shape[1], chunk)
                state.pending = torch.cat([state.pending, self._silence(pad)], dim=1)
        while ready := [(s, f) for s, f in zip(states, finals, strict=False) if s.pending.shape[1] >= chunk]:
            flushing = [s for s, f in ready if f and s.pending.shape[1] == chunk]
            steady = [s for s, f in ready if not (f and s.pending.shape[1] == chunk)]
            for group, keep_all in ((steady, False), (flushing, True)):
                if group:
                    self._step(group, keep_all)
        texts = []
        for state, final in zip(states, finals, strict=False):
            texts.append(state.text)
            if final:
                state.tail.reset()
                state.hyp = None
                state.committed = Transcript()
                state.text = ""
        return texts

    def _step(self, group: list[_StreamState], keep_all_outputs: bool) -> None:
        """One batched cache-aware step: stack per-stream caches on the batch axis, run, split back."""
        assert self.geometry is not None
        chunk, pre = self.geometry.chunk, self.geometry.pre_cache
        signal = torch.stack([torch.cat([s.pre_cache, s.pending[:, :chunk]], dim=1) for s in group])
        lengths = torch.full((len(group),), signal.shape[-1], dtype=torch.int64, device=self.device)
        with self._autocast():
            _, _, channel, conv, channel_len, hyps = self.model.conformer_stream_step(
                processed_signal=signal,
                processed_signal_length=lengths,
                cache_last_channel=torch.cat([s.cache_channel for s in group], dim=1),
                cache_last_time=torch.cat([s.cache_time for s in group], dim=1),
                cache_last_channel_len=torch.cat([s.cache_len for s in group]),
                keep_all_outputs=keep_all_outputs,
                previous_hypotheses=[s.hyp for s in group],
                drop_extra_pre_encoded=self.geometry.drop,
                return_transcription=True,
            )
        for i, state in enumerate(group):
            state.cache_channel = channel[:, i : i + 1].clone()
            state.cache_time = conv[:, i : i + 1].clone()
            state.cache_len = channel_len[i : i + 1].clone()
            state.pre_cache = signal[i, :, signal.shape[-1] - pre :].clone()
            state.pending = state.pending[:, chunk:]
            state.hyp = hyps[i]
            self._commit_words(state)
            state.text = state.committed.text(hyps[i].text or "")

    def _commit_words(self, state: _StreamState) -> None:
        """Keep a long hypothesis short: its tokens before a word start in its second half become
        committed text; the rest (with the decoder state) carries on. Joining the two texts gives
        what the whole hypothesis decodes to, because the cut falls at a word start."""
        hyp = state.hyp
        if hyp is None or len(hyp.y_sequence) <= self.max_hypothesis_tokens:
            return
        ids = hyp.y_sequence.tolist() if isinstance(hyp.y_sequence, Tensor) else list(hyp.y_sequence)
        half = len(ids) // 2
        cut = next(
            (k for k in range(half, 0, -1) if ids[k] < len(self._word_starts) and self._word_starts[ids[k]]), half
        )
        decode = self.model.decoding.decode_tokens_to_str_with_strip_punctuation
        state.committed.add(decode(ids[:cut]))
        if hyp.timestamp is not None and len(hyp.timestamp) == len(ids):
            hyp.timestamp = hyp.timestamp[cut:]
        hyp.y_sequence = hyp.y_sequence[cut:]
        hyp.text = decode(ids[cut:])

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 on GPUs that have it (the encoder is trained for it); fp32 on CPU, where bf16 is slow."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


class NemotronStream(ASRStream):
    """One session. Audio is buffered on the event loop; model work goes to the engine's worker."""

    def __init__(self, engine: NemotronEngine, on_interim: InterimCallback) -> None:
        super().__init__(on_interim)
        self.engine = engine
        self.state = engine.new_state()
        self._inflight: concurrent.futures.Future[str] | None = None
        self._last_interim = ""
        self._closed = False

    async def feed(self, samples: np.ndarray) -> None:
        if self._closed or len(samples) == 0:
            return
        state = self.state
        state.tail.append(np.asarray(samples, dtype=np.float32).reshape(-1))
        assert self.engine.geometry is not None
        if state.pending.shape[1] + state.tail.complete_frames() < self.engine.geometry.chunk:
            return
        text = await self._submit(final=False)
        if text != self._last_interim:
            self._last_interim = text
            await self._on_interim(text)

    async def finalize(self, hard: bool) -> str:
        if not hard or self._closed:
            return self.state.text
        self._last_interim = ""
        if self.state.tail.total == 0:
            return ""
        return await self._submit(final=True)

    async def reset(self) -> None:
        await self._settle()
        self.state = self.engine.new_state()
        self._last_interim = ""

    async def close(self) -> None:
        self._closed = True

    async def _submit(self, final: bool) -> str:
        await self._settle()
        self._inflight = self.engine.submit(self.state, final)
        return await asyncio.wrap_future(self._inflight)

    async def _settle(self) -> None:
        """Wait out a job whose caller was cancelled mid-step, so the worker and this task never share the state."""
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([asyncio.wrap_future(self._inflight)])
