"""Ear benchmark: Whisper variants on the hearing sets' clips, each clip decoded whole, offline.

    python -m benchmarks.ear                                  # tiny.en, beams 1 and 5, 30 clips
    python -m benchmarks.ear --models tiny,/models/whisper-base --beams 1,5 --clips 50
    python -m benchmarks.ear --denoise                        # also each clip through noisereduce

Prints per variant the WER on clean clips and on the noisy ones by SNR and noise kind, and the
decode time (p50/p90) on this machine. The clips are `benchmarks.hearing`'s (same seed, same
recipe); `tiny` is the packaged tiny.en, any other model is a CTranslate2 Whisper directory. The
denoiser (`pip install noisereduce`: spectral gating) runs before the engine, as a suppressor in
front of the ASR would.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.hearing import RATE, SNRS_DB, Clip, make_sets
from benchmarks.scoring import wer
from benchmarks.stats import summary
from servers.asr.engines.whisper import WhisperEngine


def groups(clips: list[Clip]) -> dict[str, list[Clip]]:
    """Clean, then the noisy clips by SNR and kind (their names say both)."""
    found = {"clean": [c for c in clips if c.name.startswith("clean")]}
    for snr in SNRS_DB:
        for kind in ("babble", "fan"):
            found[f"{snr}dB {kind}"] = [c for c in clips if c.name.endswith(f"-{snr}dB-{kind}")]
    return {name: members for name, members in found.items() if members}


def denoised(audio: np.ndarray) -> np.ndarray:
    import noisereduce

    return noisereduce.reduce_noise(y=audio.astype(np.float32), sr=RATE)


async def score(engine: WhisperEngine, clips: list[Clip], denoise: bool) -> tuple[dict[str, str], list[float]]:
    """Each clip's text, and each decode's milliseconds (a denoiser's included)."""
    texts, ms = {}, []
    for clip in clips:
        started = time.perf_counter()
        audio = denoised(clip.audio) if denoise else clip.audio.astype(np.float32)
        padded = np.concatenate([audio, np.zeros(RATE // 2, np.float32)]) / 32768
        texts[clip.name] = await engine.transcribe(padded.astype(np.float32))
        ms.append((time.perf_counter() - started) * 1000)
    return texts, ms


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sets = make_sets(args.clips, Path(tmp), args.seed, ("clean", "noisy"))
    clips = sets["clean"] + sets["noisy"]
    by_group = groups(clips)
    print("clips: " + ", ".join(f"{name} {len(members)}" for name, members in by_group.items()))
    for model in args.models.split(","):
        for beam in (int(b) for b in args.beams.split(",")):
            engine = WhisperEngine(model_path=None if model == "tiny" else model, beam_size=beam)
            engine.load()
            for denoise in (False, True) if args.denoise else (False,):
                texts, ms = await score(engine, clips, denoise)
                label = f"{Path(model).name} beam {beam}{' +noisereduce' if denoise else ''}"
                wers = "  ".join(
                    f"{name} {wer([c.script for c in members], [texts[c.name] for c in members]):.3f}"
                    for name, members in by_group.items()
                )
                decode = summary(ms)
                print(f"{label:<28} {wers}  decode p50 {decode['p50']:.0f} ms p90 {decode['p90']:.0f} ms", flush=True)
            engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny", help="comma-separated: tiny, or CTranslate2 Whisper dirs")
    parser.add_argument("--beams", default="1,5", help="comma-separated beam sizes")
    parser.add_argument("--clips", type=int, default=30, help="clips per set (clean, and the same under noise)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--denoise", action="store_true", help="also each variant after noisereduce")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
