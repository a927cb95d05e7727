"""The Nemotron engine's streaming, batching, finalize and reset paths, on a tiny random model (CPU).

The model is built here from a config shaped like the real one (cache-aware FastConformer-RNNT,
8x causal dw_striding subsampling, chunked_limited attention with the same four look-aheads) but
with random weights and a tokenizer trained on a few sentences, so the tests check state handling
and the output contract, never words. Greedy decoding is deterministic, so equal inputs must give
equal text.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Self

import numpy as np
import pytest

pytest.importorskip("nemo.collections.asr")

import torch

from servers.asr.engines.nemotron import NemotronEngine, StreamingGeometry, finalize_padding

pytestmark = pytest.mark.servers

RIGHT_CONTEXTS = (0, 1, 6, 13)
SENTENCES = [
    "hello world how are you today",
    "the quick brown fox jumps over the lazy dog",
    "streaming speech recognition keeps a cache",
    "one two three four five six seven eight nine ten",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    """A randomly initialised cache-aware FastConformer-RNNT, small enough to run on CPU in seconds."""
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model
    from omegaconf import OmegaConf

    tok_dir = tmp_path_factory.mktemp("tokenizer")
    text = tok_dir / "text.txt"
    text.write_text("\n".join(SENTENCES * 10) + "\n")
    create_spt_model(
        str(text), vocab_size=32, sample_size=-1, do_lower_case=True, output_dir=str(tok_dir), tokenizer_type="bpe"
    )
    cfg = OmegaConf.create(
        {
            "sample_rate": 16000,
            "model_defaults": {"enc_hidden": 64, "pred_hidden": 32, "joint_hidden": 32},
            "tokenizer": {"dir": str(tok_dir), "type": "bpe"},
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "sample_rate": 16000,
                "normalize": "NA",
                "window_size": 0.025,
                "window_stride": 0.01,
                "window": "hann",
                "features": 32,
                "n_fft": 512,
                "frame_splicing": 1,
                "dither": 1e-5,
                "pad_to": 0,
            },
            "encoder": {
                "_target_": "nemo.collections.asr.modules.ConformerEncoder",
                "feat_in": 32,
                "feat_out": -1,
                "n_layers": 2,
                "d_model": 64,
                "subsampling": "dw_striding",
                "subsampling_factor": 8,
                "subsampling_conv_channels": 32,
                "causal_downsampling": True,
                "ff_expansion_factor": 2,
                "self_attention_model": "rel_pos",
                "n_heads": 4,
                "att_context_size": [[70, 13], [70, 6], [70, 1], [70, 0]],
                "att_context_style": "chunked_limited",
                "xscaling": True,
                "pos_emb_max_len": 5000,
                "conv_kernel_size": 9,
                "conv_norm_type": "layer_norm",
                "conv_context_size": "causal",
                "dropout": 0.0,
                "dropout_pre_encoder": 0.0,
                "dropout_emb": 0.0,
                "dropout_att": 0.0,
            },
            "decoder": {
                "_target_": "nemo.collections.asr.modules.RNNTDecoder",
                "normalization_mode": None,
                "random_state_sampling": False,
                "blank_as_pad": True,
                "prednet": {"pred_hidden": 32, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.0},
            },
            "joint": {
                "_target_": "nemo.collections.asr.modules.RNNTJoint",
                "log_softmax": None,
                "preserve_memory": False,
                "fuse_loss_wer": False,
                "jointnet": {"joint_hidden": 32, "activation": "relu", "dropout": 0.0},
            },
            "decoding": {"strategy": "greedy_batch", "greedy": {"max_symbols": 5}},
            "loss": {"loss_name": "default"},
        }
    )
    torch.manual_seed(0)
    model = EncDecRNNTBPEModel(cfg=cfg)
    return model.eval()


class CallCounter:
    """Wraps `conformer_stream_step` to record batch sizes, signal lengths and the calling thread."""

    def __init__(self, model) -> None:
        self.model = model
        self.original = model.conformer_stream_step
        self.calls: list[dict] = []

    def __enter__(self) -> Self:
        def counted(**kwargs):
            self.calls.append(
                {
                    "batch": kwargs["processed_signal"].shape[0],
                    "frames": kwargs["processed_signal"].shape[-1],
                    "keep_all": kwargs["keep_all_outputs"],
                    "thread": threading.current_thread(),
                }
            )
            return self.original(**kwargs)

        self.model.conformer_stream_step = counted
        return self

    def __exit__(self, *exc) -> None:
        del self.model.conformer_stream_step


@pytest.fixture
def make_engine(tiny_model):
    engines: list[NemotronEngine] = []

    def make(right_context: int = 1, batch_window_ms: float = 2.0) -> NemotronEngine:
        engine = NemotronEngine.from_model(tiny_model, right_context=right_context, batch_window_ms=batch_window_ms)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def audio(seed: int, seconds: float) -> np.ndarray:
    """Noise with a loud tone burst: deterministic input that differs per seed."""
    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


def pieces(samples: np.ndarray, seed: int) -> list[np.ndarray]:
    """Split into uneven pieces, 1 sample to 0.3 s."""
    rng = np.random.default_rng(seed)
    out, pos = [], 0
    while pos < len(samples):
        n = int(rng.integers(1, 4800))
        out.append(samples[pos : pos + n])
        pos += n
    return out


async def transcribe(engine: NemotronEngine, chunks: list[np.ndarray]) -> tuple[str, list[str]]:
    interims: list[str] = []

    async def on_interim(text: str) -> None:
        interims.append(text)

    stream = engine.open_stream(on_interim)
    for chunk in chunks:
        await stream.feed(chunk)
    final = await stream.finalize(hard=True)
    await stream.close()
    return final, interims


def test_streaming_geometry_comes_from_streaming_cfg(make_engine) -> None:
    for r in RIGHT_CONTEXTS:
        engine = make_engine(right_context=r)
        assert engine.geometry == StreamingGeometry(chunk=8 * (r + 1), pre_cache=9, drop=2)
    with pytest.raises(ValueError):
        make_engine(right_context=3)


def test_incremental_features_match_whole_signal(make_engine, tiny_model) -> None:
    engine = make_engine()
    featurizer = engine.featurizer
    signal = audio(1, 2.37)
    tail = featurizer.new_tail()
    frames = []
    for piece in pieces(signal, 2):
        tail.append(piece)
        assert len(tail.audio()) < 16000 // 2, "the tail keeps only the STFT overlap, not the utterance"
        frames.append(featurizer.extract([tail], [False])[0])
    frames.append(featurizer.extract([tail], [True])[0])
    incremental = torch.cat(frames, dim=1)
    whole, whole_len = tiny_model.preprocessor(
        input_signal=torch.from_numpy(signal)[None], length=torch.tensor([len(signal)])
    )
    assert incremental.shape[1] == int(whole_len[0])
    torch.testing.assert_close(incremental, whole[0, :, : int(whole_len[0])], rtol=1e-5, atol=1e-5)


@pytest.mark.asyncio
async def test_uneven_pieces_give_the_same_text_as_one_piece(make_engine) -> None:
    engine = make_engine()
    signal = audio(3, 3.0)
    whole_text, _ = await transcribe(engine, [signal])
    piece_text, interims = await transcribe(engine, pieces(signal, 4))
    assert isinstance(whole_text, str) and whole_text
    assert piece_text == whole_text
    assert interims and all(a != b for a, b in itertools.pairwise(interims)), "interims fire only on change"


@pytest.mark.asyncio
async def test_model_runs_off_the_event_loop(make_engine, tiny_model) -> None:
    engine = make_engine()
    with CallCounter(tiny_model) as counter:
        await transcribe(engine, [audio(5, 1.0)])
    assert counter.calls
    assert all(call["thread"] is not threading.main_thread() for call in counter.calls)


@pytest.mark.asyncio
async def test_hard_finalize_keeps_encoder_cache_and_starts_a_new_utterance(make_engine) -> None:
    engine = make_engine()
    stream = engine.open_stream(_ignore)
    await stream.feed(audio(6, 2.0))
    assert await stream.finalize(hard=False) == stream.state.text, "soft finalize is the current text"
    final = await stream.finalize(hard=True)
    assert isinstance(final, str) and final
    state = stream.state
    assert state.hyp is None and state.text == "" and await stream.finalize(hard=False) == ""
    assert state.pending.shape[1] == 0 and state.tail.total == 0
    assert int(state.cache_len[0]) > 0 and state.cache_channel.abs().sum() > 0, "encoder context survives"

    # The next utterance is encoded with that context: its caches differ from a fresh stream's.
    second = audio(7, 1.0)
    await stream.feed(second)
    fresh = engine.open_stream(_ignore)
    await fresh.feed(second)
    assert not torch.allclose(stream.state.cache_channel, fresh.state.cache_channel)


@pytest.mark.asyncio
async def test_soft_finalize_changes_nothing(make_engine) -> None:
    engine = make_engine()
    signal = audio(8, 2.0)
    stream = engine.open_stream(_ignore)
    await stream.feed(signal[:16000])
    before = (stream.state.text, stream.state.cache_channel.clone(), stream.state.tail.total)
    assert await stream.finalize(hard=False) == before[0]
    assert await stream.finalize(hard=False) == before[0]
    assert stream.state.text == before[0] and stream.state.tail.total == before[2]
    assert torch.equal(stream.state.cache_channel, before[1])
    await stream.feed(signal[16000:])
    reference, _ = await transcribe(engine, [signal])
    assert await stream.finalize(hard=True) == reference


@pytest.mark.asyncio
async def test_reset_wipes_everything(make_engine) -> None:
    engine = make_engine()
    stream = engine.open_stream(_ignore)
    await stream.feed(audio(9, 1.5))
    await stream.reset()
    state = stream.state
    assert state.hyp is None and state.text == "" and state.tail.total == 0 and state.pending.shape[1] == 0
    assert int(state.cache_len[0]) == 0 and state.cache_channel.abs().sum() == 0 and state.cache_time.abs().sum() == 0
    signal = audio(10, 2.0)
    await stream.feed(signal)
    after_reset = await stream.finalize(hard=True)
    fresh, _ = await transcribe(engine, [signal])
    assert after_reset == fresh


@pytest.mark.asyncio
async def test_concurrent_streams_share_model_calls_and_stay_isolated(make_engine, tiny_model) -> None:
    engine = make_engine(batch_window_ms=200)
    signals = [audio(11, 2.0), audio(12, 2.0)]
    alone = [await transcribe(engine, [s]) for s in signals]
    with CallCounter(tiny_model) as solo:
        await transcribe(engine, [signals[0]])
    with CallCounter(tiny_model) as shared:
        together = await asyncio.gather(*(transcribe(engine, [s]) for s in signals))
    assert [text for text, _ in together] == [text for text, _ in alone]
    assert alone[0][0] != alone[1][0], "different audio, different text: the check above can see a leak"
    assert len(shared.calls) == len(solo.calls), "both streams ride the same model calls"
    assert all(call["batch"] == 2 for call in shared.calls)


@pytest.mark.asyncio
async def test_batched_streams_with_different_histories_stay_isolated(make_engine) -> None:
    """One stream with carried-over context and a fresh one share steps, yet each gets its own result."""
    engine = make_engine(batch_window_ms=200)
    warm, first, second = audio(14, 1.0), audio(15, 1.5), audio(16, 1.5)

    async def utterance(stream, samples: np.ndarray) -> str:
        await stream.feed(samples)
        return await stream.finalize(hard=True)

    warmed = engine.open_stream(_ignore)
    await utterance(warmed, warm)
    expected = [await utterance(warmed, first), (await transcribe(engine, [second]))[0]]

    warmed = engine.open_stream(_ignore)
    await utterance(warmed, warm)
    fresh = engine.open_stream(_ignore)
    assert await asyncio.gather(utterance(warmed, first), utterance(fresh, second)) == expected


@pytest.mark.asyncio
async def test_cancelled_feed_then_reset_leaves_a_clean_stream(make_engine) -> None:
    engine = make_engine(batch_window_ms=200)
    stream = engine.open_stream(_ignore)
    feeding = asyncio.create_task(stream.feed(audio(17, 1.0)))
    await asyncio.sleep(0.05)
    feeding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await feeding
    await stream.reset()
    signal = audio(18, 1.5)
    await stream.feed(signal)
    assert await stream.finalize(hard=True) == (await transcribe(engine, [signal]))[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("right_context", RIGHT_CONTEXTS)
async def test_finalize_pads_only_to_the_end_of_the_chunk(make_engine, tiny_model, right_context: int) -> None:
    engine = make_engine(right_context=right_context)
    chunk = engine.geometry.chunk
    assert [finalize_padding(n, chunk) for n in (0, 1, chunk - 1, chunk, chunk + 3)] == [0, chunk - 1, 1, 0, chunk - 3]
    stream = engine.open_stream(_ignore)
    signal = audio(13, 1.23)
    with CallCounter(tiny_model) as feeding:
        await stream.feed(signal)
    encoded = sum(call["frames"] - engine.geometry.pre_cache for call in feeding.calls)
    pending = engine.featurizer.frame_count(len(signal)) - encoded
    with CallCounter(tiny_model) as counter:
        await stream.finalize(hard=True)
    fed = sum(call["frames"] - engine.geometry.pre_cache for call in counter.calls)
    assert fed == pending + finalize_padding(pending, chunk)
    assert 0 <= fed - pending < chunk
    assert counter.calls[-1]["keep_all"] is True


async def _ignore(text: str) -> None:
    return None


async def test_server_restores_a_nemo_file_and_serves_sessions(tiny_model, tmp_path) -> None:
    """The real loading path (`restore_from` a .nemo) behind the real WebSocket server, two sessions at once."""
    from servers.asr import protocol
    from servers.asr.client import ASRClient
    from tests.conftest import RestartableServer

    path = tmp_path / "tiny.nemo"
    tiny_model.save_to(str(path))
    server = RestartableServer("servers.asr", ["--engine", "nemotron", "--nemotron-model", str(path)], tmp_path / "log")
    await asyncio.to_thread(server.run)
    try:

        async def session(seed: int) -> protocol.Final:
            async with ASRClient(server.url) as client:
                assert client.ready.engine == "nemotron"
                pcm = (audio(seed, 1.5) * 32767).astype(np.int16)
                for i in range(0, len(pcm), 320):
                    await client.send_audio(pcm[i : i + 320].tobytes())
                await client.send_audio(b"\x01")
                error = await asyncio.wait_for(client.errors.get(), 10)
                assert error.code == protocol.ErrorCode.BAD_AUDIO
                return await client.finalize(timeout=30)

        finals = await asyncio.gather(session(1), session(2))
    finally:
        server.stop()
    for final in finals:
        assert isinstance(final.text, str) and final.latency_ms >= 0
        assert final.audio_ms == 1500.0


@pytest.mark.asyncio
async def test_long_speech_keeps_the_hypothesis_short_and_the_text_whole(tiny_model) -> None:
    """Past `max_hypothesis_tokens` the oldest words move to the committed text: the hypothesis NeMo
    re-decodes every step stays bounded, and the text holds the same tokens as an unbounded stream's."""
    bounded = NemotronEngine.from_model(tiny_model, max_hypothesis_tokens=12)
    unbounded = NemotronEngine.from_model(tiny_model, max_hypothesis_tokens=10**9)
    try:
        signal = audio(19, 8.0)
        stream = bounded.open_stream(_ignore)
        longest = 0
        for piece in pieces(signal, 20):
            await stream.feed(piece)
            if stream.state.hyp is not None:
                longest = max(longest, len(stream.state.hyp.y_sequence))
        committed = len(stream.state.committed)
        final = await stream.finalize(hard=True)
        reference, _ = await transcribe(unbounded, [signal])
    finally:
        bounded.close()
        unbounded.close()
    assert committed >= 2, "the hypothesis was trimmed more than once"
    assert longest <= 12 + 8, "a step adds at most a chunk's worth of tokens before the trim"
    # Cuts fall at word starts when there is one (random weights spell one endless word, cut anyway):
    # no token is lost or repeated.
    assert "".join(final.split()) == "".join(reference.split())
