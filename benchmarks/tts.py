"""TTS benchmark: time to first audio of each reply, and RTF; with --fairness, the same under load.

    python -m benchmarks.tts                        # embedded Piper server, built-in replies
    python -m benchmarks.tts --url ws://HOST:8001   # an already running server (any engine)
    python -m benchmarks.tts --sessions 2 --json
    python -m benchmarks.tts --fairness             # first audio while another session speaks a long text

Each reply is sent as its first sentence, then the rest, then a flush, the way the bot's LLM
produces it; the server cuts the first segment at its first clause.
  first_audio_ms  first text sent → first audio received
  rtf             (first text sent → done) / audio duration

--fairness: the replies' first audio when the server is idle, then while another session speaks
each long text (from its first audio on: a 4000-character unpunctuated text, a 300-digit number,
and the 4000 characters to a client that never reads its audio), and the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from pathlib import Path

from benchmarks.servers import running_server
from benchmarks.stats import fmt, summary
from servers.processes import command_line, rss_mb
from servers.tts.client import Audio, Reply, TTSClient

REPLIES = [
    "Sure, the capital of France is Paris. It is known for the Eiffel Tower.",
    "A spider has eight legs. Insects, by comparison, have six.",
    "Good question! The sky looks blue because air scatters blue light more than red light.",
    "I can help with that. First, preheat the oven to two hundred degrees.",
    "Yes, it will probably rain this afternoon, so take an umbrella.",
    "Hello! How can I help you today?",
    "The meeting is at ten thirty tomorrow, in the small conference room.",
    "Of course. Here is a short story about a brave little dog who found his way home.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "That sounds like a great plan, let me know if you need anything else.",
]


def split_first_sentence(reply: str) -> list[str]:
    head, dot, tail = reply.partition(". ")
    return [head + dot, tail] if dot else [reply]


async def measure(tts: TTSClient, context_id: str, reply: str) -> dict:
    started = time.perf_counter()
    spoken = await tts.speak(context_id, *split_first_sentence(reply))
    total = time.perf_counter() - started
    return {
        "reply": reply,
        "first_audio_ms": round((spoken.first_audio_at - started) * 1000, 1),
        "audio_s": round(spoken.done.audio_ms / 1000, 2),
        "rtf": round(total / (spoken.done.audio_ms / 1000), 3),
    }


async def run_session(url: str, index: int, pause_s: float) -> list[dict]:
    async with TTSClient(url) as tts:
        results = []
        for i, reply in enumerate(REPLIES):
            results.append(await measure(tts, f"s{index}-r{i}", reply))
            await asyncio.sleep(pause_s)
        return results


LONG_TEXTS = {
    "4000 chars unpunctuated": " ".join(
        ["the quick brown fox jumps over a lazy dog while seven green parrots sing"] * 60
    )[:4000],
    "300-digit number": "4155552671" * 30,
}


async def while_speaking(url: str, text: str, reading: bool, pause_s: float) -> list[dict]:
    """The replies of `run_session` while another session speaks `text` (again and again), from its first audio on;
    `reading=False`: that session stops reading at its first audio (the server must not buffer)."""
    async with TTSClient(url) as other:
        speaking = asyncio.Event()

        async def on_audio(_: Reply) -> None:
            speaking.set()

        async def keep_speaking() -> None:
            for i in itertools.count():
                await other.speak(f"long-{i}", text, on_audio=on_audio, timeout=300)

        if reading:
            talker = asyncio.create_task(keep_speaking())
            await speaking.wait()
        else:
            await other.start("long")
            await other.text("long", text)
            await other.flush("long")
            while not isinstance(await other.receive(), Audio):
                pass
        results = await run_session(url, 0, pause_s)
        if reading:
            talker.cancel()
        other.ws.transport.abort()  # the server drops the session's contexts
        return results


def server_pid(url: str) -> int | None:
    """The TTS server listening on `url`'s port, if it runs on this machine."""
    port = url.rsplit(":", 1)[-1].strip("/")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            line = command_line(int(proc.name))
        except OSError:
            continue
        if "servers.tts" in line and f"--port {port}" in line:
            return int(proc.name)
    return None


def peak_rss_mb(pid: int | None) -> float | None:
    """The most the process was ever resident, MB (None: not on this machine)."""
    return (rss_mb(pid, peak=True) or None) if pid else None


async def fairness(url: str, pause_s: float, as_json: bool) -> None:
    pid = server_pid(url)
    await run_session(url, -1, 0)  # warm-up
    rss_before = peak_rss_mb(pid)
    idle = [r["first_audio_ms"] for r in await run_session(url, 0, pause_s)]
    idle_p50 = summary(idle)["p50"]
    print(fmt("first audio, idle", idle))
    rows = {"idle": summary(idle)}
    for name, text in LONG_TEXTS.items():
        for reading in (True, False) if name.startswith("4000") else (True,):
            label = f"while {name}" + ("" if reading else " (client not reading)")
            loaded = [r["first_audio_ms"] for r in await while_speaking(url, text, reading, pause_s)]
            rows[label] = summary(loaded)
            print(fmt(f"first audio, {label}", loaded) + f"   p50/idle {summary(loaded)['p50'] / idle_p50:.2f}")
    peak = peak_rss_mb(pid)
    print(
        f"server peak RSS: {peak:.0f} MB (after loading and warm-up: {rss_before:.0f} MB)"
        if peak
        else "server RSS: n/a"
    )
    if as_json:
        print(json.dumps({"first_audio_ms": rows, "peak_rss_mb": peak, "warm_rss_mb": rss_before}))


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server("servers.tts", args.url, ["--engine", "piper"], Path(tmp) / "tts.log") as url:
            async with TTSClient(url) as tts:
                engine = tts.ready.engine
            print(f"engine {engine}")
            if args.fairness:
                await fairness(url, args.pause, args.json)
                return
            await run_session(url, -1, 0)
            sessions = await asyncio.gather(*(run_session(url, i, args.pause) for i in range(args.sessions)))
    results = [r for s in sessions for r in s]
    for r in results:
        print(json.dumps(r) if args.json else f"{r['first_audio_ms']:7.1f} ms  rtf {r['rtf']:.3f}  {r['reply'][:60]}")
    print(f"\n{len(REPLIES)} replies x {args.sessions} session(s)")
    print(fmt("first audio", [r["first_audio_ms"] for r in results]))
    print(fmt("RTF", [r["rtf"] for r in results], unit="", decimals=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="TTS server to measure (default: start the embedded Piper server)")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between replies, as in a conversation")
    parser.add_argument("--json", action="store_true", help="print one JSON object per reply")
    parser.add_argument("--fairness", action="store_true", help="first audio while another session speaks a long text")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
