"""Soak: many simultaneous calls of many turns through the whole local stack, over WebRTC.

    python -m benchmarks.soak                          # 2 sessions x 250 turns, SmolLM2 (leaks, not quality)
    python -m benchmarks.soak --sessions 4 --turns 50 --model qwen2.5-1.5b

Starts the stack the way users run it (`python -m servers.launch`, on free ports, logs in
artifacts/soak/), then each session is one long call: a spoken question (espeak-ng, real time),
wait for the spoken reply, next question. Prints errors (turns without a reply), server V2V drift
(first tenth of the turns vs last tenth) and each process's RSS after the warm-up and at the end.
Targets: 0 errors, RSS growth < 10 % after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.audio import read_wav, speak
from benchmarks.stats import summary
from benchmarks.webrtc_client import WebRTCVoiceClient
from servers.launch import MODEL_SERVERS, service_pids
from servers.processes import ROOT, ServerProcess, free_port, rss_mb

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What is two plus two?",
    "Tell me a fun fact about the moon.",
    "What color is the sky?",
    "Why do cats purr?",
    "Name a famous painter.",
    "What is the tallest mountain?",
]


@dataclass
class SessionResult:
    """What one long session measured: each turn's voice-to-voice latency, and its errors."""

    v2v_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def rss(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: round(sum(rss_mb(p) for p in group), 1) for name, group in pids.items()}


async def one_call(url: str, clips: list[np.ndarray], turns: int, result: SessionResult, done: list[int]) -> None:
    client = WebRTCVoiceClient(url)
    await client.connect()
    try:
        for turn, audio in zip(range(turns), itertools.cycle(clips)):
            speech_end = await client.say(audio)
            reply = await client.wait_for_reply(speech_end, timeout=60, quiet=1.0)
            latency = await client.wait_for_message("turn_latency", speech_end, timeout=5 if reply else 0.1)
            if reply is None or latency is None:
                result.errors.append(f"turn {turn + 1}: {'no spoken reply' if reply is None else 'no turn_latency'}")
            else:
                result.v2v_ms.append(latency["server_v2v_ms"])
            client.forget_before(time.monotonic() - 5)
            done[0] += 1
    finally:
        await client.close()


def growth(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(100 * (after.get(k, 0) - v) / v, 1) for k, v in before.items() if v}


async def soak(args: argparse.Namespace) -> dict:
    logs = ROOT / "artifacts" / "soak"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [read_wav(speak(q, Path(tmp) / f"{i}.wav", "en-us+m3", 150)) for i, q in enumerate(QUESTIONS)]
    bot_port = free_port()
    env = {s.port_env: str(free_port()) for s in MODEL_SERVERS}
    env.update(BOT_PORT=str(bot_port), LLM_MODEL=args.model, LLM_PARALLEL=str(args.sessions),
               BOT_MAX_TOKENS=str(args.max_tokens), BOT_ASR_URL="", BOT_TTS_URL="", BOT_LLM_URL="")  # fmt: skip
    launcher = ServerProcess(
        [sys.executable, "-m", "servers.launch", "--logs", str(logs)], f"http://127.0.0.1:{bot_port}/status",
        logs / "launch.out", env,
    )  # fmt: skip
    await asyncio.to_thread(launcher.run, 900)
    try:
        pids = service_pids(launcher.process.pid)
        url = f"http://127.0.0.1:{bot_port}"
        results = [SessionResult() for _ in range(args.sessions)]
        done = [0]
        total = args.sessions * args.turns
        warm_up = min(args.warm_up, args.turns) * args.sessions
        calls = [asyncio.create_task(one_call(url, clips, args.turns, r, done)) for r in results]
        while done[0] < warm_up and not all(c.done() for c in calls):
            await asyncio.sleep(1)
        rss_start = rss(pids)
        print(f"after {done[0]} warm-up turns: RSS MB {rss_start}", flush=True)
        next_report, rss_half = time.monotonic() + 60, None
        while not all(c.done() for c in calls):
            await asyncio.sleep(1)
            if rss_half is None and done[0] >= total // 2:
                rss_half = rss(pids)
            if time.monotonic() >= next_report:
                print(f"{done[0]}/{total} turns, RSS MB {rss(pids)}", flush=True)
                next_report += 60
        for call in calls:
            if call.exception() is not None:
                results[0].errors.append(f"session failed: {call.exception()!r}")
        rss_end = rss(pids)
        restarts = (logs / "launch.out").read_text().count("restarting in")
    finally:
        await asyncio.to_thread(launcher.stop)
    v2v = [r.v2v_ms for r in results]
    tenth = max(1, args.turns // 10)
    first = [v for s in v2v for v in s[:tenth]]
    last = [v for s in v2v for v in s[-tenth:]]
    return {
        "sessions": args.sessions, "turns": sum(len(s) for s in v2v), "model": args.model,
        "errors": [e for r in results for e in r.errors], "restarts": restarts,
        "server_v2v_ms_first_tenth": summary(first) if first else None,
        "server_v2v_ms_last_tenth": summary(last) if last else None,
        "rss_mb_after_warm_up": rss_start, "rss_mb_half_way": rss_half, "rss_mb_end": rss_end,
        "rss_growth_pct": growth(rss_start, rss_end), "rss_growth_second_half_pct": growth(rss_half or {}, rss_end),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2, help="simultaneous calls (default: %(default)s)")
    parser.add_argument("--turns", type=int, default=250, help="turns per call (default: %(default)s)")
    parser.add_argument(
        "--warm-up", type=int, default=10, help="turns per call before the first RSS (default: %(default)s)"
    )
    parser.add_argument("--model", default="smollm2-135m", help="the LLM (servers.llm --model; default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=60, help="reply length cap (default: %(default)s)")
    report = asyncio.run(soak(parser.parse_args()))
    print(json.dumps(report))
    print(f"\n{report['turns']} turns in {report['sessions']} calls, {len(report['errors'])} errors, "
          f"{report['restarts']} service restarts")  # fmt: skip
    for when in ("first", "last"):
        s = report[f"server_v2v_ms_{when}_tenth"]
        if s:
            print(f"server V2V, {when} tenth of each call: p50 {s['p50']:.0f} ms  p90 {s['p90']:.0f} ms")
    for name, start in report["rss_mb_after_warm_up"].items():
        half, end = ((report[k] or {}).get(name, 0.0) for k in ("rss_mb_half_way", "rss_mb_end"))
        print(f"RSS {name:<4} {start:>7.1f} MB after warm-up, {half:>7.1f} half-way, {end:>7.1f} at the end "
              f"({report['rss_growth_pct'].get(name, 0.0):+.1f} %; second half "
              f"{report['rss_growth_second_half_pct'].get(name, 0.0):+.1f} %)")  # fmt: skip
    for error in report["errors"][:20]:
        print(f"error: {error}")


if __name__ == "__main__":
    main()
