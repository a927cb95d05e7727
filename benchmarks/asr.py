"""ASR benchmark: hard finalize → final transcript latency (what the bot waits for) and RTF.

    python -m benchmarks.asr                       # embedded whisper server, generated utterances
    python -m benchmarks.asr --url ws://HOST:8080  # an already running server (any engine)
    python -m benchmarks.asr clips/ a.wav --sessions 4

Each utterance streams in real time in 20 ms frames. Two passes over the same utterances:
  bot      the soft finalize at the end of speech, silence, the hard finalize `--soft-lead-ms` later
           (as the bot's VAD does): final_ms = hard finalize → final transcript, what the bot waits for
  cold     the hard finalize right at the end of speech, nothing sent before: final_ms is the whole
           decode, and rtf = final_ms / utterance duration
server_ms is the server's own hard finalize → final sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.audio import chunks, read_wav, speak
from benchmarks.scoring import wer
from benchmarks.servers import running_server
from benchmarks.stats import fmt
from servers.asr.client import ASRClient
from servers.asr.engines.whisper import WINDOW, window_rms

UTTERANCES = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Please turn on the lights in the kitchen and close the blinds.",
    "Tell me a short story about a brave little dog who finds his way home.",
    "Can you remind me to call my mother tomorrow morning?",
    "What should I cook for dinner tonight if I only have rice, eggs and spinach?",
    "Is it going to rain this afternoon?",
    "Explain in one sentence why the sky looks blue during the day.",
]


def load_clips(paths: list[str], workdir: Path) -> list[tuple[str | None, np.ndarray]]:
    """(reference text or None, 16 kHz int16 audio ending 100 ms after the speech) per utterance."""
    if not paths:
        return [(t, trim_trailing_silence(read_wav(speak(t, workdir / f"u{i}.wav")))) for i, t in enumerate(UTTERANCES)]
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.wav")) if p.is_dir() else [p]
    return [(None, trim_trailing_silence(read_wav(f))) for f in files]


def trim_trailing_silence(audio: np.ndarray, keep_ms: int = 100, threshold: float = 0.01) -> np.ndarray:
    """Cut the clip's own trailing silence so that "end of speech" is where the benchmark says it is."""
    voiced = np.flatnonzero(window_rms(audio.astype(np.float32) / 32768) > threshold)
    end = (int(voiced[-1]) + 1) * WINDOW + 16 * keep_ms if len(voiced) else len(audio)
    return audio[:end]


async def run_utterance(client: ASRClient, audio: np.ndarray, soft_lead_ms: int) -> dict:
    frames = chunks(audio)
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        await client.send_audio(frame)
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.perf_counter()))
    if soft_lead_ms:
        await client.soft_finalize()
        for frame in chunks(np.zeros(16 * soft_lead_ms, dtype=np.int16)):
            await client.send_audio(frame)
            await asyncio.sleep(0.02)
    hard = time.perf_counter()
    final = await client.finalize()
    final_ms = (time.perf_counter() - hard) * 1000
    duration = len(audio) / 16000
    return {
        "text": final.text,
        "audio_s": round(duration, 2),
        "final_ms": round(final_ms, 1),
        "server_ms": final.latency_ms,
        "rtf": round(final_ms / 1000 / duration, 3),
    }


async def run_session(url: str, clips: list[tuple[str | None, np.ndarray]], soft_lead_ms: int) -> list[dict]:
    results = []
    async with ASRClient(url) as client:
        for reference, audio in clips:
            result = await run_utterance(client, audio, soft_lead_ms)
            results.append({"reference": reference, **result})
            await asyncio.sleep(0.3)
    return results


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clips = load_clips(args.audio, Path(tmp))
        async with running_server("servers.asr", args.url, ["--engine", "whisper"], Path(tmp) / "asr.log") as url:
            async with ASRClient(url) as probe:
                engine = probe.ready.engine
            for _ in range(args.warmup):
                await run_session(url, clips[:1], args.soft_lead_ms)
            passes = {}
            for name, lead in (("bot", args.soft_lead_ms), ("cold", 0)):
                sessions = await asyncio.gather(*(run_session(url, clips, lead) for _ in range(args.sessions)))
                passes[name] = [{"pass": name, **r} for s in sessions for r in s]
    for r in passes["bot"] + passes["cold"]:
        print(json.dumps(r) if args.json else f"{r['pass']:<5}{r['final_ms']:7.1f} ms  rtf {r['rtf']:.3f}  {r['text']!r}")
    print(f"\nengine {engine}, {len(clips)} utterances x {args.sessions} session(s)")
    bot, cold = passes["bot"], passes["cold"]
    print(fmt(f"bot: soft {args.soft_lead_ms} ms early, hard -> final", [r["final_ms"] for r in bot]))
    print(fmt("bot: same, server-side", [r["server_ms"] for r in bot]))
    print(fmt("cold: hard at speech end -> final", [r["final_ms"] for r in cold]))
    print(fmt("cold: RTF", [r["rtf"] for r in cold], unit="", decimals=3))
    scored = [r for r in bot if r["reference"]]
    if scored:
        print(f"WER {wer([r['reference'] for r in scored], [r['text'] for r in scored]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="*", help="WAV files or folders (default: generated utterances)")
    parser.add_argument("--url", help="ASR server to measure (default: start the embedded whisper server)")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    parser.add_argument("--soft-lead-ms", type=int, default=200, help="soft finalize this long before the hard one")
    parser.add_argument("--warmup", type=int, default=1, help="utterances to run before measuring")
    parser.add_argument("--json", action="store_true", help="print one JSON object per utterance")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
