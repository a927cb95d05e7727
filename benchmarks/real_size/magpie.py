"""nvidia/magpie_tts_multilingual_357m at its real size, random weights (see the YAML files beside this).

Three things stand in for what only the checkpoint has:
- the text tokenizers: the checkpoint's IPA G2P tokenizers need phoneme dictionaries from the hub,
  so each is a character tokenizer of its language, or byte-level ByT5 where NeMo has none (the
  checkpoint's own ByT5 and Arabic tokenizers are kept). Same names and order, so `MagpieEngine`
  sees the same languages, and a text embedding table of nearly the real size (3770 rows vs 3359);
- the baked speakers: five random context embeddings of the real shape (217 frames x 768), installed
  the way NeMo's `load_state_dict` installs a checkpoint's;
- the end of speech: a random model would stop at a random frame, so EOS is made impossible and
  every reply is exactly `frames` codec frames (`max_decoder_steps`), which makes costs comparable.
The codec is a random NanoCodec of the real size, saved as a .nemo because MagpieTTSModel loads its
codec from `codecmodel_path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.real_size import load_config, parameter_count

CONFIG = "magpie_tts_multilingual_357m"
CODEC_CONFIG = "nano_codec_22khz"
PUBLISHED_PARAMETERS = 357_000_000
EOS_IMPOSSIBLE = -1e4
"""A logit bias no sampled or argmax EOS survives, even after classifier-free guidance (2.5 c - 1.5 u)."""

BYT5 = "byt5"
_CHARS = "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers"
TEXT_TOKENIZERS: tuple[tuple[str, str], ...] = (
    ("english_phoneme", f"{_CHARS}.EnglishCharsTokenizer"),
    ("text_ce_tokenizer", BYT5),
    ("spanish_phoneme", f"{_CHARS}.SpanishCharsTokenizer"),
    ("german_phoneme", f"{_CHARS}.GermanCharsTokenizer"),
    ("mandarin_phoneme", BYT5),
    ("japanese_phoneme", BYT5),
    ("portuguese_Brazilian_phoneme", BYT5),
    ("hindi_phoneme", f"{_CHARS}.HindiCharsTokenizer"),
    ("arabic_AE_chartokenizer", f"{_CHARS}.ArabicCharsTokenizer"),
    ("arabic_SA_chartokenizer", f"{_CHARS}.ArabicCharsTokenizer"),
    ("arabic_MSA_chartokenizer", f"{_CHARS}.ArabicCharsTokenizer"),
    ("french_chartokenizer", BYT5),
    ("italian_chartokenizer", BYT5),
    ("vietnamese_chartokenizer", BYT5),
    ("korean_chartokenizer", BYT5),
)
"""The checkpoint's 15 tokenizer names in its order (mudler/magpie-tts.cpp, docs/architecture-magpietts.md
§4.1), each with the offline tokenizer that stands in for it."""


def byt5_folder(work_dir: Path) -> Path:
    """google/byt5-small's tokenizer written locally: it has no vocabulary file, so it needs no hub."""
    from transformers import ByT5Tokenizer

    folder = work_dir / "byt5_tokenizer"
    if not (folder / "tokenizer_config.json").is_file():
        ByT5Tokenizer().save_pretrained(str(folder))
    return folder


def text_tokenizers(work_dir: Path) -> dict[str, dict[str, str]]:
    """The `text_tokenizers` config: TEXT_TOKENIZERS, ByT5 ones read from a local folder."""
    byt5 = {"_target_": "AutoTokenizer", "pretrained_model": str(byt5_folder(work_dir))}
    return {name: dict(byt5) if target == BYT5 else {"_target_": target} for name, target in TEXT_TOKENIZERS}


def build_codec(path: Path) -> Path:
    """A random-weight NanoCodec of the real size, saved as a .nemo at `path` (reused if there)."""
    if not path.is_file():
        from nemo.collections.tts.models import AudioCodecModel

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        AudioCodecModel(cfg=load_config(CODEC_CONFIG).model).save_to(str(path))
    return path


def install_baked_speakers(model: Any, count: int, frames: int) -> None:
    """Random baked speaker contexts of shape [frames, d]: what `load_state_dict` makes of a checkpoint's."""
    dim = model.cfg.embedding_dim
    model.baked_context_embedding = torch.nn.Embedding(count, frames * dim)
    model.baked_context_embedding.weight.requires_grad_(False)
    model._baked_embedding_T = torch.tensor(frames)
    model._baked_embedding_D = torch.tensor(dim)
    model.baked_context_embedding_len = torch.full((count,), frames)


def set_eos_bias(model: Any, bias: float) -> None:
    """Make audio EOS impossible (very negative) or certain (very positive) in every codebook's logits:
    the local transformer's heads, which sample, and the parallel head, whose argmax also ends speech."""
    per_codebook = model.num_all_tokens_per_codebook
    with torch.no_grad():
        for head in model.local_transformer_out_projections:
            head.bias[model.audio_eos_id] = bias
        model.final_proj.bias[model.audio_eos_id :: per_codebook] = bias


def build_magpie_tts(device: str, work_dir: Path, frames: int) -> Any:
    """The real-size MagpieTTSModel, random weights, on `device` in eval mode; every reply is exactly
    `frames` codec frames (a multiple of the frame stacking factor, 2). `work_dir` holds the codec .nemo
    and the ByT5 tokenizer folder."""
    from nemo.collections.tts.models import MagpieTTSModel

    cfg = load_config(CONFIG)
    model_cfg = cfg.model
    stacking = model_cfg.frame_stacking_factor
    if frames < 4 or frames % stacking:
        raise ValueError(f"frames must be >= 4 (the codec's minimum) and a multiple of {stacking}, got {frames}")
    model_cfg.codecmodel_path = str(build_codec(work_dir / "nano_codec_22khz.nemo"))
    model_cfg.text_tokenizers = text_tokenizers(work_dir)
    model_cfg.inference_parameters.max_decoder_steps = frames
    torch.manual_seed(0)
    model = MagpieTTSModel(cfg=model_cfg)
    install_baked_speakers(model, cfg.baked_speakers.count, cfg.baked_speakers.frames)
    set_eos_bias(model, EOS_IMPOSSIBLE)
    return model.to(device).eval()


def magpie_parameter_count(model: Any) -> int:
    """What the released checkpoint's weights file holds, comparable to its 359,698,319 and the card's
    357M: the state dict MagpieTTSModel saves (parameters and causal-mask buffers; no codec, and no
    context encoder once speakers are baked)."""
    return sum(t.numel() for t in model.state_dict().values())


def codec_parameter_count(model: Any) -> int:
    """The codec's parameters (encoder, FSQ, decoder), a separate checkpoint of its own."""
    return parameter_count(model._codec_model)
