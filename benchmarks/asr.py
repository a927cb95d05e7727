"""ASR benchmark: hard finalize → final transcript latency (what the bot waits for) and RTF.

    python -m benchmarks.asr                       # embedded whisper server, generated utterances
    python -m benchmarks.asr --url ws://HOST:8080  # an already running server (any engine)
    python -m benchmarks.asr clips/ a.wav --sessions 4
    python -m benchmarks.asr --long                # ≥5 s vs 60 s vs 120 s of continuous speech

Each utterance streams in real time in 20 ms frames. Two passes over the same utterances:
  bot      the soft finalize at the end of speech, silence, the hard finalize `--soft-lead-ms` later
           (as the bot's VAD does): final_ms = hard finalize → final transcript, what the bot waits for
  cold     the hard finalize right at the end of speech, nothing sent before: final_ms is the whole
           decode, and rtf = final_ms / utterance duration
server_ms is the server's own hard finalize → final sent.

--long streams PASSAGE read for 5, 60 and 120 s (`--long-seconds`) in real time, each as one
utterance, through both passes, and compares each length's final latency with the 5 s one's
(target: within 100 ms), with its WER and whether its words came back in order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.audio import chunks, read_wav, speak
from benchmarks.scoring import normalize, wer
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


PASSAGE = [
    "Good morning, I would like to plan a trip to the mountains next week.",
    "We want to leave on Monday and come back on Friday evening.",
    "Please find a hotel close to the lake with a view of the water.",
    "My wife likes to walk in the forest every morning before breakfast.",
    "The children would rather swim in the pool or play games outside.",
    "Can you check the weather for the whole week?",
    "If it rains on Wednesday, we could visit the museum in the old town.",
    "I also need a car that is big enough for five people and their bags.",
    "The road through the valley is long, but the views are beautiful.",
    "We should stop for lunch at a small restaurant near the bridge.",
    "Remind me to buy new hiking boots before we leave.",
    "My old ones are broken and the left one lets the water in.",
    "On Thursday we want to climb to the top of the green hill.",
    "It takes about three hours to reach the top and two hours to come down.",
    "Please tell me what time the sun sets in the evening.",
    "We need to be back at the hotel before it gets dark.",
    "The dog will stay with our neighbours while we are away.",
    "They have a large garden and two cats that love to sleep in the sun.",
    "Last year we went to the sea, and it was far too hot for all of us.",
    "This time we hope for cool air, clear skies and quiet nights.",
    "Could you also book a table for dinner on our last night?",
    "A place with fresh fish and a warm fire would be perfect.",
    "My brother might join us for the weekend if he can leave work early.",
    "He works at the hospital in the city and his hours are very long.",
    "Please send me a list of everything we need to pack.",
    "Do not forget the warm jackets, the maps and the first aid kit.",
    "I think the children will want to bring their bikes as well.",
    "Is there a safe place to park bikes at the hotel?",
    "We will pay for everything with the card when we arrive.",
    "Thank you for your help, this is going to be a wonderful week.",
]
"""Clean sentences read one after another, as one long utterance (the long-speech mode and tests)."""


def long_speech(seconds: float, workdir: Path, seed: int = 0) -> tuple[str, np.ndarray]:
    """(reference, 16 kHz int16 audio) of at least `seconds` of PASSAGE, sentences separated by natural
    pauses of 0.25-0.7 s (the passage repeats if needed)."""
    rng = np.random.default_rng(seed)
    texts, parts, total = [], [], 0
    while total < seconds * 16000:
        i = len(texts) % len(PASSAGE)
        wav = workdir / f"passage{i}.wav"
        if not wav.exists():
            speak(PASSAGE[i], wav)
        clip = trim_trailing_silence(read_wav(wav), keep_ms=0)
        pause = np.zeros(int(16000 * rng.uniform(0.25, 0.7)), dtype=np.int16)
        texts.append(PASSAGE[i])
        parts += [clip, pause]
        total += len(clip) + len(pause)
    return " ".join(texts), np.concatenate(parts[:-1])


def landmarks_in_order(reference: str, hypothesis: str) -> tuple[int, int, int]:
    """(landmarks, heard, out of place). Landmarks are the words of 5+ letters said exactly once in
    `reference`; out of place are those heard but not in the longest run of them in the reference's
    order: a moved sentence counts each of its landmarks, a word duplicated at a commit boundary one."""
    words = normalize(reference).split()
    counts = Counter(words)
    rank = {w: i for i, w in enumerate(words) if counts[w] == 1 and len(w) >= 5}
    heard = [rank[w] for w in normalize(hypothesis).split() if w in rank]
    tails: list[int] = []
    for r in heard:
        i = bisect_left(tails, r)
        tails[i : i + 1] = [r]
    return len(rank), len(heard), len(heard) - len(tails)


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
        print(
            json.dumps(r) if args.json else f"{r['pass']:<5}{r['final_ms']:7.1f} ms  rtf {r['rtf']:.3f}  {r['text']!r}"
        )
    print(f"\nengine {engine}, {len(clips)} utterances x {args.sessions} session(s)")
    bot, cold = passes["bot"], passes["cold"]
    print(fmt(f"bot: soft {args.soft_lead_ms} ms early, hard -> final", [r["final_ms"] for r in bot]))
    print(fmt("bot: same, server-side", [r["server_ms"] for r in bot]))
    print(fmt("cold: hard at speech end -> final", [r["final_ms"] for r in cold]))
    print(fmt("cold: RTF", [r["rtf"] for r in cold], unit="", decimals=3))
    scored = [r for r in bot if r["reference"]]
    if scored:
        print(f"WER {wer([r['reference'] for r in scored], [r['text'] for r in scored]):.3f}")


async def long_async(args: argparse.Namespace) -> None:
    lengths = [float(x) for x in args.long_seconds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        speeches = [long_speech(seconds, Path(tmp)) for seconds in lengths]
        async with running_server("servers.asr", args.url, ["--engine", "whisper"], Path(tmp) / "asr.log") as url:
            await run_session(url, [(None, speeches[0][1])], args.soft_lead_ms)
            rows = []
            for _ in range(args.repeat):
                for seconds, (reference, audio) in zip(lengths, speeches, strict=False):
                    for name, lead in (("bot", args.soft_lead_ms), ("cold", 0)):
                        [result] = await run_session(url, [(reference, audio)], lead)
                        rows.append({"pass": name, "seconds": seconds, **result})
                        if args.json:
                            print(json.dumps(rows[-1]))
    for name in ("bot", "cold"):
        base = float(np.median([r["final_ms"] for r in rows if r["pass"] == name and r["seconds"] == lengths[0]]))
        for seconds in lengths:
            mine = [r for r in rows if r["pass"] == name and r["seconds"] == seconds]
            p50 = float(np.median([r["final_ms"] for r in mine]))
            errors = wer([r["reference"] for r in mine], [r["text"] for r in mine])
            order = [landmarks_in_order(r["reference"], r["text"]) for r in mine]
            print(
                f"{name:<5}{mine[0]['audio_s']:6.1f} s  final p50 {p50:7.1f} ms ({p50 - base:+7.1f} vs the first)"
                f"  server {np.median([r['server_ms'] for r in mine]):7.1f} ms  WER {errors:.3f}"
                f"  landmarks heard {sum(o[1] for o in order)}/{sum(o[0] for o in order)},"
                f" out of place {sum(o[2] for o in order)}  (n={len(mine)})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="*", help="WAV files or folders (default: generated utterances)")
    parser.add_argument("--url", help="ASR server to measure (default: start the embedded whisper server)")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    parser.add_argument("--soft-lead-ms", type=int, default=200, help="soft finalize this long before the hard one")
    parser.add_argument("--warmup", type=int, default=1, help="utterances to run before measuring")
    parser.add_argument("--json", action="store_true", help="print one JSON object per utterance")
    parser.add_argument("--long", action="store_true", help="long speech: final latency against utterance length")
    parser.add_argument("--long-seconds", default="5,60,120", help="lengths for --long; the first is the baseline")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of --long")
    args = parser.parse_args()
    asyncio.run(long_async(args) if args.long else main_async(args))


if __name__ == "__main__":
    sys.exit(main())
