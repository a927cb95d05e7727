"""NVIDIA engine: nvidia/magpie_tts_multilingual_357m, an autoregressive codec-token TTS (NeMo MagpieTTSModel).

How text becomes audio, and why:

- Every segment is generated frame by frame with the model's own building blocks (text encoder,
  decoder step with classifier-free guidance, attention prior, local-transformer sampling, EOS
  detection), the loop NeMo's `do_tts` runs, but opened up so audio can leave between frames.
- Audio leaves in bounded chunks in every mode. The first segment of a reply yields after
  `first_chunk_frames` codec frames (4 frames = 186 ms of audio at 21.5 frames/s), then every
  `chunk_frames`; later segments every `later_chunk_frames`. Cancelling therefore stops generation
  at the next chunk boundary in every mode: there is no unstoppable batch call.
- Chunks are decoded by the codec with enough left context that their concatenation is the one-shot
  decode of the whole utterance: exactly for the causal NanoCodec, and with held-back frames
  crossfaded for a codec that looks ahead (see codec_stream). Both are measured on the codec at load.
- The decoder keeps its KV cache inside its modules, and sampling draws from the global RNG. Both
  belong to one reply: its caches and RNG state are installed only while its generator runs and
  taken out again before it yields, so replies interleaved chunk by chunk on the worker thread (or
  closed half way) never see each other's state, and a fixed `seed` makes every reply reproducible.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from loguru import logger
from torch import Tensor

from servers.nemo_loading import TTS_CODEC_MODEL, TTS_MODEL, TTS_TEXT_TOKENIZER, load_nemo_model, require_local
from servers.tts.engines.base import TTSEngine
from servers.tts.engines.codec_stream import CodecStream, measure_context

SPEAKERS = ("john", "sofia", "aria", "jason", "leo")
"""The released checkpoint's baked speakers, in speaker-index order (the checkpoint stores no names)."""


@dataclass
class _Utterance:
    """Decoding state of one text chunk: what NeMo's generate loop keeps in local variables."""

    context: Any
    """ContextTensorsOutput: encoded text, baked speaker context, masks."""
    dummy: tuple[Any, ...] | None
    """Unconditional inputs for classifier-free guidance."""
    codes: Tensor
    """[1, codebooks, frames] decoder input so far, starting with the BOS frame(s)."""
    codes_lens: Tensor
    step: int = 0
    done: bool = False
    prior: Tensor | None = None
    counter: list[dict[int, int]] = field(default_factory=lambda: [{}])
    last_attended: list[list[int]] = field(default_factory=lambda: [[1]])
    unfinished: dict[int, bool] = field(default_factory=dict)
    finished_counter: dict[int, int] = field(default_factory=dict)


@dataclass
class _Reply:
    """State one `synthesize` call owns; installed into the model only while that call runs."""

    rng: Tensor
    caches: list[dict[str, Any]] | None = None
    """The decoder modules' KV caches, in `_cache_modules` order; None: start empty."""


class MagpieEngine(TTSEngine):
    """Magpie TTS on NeMo, streamed frame by frame through its codec."""

    name = "magpie"
    sample_rate = 22_050
    voices = SPEAKERS
    languages = ("en", "es", "de", "fr", "vi", "it", "zh")

    def __init__(
        self,
        model: str = TTS_MODEL,
        device: str | None = None,
        first_chunk_frames: int = 4,
        chunk_frames: int = 10,
        later_chunk_frames: int = 16,
        overlap_frames: int = 2,
        max_context_frames: int = 32,
        use_cfg: bool = True,
        seed: int | None = None,
    ) -> None:
        """`model`: hub name or .nemo path. Chunk sizes are in codec frames (46 ms each): the first
        segment of a reply yields after `first_chunk_frames`, then every `chunk_frames`; later segments
        every `later_chunk_frames` (fewer codec calls, still a prompt cancel). `overlap_frames`: frames
        held back and crossfaded at joins, used only if the codec decoder looks ahead (the released
        NanoCodec is causal and needs none). `max_context_frames` caps the measured codec context.
        `use_cfg`: classifier-free guidance, as `do_tts` does. `seed`: same text, same audio."""
        if min(first_chunk_frames, chunk_frames, later_chunk_frames) < 1 or overlap_frames < 0:
            raise ValueError("chunk sizes must be >= 1 frame and overlap >= 0")
        self.model_name = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.first_chunk_frames = first_chunk_frames
        self.chunk_frames = chunk_frames
        self.later_chunk_frames = later_chunk_frames
        self.overlap_frames = overlap_frames
        self.max_context_frames = max_context_frames
        self.use_cfg = use_cfg
        self.seed = seed
        self.model: Any = None
        self.context_frames = 0
        self.hold_frames = 0
        self._cache_modules: list[torch.nn.Module] = []
        self._max_steps = 0

    @classmethod
    def from_model(cls, tts_model: Any, **kwargs: Any) -> MagpieEngine:
        """An engine around an already built MagpieTTSModel (tests, or a caller that loaded it itself)."""
        engine = cls(model="<in-memory>", device=str(next(tts_model.parameters()).device), **kwargs)
        engine._setup(tts_model)
        return engine

    def load(self) -> None:
        from nemo.collections.tts.models import MagpieTTSModel

        if self.model_name == TTS_MODEL:  # named inside the checkpoint; NeMo loads them on the way
            require_local(TTS_CODEC_MODEL)
            require_local(TTS_TEXT_TOKENIZER, "tokenizer_config.json")
        self._setup(load_nemo_model(MagpieTTSModel, self.model_name, self.device))

    def _setup(self, tts_model: Any) -> None:
        """Inference mode, deterministic tokenizers, names, and the codec's streaming geometry."""
        if not getattr(tts_model, "has_baked_context_embedding", False):
            raise TypeError(f"{type(tts_model).__name__} has no baked speakers; only such checkpoints are supported")
        from nemo.collections.tts.parts.utils.tts_dataset_utils import LANGUAGE_TOKENIZER_MAP

        tts_model.to(self.device).eval()
        self.model = tts_model
        for tokenizer in tts_model.tokenizer.tokenizers.values():
            if hasattr(tokenizer, "set_phone_prob"):
                # The model builds its tokenizers in training mode, where G2P spells 20% of words as
                # letters at random; inference wants phonemes, every time.
                tokenizer.set_phone_prob(1.0)
        self.sample_rate = int(tts_model.output_sample_rate)
        n_speakers = tts_model.num_baked_speakers
        self.voices = tuple(SPEAKERS[i] if i < len(SPEAKERS) else f"speaker{i}" for i in range(n_speakers))
        available = set(tts_model.tokenizer.tokenizers)
        self.languages = tuple(lang for lang, names in LANGUAGE_TOKENIZER_MAP.items() if available & set(names))
        self._cache_modules = [
            m for m in tts_model.decoder.modules() if hasattr(m, "cache") and hasattr(m, "use_cache")
        ]
        self._max_steps = tts_model.inference_parameters.max_decoder_steps // tts_model.frame_stacking_factor
        codec = tts_model._codec_model
        with torch.inference_mode():
            self.context_frames, look_ahead = measure_context(
                self._decode,
                tts_model.num_audio_codebooks,
                tts_model.codebook_size,
                self._samples_per_frame,
                self.max_context_frames,
            )
        self.hold_frames = min(look_ahead, self.overlap_frames)
        logger.info(
            f"magpie: {self.sample_rate} Hz, {tts_model.num_audio_codebooks} codebooks, "
            f"frame stacking {tts_model.frame_stacking_factor}, codec {type(codec.audio_decoder).__name__} "
            f"needs {self.context_frames} past / {look_ahead} future frames (holding {self.hold_frames}); "
            f"voices {self.voices}, languages {self.languages}"
        )

    @property
    def _samples_per_frame(self) -> int:
        return int(self.model.codec_model_samples_per_frame * self.sample_rate // self.model.sample_rate)

    def close(self) -> None:
        self.model = None
        self._cache_modules = []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def synthesize(self, text: str, voice: str, language: str, first: bool) -> Iterator[np.ndarray]:
        if self.model is None:
            raise RuntimeError("engine not loaded")
        speaker = self._speaker(voice)
        tokens = self._tokenize(text, language)
        if not text.strip():
            return
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        reply = _Reply(rng=torch.Generator(device=self.device).manual_seed(seed).get_state())
        stream = CodecStream(self._decode, self._samples_per_frame, self.context_frames, self.hold_frames)
        target = self.first_chunk_frames if first else self.later_chunk_frames
        for i, chunk_tokens in enumerate(tokens):
            last_chunk = i == len(tokens) - 1
            utterance: _Utterance | None = None
            while utterance is None or not utterance.done:
                with self._installed(reply):
                    if utterance is None:
                        utterance = self._start(chunk_tokens, speaker)
                    new_frames = 0
                    while not utterance.done and new_frames < target:
                        frames = self._step(utterance)
                        stream.push(frames)
                        new_frames += frames.shape[1]
                    audio = stream.pop(final=utterance.done and last_chunk)
                if len(audio):
                    target = self.chunk_frames if first else self.later_chunk_frames
                    yield self._pcm(audio)

    def _speaker(self, voice: str) -> int:
        try:
            return self.voices.index(voice.lower())
        except ValueError:
            raise ValueError(f"unknown voice {voice!r}; have {self.voices}") from None

    def _tokenize(self, text: str, language: str) -> list[Tensor]:
        """Token ids (+EOS) per text chunk; NeMo splits text longer than ~20 s of speech into sentences."""
        from nemo.collections.tts.parts.utils.tts_dataset_utils import (
            chunk_text_for_inference,
            get_tokenizer_for_language,
        )

        if language not in self.languages:
            raise ValueError(f"unknown language {language!r}; have {self.languages}")
        if language == "ja":
            text = "".join(text.split())
        tokenizer = self.model.tokenizer
        name = get_tokenizer_for_language(language, list(tokenizer.tokenizers))
        chunks, _, _ = chunk_text_for_inference(
            text=text, language=language, tokenizer_name=name, text_tokenizer=tokenizer, eos_token_id=self.model.eos_id
        )
        return [chunk.long().to(self.device) for chunk in chunks]

    @contextlib.contextmanager
    def _installed(self, reply: _Reply) -> Iterator[None]:
        """Give the model this reply's KV caches and RNG state; take them back out on the way out."""
        outer_rng = self._get_rng()
        self._set_rng(reply.rng)
        if reply.caches is None:
            self.model.decoder.reset_cache(use_cache=True)
        else:
            for module, cache in zip(self._cache_modules, reply.caches, strict=False):
                module.cache, module.use_cache = cache, True
        try:
            with torch.inference_mode():
                yield
        finally:
            reply.caches = [module.cache for module in self._cache_modules]
            reply.rng = self._get_rng()
            self.model.decoder.reset_cache(use_cache=False)
            self._set_rng(outer_rng)

    def _get_rng(self) -> Tensor:
        return torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.get_rng_state()

    def _set_rng(self, state: Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)

    def _start(self, tokens: Tensor, speaker: int) -> _Utterance:
        """Encode the text and look up the speaker; empty decoder caches (each text chunk starts afresh)."""
        model = self.model
        model.decoder.reset_cache(use_cache=True)
        batch = {
            "text": tokens[None],
            "text_lens": torch.tensor([tokens.numel()], device=self.device),
            "speaker_indices": speaker,
        }
        context = model.prepare_context_tensors(batch)
        dummy = None
        if self.use_cfg:
            dummy = model.prepare_dummy_cond_for_cfg(
                context.cond, context.cond_mask, context.additional_decoder_input, context.additional_decoder_mask
            )[:4]
        fsf = model.frame_stacking_factor
        codes = torch.full((1, model.num_audio_codebooks, fsf), model.audio_bos_id, device=self.device).long()
        return _Utterance(context, dummy, codes, codes_lens=torch.tensor([fsf], device=self.device))

    def _step(self, u: _Utterance) -> Tensor:
        """One decoder step: the next `frame_stacking_factor` frames [codebooks, n], fewer at EOS.

        Mirrors the first-chunk path of MagpieTTSModel.generate_speech, the loop behind `do_tts`."""
        from nemo.collections.tts.modules.magpietts_modules import EOSDetectionMethod, LocalTransformerType
        from nemo.collections.tts.parts.utils.helpers import get_mask_from_lengths

        model, params, ctx = self.model, self.model.inference_parameters, u.context
        fsf = model.frame_stacking_factor
        embedded, embedded_lens = model.embed_audio_tokens(u.codes, audio_tokens_lens=u.codes_lens)
        mask = get_mask_from_lengths(embedded_lens)
        if ctx.additional_decoder_input is not None:
            embedded = torch.cat([ctx.additional_decoder_input, embedded], dim=1)
            mask = torch.cat([ctx.additional_decoder_mask, mask], dim=1)
        prior: Any = u.prior
        if params.apply_prior_to_layers is not None:
            prior = [u.prior if i in params.apply_prior_to_layers else None for i in range(model.decoder.n_layers)]
        dummy = u.dummy or (None, None, None, None)
        logits, attn_probs, dec_out = model._run_chunked_forward_with_cfg(
            context_tensors=ctx,
            audio_codes_embedded=embedded,
            audio_codes_mask=mask,
            attn_prior=prior,
            use_cfg=self.use_cfg,
            cfg_scale=params.cfg_scale,
            dummy_cond=dummy[0],
            dummy_cond_mask=dummy[1],
            dummy_additional_decoder_input=dummy[2],
            dummy_addition_dec_mask=dummy[3],
            batch_size=1,
        )
        if params.apply_attention_prior and u.step >= params.start_prior_after_n_audio_steps:
            layers = params.estimate_alignment_from_layers
            scores, _ = model.get_cross_attention_scores(attn_probs, filter_layers=layers)
            attended, u.counter = model.get_most_attended_text_timestep(
                alignment_attention_scores=scores,
                last_attended_timesteps=u.last_attended,
                text_lens=ctx.text_lens,
                lookahead_window_size=params.attention_prior_lookahead_window,
                attended_timestep_counter=u.counter,
                batch_size=1,
            )
            u.last_attended.append(attended)
            u.prior, u.unfinished, u.finished_counter = model.construct_inference_prior(
                prior_epsilon=params.attention_prior_epsilon,
                cross_attention_scores=scores,
                text_lens=ctx.text_lens,
                text_time_step_attended=attended,
                attended_timestep_counter=u.counter,
                unfinished_texts=u.unfinished,
                finished_texts_counter=u.finished_counter,
                end_indices={},
                lookahead_window_size=params.attention_prior_lookahead_window,
                batch_size=1,
            )
        finished: dict[int, Any] = {}
        unfinished: dict[int, Any] = {}
        if not params.ignore_finished_sentence_tracking:
            limit = model.chunked_inference_config.finished_limit_first_chunk
            finished = {k: v for k, v in u.finished_counter.items() if v >= limit}
            unfinished = {k: v for k, v in u.unfinished.items() if v}
        sampling = {
            "temperature": params.temperature,
            "topk": params.topk,
            "unfinished_items": unfinished,
            "finished_items": finished,
            "forbid_audio_eos": u.step * fsf < params.min_generated_frames,
        }
        guidance = {"use_cfg": self.use_cfg, "cfg_scale": params.cfg_scale}
        last_logits = logits[:, -1, :]
        if model.local_transformer_type == LocalTransformerType.AR:
            codes = model._lt_helper.sample_autoregressive(
                dec_output=dec_out[:, -1, :], use_kv_cache=params.use_LT_kv_cache, **sampling, **guidance
            )
        elif model.local_transformer_type == LocalTransformerType.MASKGIT:
            codes = model._lt_helper.sample_maskgit(dec_output=dec_out[:, -1, :], **sampling, **guidance)
        else:
            codes = model.sample_codes_from_logits(last_logits, **sampling)
        argmax = model.sample_codes_from_logits(
            last_logits, **{**sampling, "temperature": model.chunked_inference_config.argmax_temperature, "topk": 1}
        )
        end = model.detect_eos(codes[0], argmax[0], EOSDetectionMethod(params.eos_detection_method))
        u.codes = torch.cat([u.codes, codes], dim=-1)
        u.codes_lens = u.codes_lens + fsf
        u.step += 1
        if end != float("inf"):
            u.done = True
            return codes[0, :, : int(end)]
        u.done = u.step >= self._max_steps
        return codes[0]

    def _decode(self, codes: Tensor) -> Tensor:
        """Codes [codebooks, frames] -> audio [frames * samples_per_frame] through the model's codec."""
        lens = torch.tensor([codes.shape[1]], device=self.device)
        audio, audio_lens, _ = self.model._codec_helper.codes_to_audio(codes[None].long().to(self.device), lens)
        return audio[0, : int(audio_lens[0])].float()

    @staticmethod
    def _pcm(audio: Tensor) -> np.ndarray:
        return (audio.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).cpu().numpy()
