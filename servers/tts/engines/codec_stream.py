"""Incremental decoding of a growing sequence of codec frames into seamless audio chunks.

A neural codec decoder is a stack of convolutions: the audio of frame t depends on `past` frames
before it and `look_ahead` frames after it (0 for a causal decoder), and on nothing further away.
`measure_context` finds both numbers on the actual decoder instead of trusting an architecture
table, and `CodecStream` uses them:

- every decode starts `past` frames before the first frame it still owes, so the owed audio has
  all the left context a one-shot decode of the whole utterance would give it;
- the last `hold` frames (at most the look-ahead) are decoded but kept back, because frames not yet
  generated still change them; the next decode re-renders them with that future and crossfades the
  kept estimate into the new one over those frames, so there is no step at the join.

With a causal decoder hold is 0 and the concatenated chunks equal the one-shot decode; with a
look-ahead longer than `hold` they differ only by the influence beyond `hold` frames, faded in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Decode = Callable[[Tensor], Tensor]
"""codes [codebooks, frames] -> mono audio [frames * samples_per_frame]."""


def measure_context(
    decode: Decode, num_codebooks: int, codebook_size: int, samples_per_frame: int, max_frames: int, tol: float = 1e-4
) -> tuple[int, int]:
    """(past, look_ahead): how many frames before and after a frame change its audio by more than `tol`
    (relative to the peak), each capped at `max_frames`.

    Decodes random codes, then the same codes with a block at the start (or end) replaced, and sees how
    far into the untouched frames the audio moved. Convolutions have finite support, so beyond the
    receptive field the difference is exactly zero.
    """
    block = 4
    n = 2 * max_frames + 2 * block
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, codebook_size, (num_codebooks, n), generator=gen)
    other = torch.randint(0, codebook_size, (num_codebooks, block), generator=gen)
    base = decode(codes)
    threshold = tol * max(base.abs().max().item(), 1e-6)

    def changed_frames(replace: slice) -> Tensor:
        altered = codes.clone()
        altered[:, replace] = other
        moved = ((decode(altered) - base).abs() > threshold).nonzero().flatten()
        return torch.unique(moved // samples_per_frame)

    after = changed_frames(slice(0, block))
    past = int(after.max()) - (block - 1) if after.numel() else 0
    before = changed_frames(slice(n - block, n))
    look_ahead = (n - block) - int(before.min()) if before.numel() else 0
    return min(max(past, 0), max_frames), min(max(look_ahead, 0), max_frames)


class CodecStream:
    """One utterance's codec frames in, audio chunks out; see the module docstring for the joins."""

    def __init__(self, decode: Decode, samples_per_frame: int, past: int, hold: int) -> None:
        self.decode = decode
        self.samples_per_frame = samples_per_frame
        self.past = past
        self.hold = hold
        self.codes: Tensor | None = None
        self.emitted = 0
        """Frames whose audio has been returned."""
        self.tail: Tensor | None = None
        """Audio of the held-back frames right after `emitted`, from the previous decode."""

    @property
    def frames(self) -> int:
        return 0 if self.codes is None else self.codes.shape[1]

    def push(self, codes: Tensor) -> None:
        """Append frames [codebooks, n]."""
        self.codes = codes if self.codes is None else torch.cat([self.codes, codes], dim=1)

    def pop(self, final: bool) -> Tensor:
        """Audio for every frame that is ready: all of them when `final`, else all but the held-back ones."""
        n = self.frames
        end = n if final else n - self.hold
        if self.codes is None or end <= self.emitted:
            return torch.zeros(0)
        spf = self.samples_per_frame
        start = max(0, self.emitted - self.past)
        audio = self.decode(self.codes[:, start:n])[(self.emitted - start) * spf :]
        if self.tail is not None:
            k = min(len(self.tail), len(audio))
            fade = torch.linspace(0.0, 1.0, k + 2, device=audio.device, dtype=audio.dtype)[1:-1]
            audio = torch.cat([self.tail[:k] * (1 - fade) + audio[:k] * fade, audio[k:]])
        ready = (end - self.emitted) * spf
        self.tail = None if final else audio[ready:]
        self.emitted = end
        return audio[:ready]
