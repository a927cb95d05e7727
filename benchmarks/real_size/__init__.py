"""NVIDIA's streaming ASR and Magpie TTS at their real size, with random weights.

The hub (and so the real checkpoints) cannot be reached from our machines; the architectures can.
Each model here is built from a config file beside this module whose numbers come from public
sources (NeMo's example configs, the model cards), cited line by line in the file. The weights are
random: these models say nothing, and exist only to measure what our engines cost at the real
dimensions (latency, memory, batching) and to prove the engines run at that size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).parent


def load_config(name: str) -> Any:
    """An OmegaConf config from this folder, e.g. `load_config("nemotron_speech_streaming_en_0.6b")`."""
    from omegaconf import OmegaConf

    return OmegaConf.load(CONFIGS / f"{name}.yaml")


def parameter_count(module: Any) -> int:
    """Parameters of a torch module (all of them, trainable or not)."""
    return sum(p.numel() for p in module.parameters())
