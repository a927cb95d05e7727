"""TTS benchmark: time to first audio of each reply, and RTF.

    python -m benchmarks.tts                        # embedded Piper server, built-in replies
    python -m benchmarks.tts --url ws://HOST:8001   # an already running server (any engine)
    python -m benchmarks.tts --sessions 2 --json

Each reply is sent as its first sentence, then the rest, then a flush, the way the bot's LLM
produces it; the server cuts the first segment at its first clause.
  first_audio_ms  first text sent → first audio received
  rtf             (first text sent → done) / audio duration
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from benchmarks.servers import running_server
from benchmarks.stats import fmt
from servers.tts import protocol

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


async def measure(ws: ClientConnection, context_id: str, reply: str, sample_rate: int) -> dict:
    started = time.perf_counter()
    for piece in split_first_sentence(reply):
        await ws.send(protocol.Text(context_id, piece).to_json())
    await ws.send(protocol.Flush(context_id).to_json())
    first_audio = None
    while True:
        raw = await ws.recv()
        if isinstance(raw, bytes):
            first_audio = first_audio or time.perf_counter() - started
            continue
        message = protocol.parse_server_message(raw)
        if isinstance(message, protocol.Error):
            raise RuntimeError(message.message)
        if isinstance(message, protocol.Done):
            total = time.perf_counter() - started
            return {
                "reply": reply,
                "first_audio_ms": round(first_audio * 1000, 1),
                "audio_s": round(message.audio_ms / 1000, 2),
                "rtf": round(total / (message.audio_ms / 1000), 3),
            }


async def run_session(url: str, index: int, pause_s: float) -> list[dict]:
    async with connect(url) as ws:
        ready = protocol.parse_server_message(await ws.recv())
        results = []
        for i, reply in enumerate(REPLIES):
            results.append(await measure(ws, f"s{index}-r{i}", reply, ready.sample_rate))
            await asyncio.sleep(pause_s)
        return results


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server("servers.tts", args.url, ["--engine", "piper"], Path(tmp) / "tts.log") as url:
            async with connect(url) as ws:
                engine = protocol.parse_server_message(await ws.recv()).engine
            await run_session(url, -1, 0)
            sessions = await asyncio.gather(*(run_session(url, i, args.pause) for i in range(args.sessions)))
    results = [r for s in sessions for r in s]
    for r in results:
        print(json.dumps(r) if args.json else f"{r['first_audio_ms']:7.1f} ms  rtf {r['rtf']:.3f}  {r['reply'][:60]}")
    print(f"\nengine {engine}, {len(REPLIES)} replies x {args.sessions} session(s)")
    print(fmt("first audio", [r["first_audio_ms"] for r in results]))
    print(fmt("RTF", [r["rtf"] for r in results], unit="", decimals=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="TTS server to measure (default: start the embedded Piper server)")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between replies, as in a conversation")
    parser.add_argument("--json", action="store_true", help="print one JSON object per reply")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
