"""Magpie TTS at its real size (random weights, benchmarks/real_size) runs through our engine (CPU).

The whole model is real size: 360 M checkpoint tensors and the 62.6 M-parameter NanoCodec. On two
CPU cores that costs seconds per decoder step (every step runs the feed-forward layers over the 217
baked context frames, twice for guidance) and seconds per codec decode, so two things are cut to
keep the test near a minute, neither in the model: a reply is one first chunk (4 codec frames, two
decoder steps), and the engine measures the codec's left context over at most 8 frames (it needs 19)
instead of 32, which only makes joins between chunks inexact, and there are none here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nemo.collections.tts")

from benchmarks.real_size.magpie import PUBLISHED_PARAMETERS, build_magpie_tts, magpie_parameter_count
from servers.tts.engines.magpie import MagpieEngine

pytestmark = pytest.mark.servers

FRAMES = 4
SAMPLES_PER_FRAME = 1024
"""NanoCodec 22 kHz: 22050 / 1024 = 21.5 frames/s."""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_magpie_tts("cpu", Path(tmp_path_factory.mktemp("magpie")), FRAMES)


@pytest.fixture(scope="module")
def engine(model: Any) -> Iterator[MagpieEngine]:
    engine = MagpieEngine.from_model(model, seed=1, max_context_frames=8)
    yield engine
    engine.close()


def test_the_model_has_the_published_size(model: Any) -> None:
    assert abs(magpie_parameter_count(model) / PUBLISHED_PARAMETERS - 1) < 0.05
    assert model.frame_stacking_factor == 2 and model.num_audio_codebooks == 8
    assert model.baked_context_embedding.weight.shape == (5, 217 * 768)
    assert abs(model.text_embedding.num_embeddings / 3359 - 1) < 0.15, "the checkpoint's text table has 3359 rows"


def test_first_segment_streams_through_the_engine(engine: MagpieEngine) -> None:
    assert engine.sample_rate == 22_050
    assert engine.hold_frames == 0, "the NanoCodec decoder is causal"
    assert "en" in engine.languages and engine.voices[0] == "john"
    chunks = list(engine.synthesize("Hello there, how are you doing today?", "john", "en", first=True))
    assert [len(c) for c in chunks] == [FRAMES * SAMPLES_PER_FRAME], "EOS is impossible: exactly `frames` frames"
    assert all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    assert np.abs(chunks[0].astype(int)).max() > 0
