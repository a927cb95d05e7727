"""Loading NVIDIA's NeMo checkpoints, shared by the NeMo ASR and TTS engines."""

from __future__ import annotations

from typing import Any

from loguru import logger


def load_nemo_model(model_class: Any, name: str, device: Any) -> Any:
    """A NeMo model from a local `.nemo` file, or by its Hugging Face name (downloaded once, cached)."""
    logger.info(f"loading {name} on {device}")
    if name.endswith(".nemo"):
        return model_class.restore_from(name, map_location=device)
    return model_class.from_pretrained(model_name=name, map_location=device)
