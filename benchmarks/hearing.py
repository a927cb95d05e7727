"""Hearing benchmark: how well the running bot hears over WebRTC, beside its own ASR engine on the
same clips.

    scripts/run.sh                                   # the stack, in another terminal
    python -m benchmarks.hearing                     # 50 clips per set, two runs
    python -m benchmarks.hearing --clips 5 --runs 1 --sets clean,paused --json
    scripts/hearing-compare.sh OLD --clips 20 --runs 1   # git ref OLD's stack and this one's, in turn
    python -m benchmarks.hearing --phone twilio --speaker piper   # each clip also over a phone line

The sets are made here from espeak-ng voices, or Piper's with `--speaker piper` (nothing
downloaded; `--seed` fixes them):
  clean    one question per clip, the voices varied
  paused   the same questions with one 120-400 ms pause between two of their words
  noisy    the clean clips under babble (three other voices) or fan-like noise, at 0, 5 and 10 dB SNR
  noise    the babble or fan noise alone: it must make no user turn
Per set: the bot's WER (each turn's `user_text`, from its `turn_latency` message) beside the
yardstick, the embedded engine decoding each whole clip offline; how many clips lost their first
word; for `noise`, how many made a turn; and the voice-to-voice time at the client (end of the clip's
speech to the reply's first audio). The clips are played by `conversation.converse`, so another
transport's client can reuse the sets and the scoring. Each clip is a session of its own (no answer
depends on another, and a bot that ends the call on "goodbye" ends only that clip's), left once the
reply starts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.audio import NaturalVoice, read_wav, speak, with_pause
from benchmarks.conversation import QUESTIONS, VARIED_QUESTIONS, converse
from benchmarks.phone_client import phone_bot
from benchmarks.scoring import normalize, wer
from benchmarks.stats import summary
from benchmarks.voice_client import VoiceClient
from servers.ports import BOT_PORT

VOICES = ("en-us+m3", "en-us+f3", "en-gb", "en-gb-x-rp+f2", "en-029", "en-gb-scotland+m2")
SETS = ("clean", "paused", "noisy", "noise")
SNRS_DB = (0, 5, 10)
RATE = 16_000


@dataclass(frozen=True)
class Clip:
    """One clip of a set: what was said (empty for noise alone) and its audio."""

    name: str
    script: str
    audio: np.ndarray


class ClipMaker:
    """Speech and noise from espeak-ng, deterministic for a seed."""

    def __init__(self, folder: Path, seed: int, natural: NaturalVoice | None = None) -> None:
        self.folder = folder
        self.rng = np.random.default_rng(seed)
        self.natural = natural
        self._made = 0

    def say(self, text: str, voice: str) -> np.ndarray:
        """`text` in espeak-ng's `voice`, or in the natural voice when there is one."""
        self._made += 1
        words_per_minute = int(self.rng.integers(140, 175))
        if self.natural:
            return self.natural.say(text)
        return read_wav(speak(text, self.folder / f"{self._made}.wav", voice, words_per_minute))

    def babble(self, seconds: float) -> np.ndarray:
        """Three voices talking at once, none of them the user."""
        voices = self.rng.choice(VOICES, 3, replace=False)
        lines = self.rng.choice(VARIED_QUESTIONS, 3, replace=False)
        mix = sum(
            _fit(self.say(str(line), str(voice)).astype(np.float32), seconds)
            for line, voice in zip(lines, voices, strict=True)
        )
        return mix / max(1e-9, _rms(mix))

    def fan(self, seconds: float) -> np.ndarray:
        """Low-frequency broadband noise, like a fan or a street."""
        white = self.rng.standard_normal(round(seconds * RATE)).astype(np.float32)
        smooth = np.convolve(white, np.ones(8) / 8, mode="same")
        return smooth / max(1e-9, _rms(smooth))

    def noise(self, seconds: float) -> tuple[str, np.ndarray]:
        """Babble or fan noise, by chance, and which."""
        return ("babble", self.babble(seconds)) if self.rng.random() < 0.5 else ("fan", self.fan(seconds))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64))))) if len(x) else 0.0


def _fit(x: np.ndarray, seconds: float) -> np.ndarray:
    n = round(seconds * RATE)
    return np.resize(x, n) if len(x) else np.zeros(n, np.float32)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -32768, 32767).astype(np.int16)


def make_sets(
    n: int, folder: Path, seed: int, wanted: tuple[str, ...], natural: NaturalVoice | None = None
) -> dict[str, list[Clip]]:
    """`n` clips per set in `wanted`; the noisy set is the clean one under noise."""
    maker = ClipMaker(folder, seed, natural)
    questions = [*QUESTIONS, *VARIED_QUESTIONS]
    scripts = [questions[i % len(questions)] for i in range(n)]
    voices = [VOICES[i % len(VOICES)] for i in range(n)]
    clean = [Clip(f"clean{i}", s, maker.say(s, v)) for i, (s, v) in enumerate(zip(scripts, voices, strict=True))]
    sets: dict[str, list[Clip]] = {"clean": clean}
    if "paused" in wanted:
        sets["paused"] = []
        for i, (script, voice) in enumerate(zip(scripts, voices, strict=True)):
            words = script.split()
            cut = int(maker.rng.integers(1, len(words))) if len(words) > 1 else 1
            before, after = maker.say(" ".join(words[:cut]), voice), maker.say(" ".join(words[cut:]) or ".", voice)
            pause = float(maker.rng.uniform(0.12, 0.40))
            sets["paused"].append(Clip(f"paused{i}-{pause * 1000:.0f}ms", script, with_pause(before, after, pause)))
    if "noisy" in wanted:
        sets["noisy"] = []
        for i, clip in enumerate(clean):
            snr = SNRS_DB[i % len(SNRS_DB)]
            speech = np.concatenate([np.zeros(RATE // 4, np.int16), clip.audio]).astype(np.float32)
            kind, noise = maker.noise(len(speech) / RATE)
            noise = noise * _rms(clip.audio) / 10 ** (snr / 20)
            sets["noisy"].append(Clip(f"noisy{i}-{snr}dB-{kind}", clip.script, _to_int16(speech + noise)))
    if "noise" in wanted:
        level = 0.05 * 32768
        noises = enumerate(maker.noise(1.5) for _ in range(n))
        sets["noise"] = [Clip(f"noise{i}-{kind}", "", _to_int16(noise * level)) for i, (kind, noise) in noises]
    return {name: clips for name, clips in sets.items() if name in wanted}


async def offline(clips: list[Clip]) -> list[str]:
    """The yardstick: the embedded engine as it was when it was set (greedy) decoding each whole clip."""
    from servers.asr.engines.whisper import WhisperEngine

    engine = WhisperEngine(beam_size=1)
    engine.load()
    padded = [np.concatenate([c.audio, np.zeros(RATE // 2, np.int16)]).astype(np.float32) / 32768 for c in clips]
    return [(await engine.transcribe(audio)).strip() for audio in padded]


def first_word_lost(script: str, heard: str | None) -> bool:
    expected, got = normalize(script).split(), normalize(heard or "").split()
    return bool(expected) and (not got or got[0] != expected[0])


async def main_async(args: argparse.Namespace) -> None:
    wanted = tuple(args.sets.split(","))
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        sets = make_sets(args.clips, Path(tmp), args.seed, wanted, NaturalVoice() if args.speaker == "piper" else None)
        clients: dict[str, Callable[[], VoiceClient] | None] = {"webrtc": None}
        if args.phone:
            clients[args.phone] = stack.enter_context(phone_bot(args.phone, Path(tmp) / "phone"))
        for name, clips in sets.items():
            engine = await offline(clips) if name != "noise" else []
            for run, (transport, new_client) in itertools.product(range(1, args.runs + 1), clients.items()):
                await play_set(args, name, clips, engine, (run, transport), new_client)


async def play_set(
    args: argparse.Namespace,
    name: str,
    clips: list[Clip],
    engine: list[str],
    run: tuple[int, str],
    new_client: Callable[[], VoiceClient] | None,
) -> None:
    """One run over one set, through one transport's client; prints its line (and JSON lines)."""
    label = f"{name} run {run[0]} {run[1]}"
    timeout = 4.0 if name == "noise" else args.turn_timeout
    played = [(c.name, c.audio) for c in clips]
    results, _ = await converse(
        args.url, played, turn_timeout=timeout, fresh_sessions=True, reply_start_only=True, new_client=new_client
    )
    heard = [r.heard for r in results]
    if args.json:
        for clip, bot in zip(clips, heard, strict=True):
            line = {"set": name, "run": run[0], "transport": run[1], "clip": clip.name, "script": clip.script}
            print(json.dumps(line | {"bot": bot}))
    if name == "noise":
        turns = sum(bool(h and h.strip()) for h in heard)
        print(f"{label}: {turns}/{len(clips)} noise clips made a user turn")
        return
    scripts = [c.script for c in clips]
    lost = sum(first_word_lost(s, h) for s, h in zip(scripts, heard, strict=True))
    engine_lost = sum(first_word_lost(s, e) for s, e in zip(scripts, engine, strict=True))
    v2v = {k: [getattr(r, k) for r in results if getattr(r, k) is not None] for k in ("client_v2v_ms", "server_v2v_ms")}
    print(
        f"{label}: bot WER {wer(scripts, [h or '' for h in heard]):.3f}, engine on whole clips "
        f"{wer(scripts, engine):.3f}, first word lost {lost}/{len(clips)} (engine {engine_lost}), no turn "
        f"{sum(h is None for h in heard)}/{len(clips)}"
        + "".join(
            f", {k.removesuffix('_ms').replace('_', ' ')} p50 {summary(v)['p50']:.0f} ms p90 {summary(v)['p90']:.0f} ms"
            for k, v in v2v.items()
            if v
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"http://localhost:{BOT_PORT}", help="the bot's runner (default: %(default)s)")
    parser.add_argument("--clips", type=int, default=50, help="clips per set")
    parser.add_argument("--runs", type=int, default=2, help="runs over each set")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--turn-timeout", type=float, default=30.0, help="seconds to wait for a reply")
    parser.add_argument("--json", action="store_true", help="one JSON line per clip as well")
    parser.add_argument(
        "--phone", choices=["twilio", "telnyx"],
        help="also call each clip in over that carrier's media stream (8 kHz mu-law), to a phone bot started "
        "here on the same model servers",
    )  # fmt: skip
    parser.add_argument(
        "--speaker", choices=["espeak", "piper"], default="espeak",
        help="the clips' voices: espeak-ng's (varied) or Piper's neural one (natural speech; what a phone line needs)",
    )  # fmt: skip
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
