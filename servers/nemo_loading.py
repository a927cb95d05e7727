"""Loading NVIDIA's NeMo checkpoints, shared by the NeMo ASR and TTS engines.

A Hugging Face name resolves the way NeMo's `from_pretrained` does: `<repo>/<name>.nemo`, from the
Hugging Face cache. Deployments download every checkpoint first (`python -m servers.model_fetch`)
and run the servers offline, so a missing checkpoint is one clear line, not a hub error mid-load.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

from loguru import logger

ASR_MODEL = "nvidia/nemotron-speech-streaming-en-0.6b"
TTS_MODEL = "nvidia/magpie_tts_multilingual_357m"
TTS_CODEC_MODEL = "nvidia/nemo-nano-codec-22khz-1.89kbps-21.5fps"
"""The codec the Magpie checkpoint names in its `codecmodel_path`: NeMo loads it by that name."""
TTS_TEXT_TOKENIZER = "google/byt5-small"
"""The tokenizer the Magpie checkpoint's character front ends load by name (transformers'
AutoTokenizer; not inside the .nemo): its JSON files must be in the cache too."""
PINNED_REVISIONS = {
    ASR_MODEL: "ebe59e5a817142986528bbbee5dba8db7b38ed50",
    TTS_MODEL: "19806879b16d3f2ccf28fb112b1bcd16a3c7923e",
    TTS_CODEC_MODEL: "fc00890b604aa2de298d2641ffc6c5f6caf8c4d7",
    TTS_TEXT_TOKENIZER: "68377bdc18a2ffec8a0533fef03b1c513a4dd49d",
}
"""The hub commits deployments fetch, as NVIDIA's own NeMo-Speech.cpp pins them (models/index.json):
these repositories are re-released under the same name (Magpie's 2026-07 checkpoint, v2607, brought
frame stacking 2, which our engine and benchmarks/real_size follow), so `main` is not a version."""


class ModelMissing(FileNotFoundError):
    """A checkpoint that must come from the local cache is not there."""


def nemo_filename(name: str) -> str:
    """The file NeMo's `from_pretrained` fetches for a hub name."""
    return PurePosixPath(name).name + ".nemo"


def require_local(name: str, filename: str | None = None) -> None:
    """Raise `ModelMissing` if `name` (hub name or .nemo path) cannot be loaded without the network;
    `filename`: the file of the hub repository to look for (default: NeMo's `<name>.nemo`).

    A hub name is only checked when the hub is off (HF_HUB_OFFLINE=1, as in our images): online,
    NeMo downloads it itself."""
    if name.endswith(".nemo"):
        if not os.path.isfile(name):
            raise ModelMissing(f"{name} does not exist")
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return
    cached = try_to_load_from_cache(repo_id=name, filename=filename or nemo_filename(name))
    if not isinstance(cached, str):
        raise ModelMissing(
            f"{name} is not in the model cache ({constants.HF_HUB_CACHE}) and the hub is off (HF_HUB_OFFLINE): "
            "download it first with `python -m servers.model_fetch` (compose runs it as the `models` service)"
        )


def load_nemo_model(model_class: Any, name: str, device: Any) -> Any:
    """A NeMo model from a local `.nemo` file, or by its Hugging Face name (downloaded once, cached)."""
    require_local(name)
    logger.info(f"loading {name} on {device}")
    if name.endswith(".nemo"):
        return model_class.restore_from(name, map_location=device)
    return model_class.from_pretrained(model_name=name, map_location=device)
