"""The Magpie engine's streaming, joins, cancellation and state isolation, on a tiny random model (CPU).

The model is a real MagpieTTSModel built from a config shaped like the released one (decoder_ce with
baked speakers, causal decoder with cross-attention, autoregressive local transformer, 8 codebooks of
2016 codes over a causal HiFi-GAN codec at 22 050 Hz) but with a few channels and random weights, and a
character tokenizer instead of G2P, so the tests check the output contract and state handling, never
speech. The codec is a tiny random AudioCodecModel saved to a .nemo, which is how MagpieTTSModel loads
its codec. Sampling is seeded per reply, so equal requests must give equal audio.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nemo.collections.tts")

import torch

from benchmarks.real_size.magpie import EOS_IMPOSSIBLE, install_baked_speakers, set_eos_bias
from servers.tts.engines.codec_stream import CodecStream, measure_context
from servers.tts.engines.magpie import SPEAKERS, MagpieEngine

pytestmark = pytest.mark.servers

SPF = 64
"""Codec samples per frame: up-sampling 8 * 4 * 2."""
MAX_FRAMES = 40
TEXT = "hello there, how are you doing today?"
OTHER = "the quick brown fox jumps over the lazy dog"


def codec_config(decoder: str) -> dict[str, Any]:
    modules = "nemo.collections.tts.modules.audio_codec_modules"
    return {
        "sample_rate": 22050,
        "samples_per_frame": SPF,
        "audio_encoder": {
            "_target_": f"{modules}.HiFiGANEncoder",
            "down_sample_rates": [2, 4, 8],
            "encoded_dim": 32,
            "base_channels": 8,
            "activation": "lrelu",
            "resblock_dilation_sizes": [1],
        },
        "audio_decoder": {
            "_target_": f"{modules}.{decoder}",
            "up_sample_rates": [8, 4, 2],
            "input_dim": 32,
            "base_channels": 32,
            "activation": "lrelu",
            "output_activation": "tanh",
        },
        "vector_quantizer": {
            "_target_": f"{modules}.GroupFiniteScalarQuantizer",
            "num_groups": 8,
            "num_levels_per_group": [8, 7, 6, 6],
        },
        "commit_loss_scale": 0.0,
        "loss_resolutions": [[32, 8, 32], [64, 16, 64]],
        "mel_loss_dims": [5, 10],
        "generator_loss": {"_target_": "nemo.collections.tts.losses.audio_codec_loss.GeneratorSquaredLoss"},
        "discriminator_loss": {"_target_": "nemo.collections.tts.losses.audio_codec_loss.DiscriminatorSquaredLoss"},
    }


def build_codec(decoder: str) -> Any:
    from nemo.collections.tts.models import AudioCodecModel
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    return AudioCodecModel(cfg=OmegaConf.create(codec_config(decoder))).eval()


def transformer(n_layers: int, d: int, causal: bool, cross_attention: bool = False) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "n_layers": n_layers,
        "d_model": d,
        "d_ffn": 2 * d,
        "sa_n_heads": 2,
        "kernel_size": 1,
        "p_dropout": 0.0,
        "p_dropout_out": 0.0,
        "has_xattn": cross_attention,
        "is_causal": causal,
        "apply_norm_out": True,
        "max_length_causal_mask": 512,
        "use_learnable_pos_emb": True,
    }
    if cross_attention:
        cfg.update({"xa_d_memory": d, "xa_n_heads": 1, "xa_d_head": 16, "apply_norm_to_cond": True})
    return cfg


def build_magpie(codec_path: str, frame_stacking: int = 1) -> Any:
    """A decoder_ce MagpieTTSModel with five baked speakers, as the released checkpoint has."""
    from nemo.collections.tts.models import MagpieTTSModel
    from omegaconf import OmegaConf

    tokenizers = "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers"
    d, context_frames = 32, 6
    cfg = OmegaConf.create(
        {
            "model_type": "decoder_ce",
            "codecmodel_path": codec_path,
            "embedding_dim": d,
            "frame_stacking_factor": frame_stacking,
            "prior_end_step": 0,
            "prior_scaledown_start_step": 0,
            "prior_scaling_factor": None,
            "alignment_loss_scale": 0.0,
            "local_transformer_type": "autoregressive",
            "local_transformer_n_layers": 1,
            "local_transformer_n_heads": 1,
            "local_transformer_hidden_dim": 16,
            "text_tokenizers": {
                "english": {"_target_": f"{tokenizers}.EnglishCharsTokenizer"},
                "spanish": {"_target_": f"{tokenizers}.SpanishCharsTokenizer"},
            },
            "encoder": transformer(1, d, causal=False),
            "context_encoder": transformer(1, d, causal=False),
            "decoder": transformer(2, d, causal=True, cross_attention=True),
            "inference_parameters": {"max_decoder_steps": MAX_FRAMES, "topk": 20},
        }
    )
    torch.manual_seed(0)
    model = MagpieTTSModel(cfg=cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("_codec_model") and param.dim() >= 2:
                param.normal_(0.0, 0.1)  # large enough that text and speaker change what is sampled
    set_eos_bias(model, EOS_IMPOSSIBLE)  # a random model would otherwise stop at random
    install_baked_speakers(model, len(SPEAKERS), context_frames)
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model's ops are too small to gain from threads, and lose a lot to them on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def codec_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("codec") / "codec.nemo"
    build_codec("CausalHiFiGANDecoder").save_to(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(codec_path: str) -> Any:
    return build_magpie(codec_path)


@pytest.fixture(scope="module")
def engine(tiny_model: Any) -> Iterator[MagpieEngine]:
    engine = MagpieEngine.from_model(tiny_model, seed=1234)
    yield engine
    engine.close()


class StepCounter:
    """Counts decoder forward passes (one per decoder step) by wrapping the model's `forward`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls = 0

    def __enter__(self) -> StepCounter:
        original = self.model.forward

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        self.model.forward = counted
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.forward


def run(engine: MagpieEngine, text: str = TEXT, voice: str = "sofia", first: bool = True) -> list[np.ndarray]:
    return list(engine.synthesize(text, voice, "en", first))


def decoder_is_clean(model: Any) -> bool:
    """No KV cache left in (or switched on for) any decoder module."""
    return all(
        not m.use_cache and all(v is None or v is False for v in m.cache.values())
        for m in model.decoder.modules()
        if hasattr(m, "cache") and hasattr(m, "use_cache")
    )


def test_contract_names_and_rate_come_from_the_model(engine: MagpieEngine) -> None:
    assert engine.sample_rate == 22050
    assert engine.voices == SPEAKERS
    assert engine.languages == ("en", "es")
    assert engine.hold_frames == 0, "a causal codec needs no held-back frames"
    chunks = run(engine)
    assert chunks and all(c.dtype == np.int16 and c.ndim == 1 and len(c) for c in chunks)
    assert sum(len(c) for c in chunks) == MAX_FRAMES * SPF, "the random model never says EOS: every frame is audio"
    with pytest.raises(ValueError):
        run(engine, voice="nobody")
    with pytest.raises(ValueError):
        list(engine.synthesize(TEXT, "john", "xx", True))


def test_first_segment_streams_small_chunks_first(engine: MagpieEngine, tiny_model: Any) -> None:
    with StepCounter(tiny_model) as steps:
        reply = engine.synthesize(TEXT, "aria", "en", True)
        first = next(reply)
        assert steps.calls == engine.first_chunk_frames == 4
        assert len(first) == 4 * SPF
        rest = list(reply)
    assert [len(c) // SPF for c in rest] == [10, 10, 10, 6]


def test_later_segments_still_yield_bounded_chunks(engine: MagpieEngine) -> None:
    assert [len(c) // SPF for c in run(engine, first=False)] == [16, 16, 8]


def test_chunks_join_into_the_one_shot_decode(engine: MagpieEngine) -> None:
    frames: list[torch.Tensor] = []
    step = engine._step

    def recording(utterance: Any) -> torch.Tensor:
        out = step(utterance)
        frames.append(out)
        return out

    engine._step = recording
    try:
        streamed = np.concatenate(run(engine))
    finally:
        del engine._step
    with torch.inference_mode():
        whole = MagpieEngine._pcm(engine._decode(torch.cat(frames, dim=1)))
    assert len(streamed) == len(whole)
    assert np.abs(streamed.astype(int) - whole.astype(int)).max() <= 2, "joins differ from the one-shot decode"


@pytest.mark.parametrize("first", [True, False])
def test_close_stops_generation_at_the_chunk_boundary(engine: MagpieEngine, tiny_model: Any, first: bool) -> None:
    with StepCounter(tiny_model) as steps:
        reply = engine.synthesize(TEXT, "leo", "en", first)
        next(reply)
        next(reply)
        after_two = steps.calls
        assert after_two == (4 + 10 if first else 16 + 16), "the engine ran ahead of the chunks taken"
        reply.close()
        assert steps.calls == after_two
    assert decoder_is_clean(tiny_model)


def test_a_reply_closed_half_way_leaves_nothing_behind(engine: MagpieEngine) -> None:
    fresh = run(engine)
    reply = engine.synthesize(OTHER, "jason", "en", True)
    next(reply)
    reply.close()
    again = run(engine)
    assert len(fresh) == len(again) and all(np.array_equal(a, b) for a, b in zip(fresh, again, strict=False))


def test_interleaved_replies_match_their_solo_runs(engine: MagpieEngine) -> None:
    solo_a, solo_b = run(engine, TEXT, "john"), run(engine, OTHER, "sofia", first=False)
    a, b = engine.synthesize(TEXT, "john", "en", True), engine.synthesize(OTHER, "sofia", "en", False)
    got: dict[str, list[np.ndarray]] = {"a": [], "b": []}
    live = {"a": a, "b": b}
    while live:
        for key in list(live):
            try:
                got[key].append(next(live[key]))
            except StopIteration:
                del live[key]
    assert not np.array_equal(np.concatenate(solo_a)[: 16 * SPF], np.concatenate(solo_b)[: 16 * SPF])
    for mine, solo in ((got["a"], solo_a), (got["b"], solo_b)):
        assert len(mine) == len(solo) and all(np.array_equal(x, y) for x, y in zip(mine, solo, strict=False))


def test_end_of_speech_drops_the_eos_frame(engine: MagpieEngine, tiny_model: Any) -> None:
    """With EOS made certain, the utterance ends at the first step EOS is allowed (min_generated_frames)."""
    set_eos_bias(tiny_model, 1e4)
    try:
        with StepCounter(tiny_model) as steps:
            chunks = run(engine)
    finally:
        set_eos_bias(tiny_model, EOS_IMPOSSIBLE)
    frames = tiny_model.inference_parameters.min_generated_frames
    assert steps.calls == frames + 1
    assert sum(len(c) for c in chunks) == frames * SPF


def test_long_text_is_spoken_sentence_by_sentence_in_one_stream(engine: MagpieEngine, tiny_model: Any) -> None:
    """Text over NeMo's ~20 s threshold is split into sentences; each is generated afresh, one audio stream."""
    sentence = " ".join(["one two three four five six seven eight nine ten eleven twelve"] * 2) + "."
    with StepCounter(tiny_model) as steps:
        chunks = list(engine.synthesize(f"{sentence} {sentence}", "john", "en", False))
    assert steps.calls == 2 * MAX_FRAMES
    assert [len(c) // SPF for c in chunks] == [16, 16, 8] * 2
    assert decoder_is_clean(tiny_model)


def test_frame_stacking_streams_whole_decoder_steps(codec_path: str) -> None:
    model = build_magpie(codec_path, frame_stacking=2)
    engine = MagpieEngine.from_model(model, seed=7)
    with StepCounter(model) as steps:
        chunks = run(engine)
    assert steps.calls == MAX_FRAMES // 2
    assert [len(c) // SPF for c in chunks] == [4, 10, 10, 10, 6]


@pytest.mark.parametrize("decoder", ["CausalHiFiGANDecoder", "HiFiGANDecoder"])
def test_codec_stream_joins_without_steps(decoder: str) -> None:
    """Causal codec: chunks equal the one-shot decode. Look-ahead codec: held-back frames are crossfaded,
    so the stream stays close to the one-shot decode and no join jumps more than the signal itself does."""
    codec = build_codec(decoder)

    def decode(codes: torch.Tensor) -> torch.Tensor:
        lens = torch.tensor([codes.shape[1]])
        audio, audio_lens = codec.decode(tokens=codes[None].long(), tokens_len=lens)
        return audio[0, : int(audio_lens[0])]

    with torch.inference_mode():
        past, look_ahead = measure_context(decode, 8, 2016, SPF, max_frames=32)
        assert past > 0 and (look_ahead == 0) == (decoder == "CausalHiFiGANDecoder")
        codes = torch.randint(0, 2016, (8, 57), generator=torch.Generator().manual_seed(3))
        whole = decode(codes)
        stream = CodecStream(decode, SPF, past, hold=min(look_ahead, 2))
        pieces, at = [], 0
        for n in (4, 10, 10, 10, 10, 10, 3):
            stream.push(codes[:, at : at + n])
            at += n
            pieces.append(stream.pop(final=at == codes.shape[1]))
    streamed = torch.cat(pieces)
    assert streamed.shape == whole.shape
    error = (streamed - whole).abs().max().item()
    peak = whole.abs().max().item()
    if look_ahead == 0:
        assert error < 1e-4 * peak * 10
    else:
        assert error < 0.05 * peak
        joins = np.cumsum([len(p) for p in pieces])[:-1]
        jumps = (streamed[joins] - streamed[joins - 1]).abs()
        assert jumps.max().item() <= (whole[1:] - whole[:-1]).abs().max().item()
