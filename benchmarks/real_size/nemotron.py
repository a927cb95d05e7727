"""nvidia/nemotron-speech-streaming-en-0.6b at its real size, random weights (see the YAML beside this).

Two things stand in for what only the checkpoint has:
- the tokenizer: a SentencePiece BPE model with the real vocabulary size (1024), trained on
  synthetic words, so the decoder and joint have the real shapes;
- the emission rate: a random joint emits tokens on any frame it likes, from none to
  `max_symbols` (10) per 80 ms frame, which would make the decoder's cost anything. The builder
  fixes it instead: blank never wins and `max_symbols` is 1, so every frame emits exactly one
  token: 12.5 tokens/s, about 3.5 times English speech (≈ 2.5 words/s ≈ 3.5 BPE tokens/s). The
  decoder's cost is then known, and an upper bound on that of real speech.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.real_size import load_config

CONFIG = "nemotron_speech_streaming_en_0.6b"
PUBLISHED_PARAMETERS = 600_000_000
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwyz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def train_tokenizer(work_dir: Path, vocab_size: int) -> Path:
    """A BPE SentencePiece model of `vocab_size` pieces, trained on deterministic pseudo-words."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    folder = work_dir / f"tokenizer_{vocab_size}"
    if (folder / "tokenizer.model").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))) for _ in range(3000)]
    lines = [" ".join(rng.choice(words, size=12)) for _ in range(4000)]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    create_spt_model(
        str(corpus),
        vocab_size=vocab_size,
        sample_size=-1,
        do_lower_case=True,
        output_dir=str(folder),
        tokenizer_type="bpe",
    )
    return folder


def build_nemotron_asr(work_dir: Path, device: str = "cpu", overrides: dict[str, Any] | None = None) -> Any:
    """The real-size EncDecRNNTBPEModel with random weights and one token per frame, in eval mode.

    `overrides`: dotted config keys to change (e.g. {"encoder.n_layers": 2}) for a smaller model of
    the same shape family."""
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    cfg = load_config(CONFIG)
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value)
    vocab_size = int(cfg.pop("vocab_size"))
    cfg.tokenizer.dir = str(train_tokenizer(work_dir, vocab_size))
    cfg.decoding.greedy.max_symbols = 1
    torch.manual_seed(0)
    model = EncDecRNNTBPEModel(cfg=cfg).to(device).eval()
    with torch.no_grad():
        model.joint.joint_net[-1].bias[-1] = -1e4  # the last class is blank
    return model
