"""The Nemotron engine at the real model's size (0.6B, random weights): shapes, caches, batching, finalize.

The tiny-model tests (test_nemotron_engine.py) check the engine's logic; this one checks that nothing
in it depends on the model being small: 24 layers of 1024 channels, 128 mel bins, the real
vocabulary, the real look-aheads. It builds the model once (≈ 2.5 GB, ≈ 20 s on 2 cores).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("nemo.collections.asr")

import torch

from benchmarks.nvidia_engines import StepCounter, no_interims, noise
from benchmarks.real_size import parameter_count
from benchmarks.real_size.nemotron import PUBLISHED_PARAMETERS, build_nemotron_asr
from servers.asr.engines.nemotron import NemotronEngine, StreamingGeometry

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def real_size_model(tmp_path_factory: pytest.TempPathFactory):
    with torch.no_grad():
        yield build_nemotron_asr(Path(tmp_path_factory.mktemp("real_size_asr")))


def test_parameter_count_matches_the_published_size(real_size_model) -> None:
    count = parameter_count(real_size_model)
    assert abs(count - PUBLISHED_PARAMETERS) / PUBLISHED_PARAMETERS < 0.05, count
    assert len(real_size_model.encoder.layers) == 24
    assert real_size_model.tokenizer.vocab_size == 1024


def test_two_streams_share_batched_steps_and_finalize(real_size_model) -> None:
    """Two concurrent streams at R=1: real cache shapes, batched steps, one token per frame, clean finalize."""
    engine = NemotronEngine.from_model(real_size_model, right_context=1)
    try:
        with StepCounter(real_size_model) as counter:
            assert engine.geometry == StreamingGeometry(chunk=16, pre_cache=9, drop=2)

            async def talk() -> list[str]:
                streams = [engine.open_stream(no_interims) for _ in range(2)]
                audio = [noise(0.8, seed) for seed in range(2)]
                for start in range(0, len(audio[0]), 2560):
                    await asyncio.gather(
                        *(s.feed(a[start : start + 2560]) for s, a in zip(streams, audio, strict=False))
                    )
                state = streams[0].state
                assert state.cache_channel.shape == (24, 1, 70, 1024)
                assert state.cache_time.shape == (24, 1, 1024, 8)
                assert state.pre_cache.shape == (128, 9)
                assert 0 < len(state.hyp.y_sequence) <= 10  # one token per 80 ms encoder frame
                finals = await asyncio.gather(*(s.finalize(hard=True) for s in streams))
                assert all(s.state.hyp is None and s.state.text == "" for s in streams)
                assert streams[0].state.cache_channel.shape == (24, 1, 70, 1024)  # context carries over
                return finals

            finals = asyncio.run(talk())
    finally:
        engine.close()
    assert all(isinstance(text, str) and text.strip() for text in finals)
    assert 2 in counter.batches, counter.batches


def test_longest_look_ahead_finalizes_a_short_utterance(real_size_model) -> None:
    """R=13 (1.12 s chunks): 0.3 s of speech never fills a chunk; the hard finalize still encodes it."""
    engine = NemotronEngine.from_model(real_size_model, right_context=13)
    try:
        assert engine.geometry == StreamingGeometry(chunk=112, pre_cache=9, drop=2)

        async def talk() -> str:
            stream = engine.open_stream(no_interims)
            await stream.feed(noise(0.3, seed=7))
            assert stream.state.hyp is None  # nothing encoded yet
            return await stream.finalize(hard=True)

        assert asyncio.run(talk()).strip()
    finally:
        engine.close()
