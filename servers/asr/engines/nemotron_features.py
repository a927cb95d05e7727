"""Incremental log-mel features for NeMo streaming models.

Recomputing the spectrogram of the whole utterance at every chunk costs O(n²) over an utterance.
Here each stream keeps only the raw-audio tail that the next STFT windows still overlap, and
every call computes the frames whose windows are complete. The model's own preprocessor does the
maths (same filterbank, window, pre-emphasis and log guard), run on that short tail, and only
frames that the tail fully determines are kept, so the result equals (allclose) the features of
the whole signal, frame for frame.

Frame `i` of NeMo's FilterbankFeatures reads samples [i*hop - left_pad, i*hop - left_pad + n_fft)
(`left_pad` = n_fft // 2 for a centred STFT, (n_fft - hop) // 2 with `exact_pad`), with zero
padding outside the signal, and pre-emphasis makes each sample also depend on the one before it;
a frame is complete once the audio reaches i*hop - left_pad + span (span = n_fft, more with exact_pad).
A tail that starts on a hop boundary at sample `start` therefore reproduces frame `i` exactly when
start == 0 (the signal start, padded the same way) or i*hop - left_pad > start.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class MelTail:
    """One stream's raw-audio tail and the index of the next feature frame it owes."""

    def __init__(self, hop: int, left_pad: int, span: int) -> None:
        self.hop = hop
        self.left_pad = left_pad
        self.span = span
        self.reset()

    def reset(self) -> None:
        """Forget all audio: the next sample is the start of a new signal."""
        self._pieces: list[np.ndarray] = []
        self.start = 0
        """Absolute index of the first kept sample; always a multiple of `hop`."""
        self.total = 0
        """Absolute number of samples received."""
        self.next_frame = 0

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._pieces.append(samples)
            self.total += len(samples)

    def audio(self) -> np.ndarray:
        """The kept samples [start, total) as one array."""
        if len(self._pieces) > 1:
            self._pieces = [np.concatenate(self._pieces)]
        return self._pieces[0] if self._pieces else np.zeros(0, dtype=np.float32)

    def complete_frames(self) -> int:
        """Frames not yet emitted whose whole window lies inside the audio received so far."""
        last = (self.total + self.left_pad - self.span) // self.hop
        return max(0, last + 1 - self.next_frame)

    def advance(self, n_frames: int) -> None:
        """Mark `n_frames` as emitted and drop the samples no later frame can reach."""
        self.next_frame += n_frames
        first_needed = self.next_frame * self.hop - self.left_pad - 1
        new_start = max(self.start, first_needed // self.hop * self.hop)
        if new_start > self.start:
            self._pieces = [self.audio()[new_start - self.start :]]
            self.start = new_start


class IncrementalFeaturizer:
    """Batched incremental feature extraction with a NeMo AudioToMelSpectrogramPreprocessor."""

    def __init__(self, preprocessor: torch.nn.Module) -> None:
        featurizer = preprocessor.featurizer
        if getattr(featurizer, "frame_splicing", 1) != 1:
            raise ValueError("frame splicing is not supported in streaming")
        # Streaming features must be a pure function of the audio: no random dither, no padding to a
        # multiple of frames (it would add fake trailing frames to every call).
        featurizer.dither = 0.0
        featurizer.pad_to = 0
        self.preprocessor = preprocessor
        self.featurizer = featurizer
        self.hop: int = featurizer.hop_length
        pad = featurizer.stft_pad_amount
        self.left_pad: int = pad if pad is not None else featurizer.n_fft // 2
        # With exact_pad NeMo pads before pre-emphasis and then zeroes the last `pad` real samples
        # (its time mask uses the unpadded length), so a frame is final only `pad` samples later.
        self.span: int = featurizer.n_fft + (pad or 0)
        self.silence_frame = self._silence_frame()

    @property
    def device(self) -> torch.device:
        return self.featurizer.fb.device

    def new_tail(self) -> MelTail:
        return MelTail(self.hop, self.left_pad, self.span)

    def _silence_frame(self) -> Tensor:
        """The feature vector of digital silence, [features]: what NeMo's pipeline fills buffers with."""
        zeros = torch.zeros(1, 4 * self.span, device=self.device)
        feats, _ = self.preprocessor(input_signal=zeros, length=torch.tensor([zeros.shape[1]], device=self.device))
        return feats[0, :, feats.shape[-1] // 2].clone()

    def frame_count(self, n_samples: int) -> int:
        """How many frames NeMo computes for a whole signal of `n_samples` samples."""
        return int(self.featurizer.get_seq_len(torch.tensor(n_samples)))

    def extract(self, tails: list[MelTail], final: list[bool]) -> list[Tensor]:
        """New frames [features, n] for each tail, in one preprocessor call.

        A non-final tail yields its complete frames. A final one is the end of its signal: it also
        yields the trailing frames computed with the zero padding NeMo applies at a signal's end.
        """
        ends = [
            self.frame_count(t.total) if is_final else t.next_frame + t.complete_frames()
            for t, is_final in zip(tails, final, strict=False)
        ]
        wanted = [i for i, (t, end) in enumerate(zip(tails, ends, strict=False)) if end > t.next_frame]
        out = [torch.zeros(self.silence_frame.shape[0], 0, device=self.device) for _ in tails]
        if not wanted:
            return out
        audio = [tails[i].audio() for i in wanted]
        batch = np.zeros((len(audio), max(len(a) for a in audio)), dtype=np.float32)
        for row, a in zip(batch, audio, strict=False):
            row[: len(a)] = a
        lengths = torch.tensor([len(a) for a in audio], device=self.device)
        feats, _ = self.preprocessor(input_signal=torch.from_numpy(batch).to(self.device), length=lengths)
        for row, i in enumerate(wanted):
            tail = tails[i]
            first = tail.next_frame - tail.start // self.hop
            n_new = ends[i] - tail.next_frame
            out[i] = feats[row, :, first : first + n_new].clone()
            tail.advance(n_new)
        return out
