"""Barge-in benchmark: interrupt the running agent's replies over WebRTC and time how soon it stops.

    scripts/run.sh                          # the stack, in another terminal
    python -m benchmarks.barge_in           # 5 rounds; --rounds N, --after SECONDS, --json

Each round asks for a long story (espeak-ng speech), lets the reply play for `--after` seconds, then
speaks an interruption. Per round, one JSON line; then p50 / p90 / max of the bot's stop time:
the interrupting speech reaching the bot → its last audio leaving it (the client measures until
the last audio arrives and subtracts the WebRTC round trip, taken from the interrupted turn's
client V2V less the bot's server V2V, which is noisy by ±60 ms: a round whose reply was between two
words can come out below zero). Target: p50 ≤ 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.audio import read_wav, speak
from benchmarks.stats import fmt, summary
from benchmarks.webrtc_client import WebRTCVoiceClient
from servers.ports import BOT_PORT

TOPICS = [
    "a dragon and a brave knight",
    "a lighthouse keeper",
    "a robot who learns to paint",
    "a lost kitten",
    "the sea",
]
INTERRUPTION = "Hold on what is two plus two"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"http://localhost:{BOT_PORT}", help="the bot's runner (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--after", type=float, default=2.0, help="seconds of reply before the interruption")
    parser.add_argument("--json", action="store_true", help="JSON summary line instead of the table")
    args = parser.parse_args()

    def clip(text: str, folder: Path) -> np.ndarray:
        return read_wav(speak(text, folder / f"{abs(hash(text))}.wav", "en-us+m3", 150))

    rounds: dict[str, list[float]] = {"stop_ms": [], "heard_ms": [], "round_trip_ms": []}
    with tempfile.TemporaryDirectory() as tmp:
        interruption = clip(INTERRUPTION, Path(tmp))
        for i in range(args.rounds):
            request = clip(f"Tell me a long story about {TOPICS[i % len(TOPICS)]}.", Path(tmp))
            client = WebRTCVoiceClient(args.url)
            await client.connect()
            try:
                result = await client.barge_in(request, interruption, args.after)
            finally:
                await client.close()
            numbers = {k: round(getattr(result, k), 1) for k in rounds}
            for k, v in numbers.items():
                rounds[k].append(v)
            print(json.dumps({"round": i + 1, **numbers, "stored": result.stored}), flush=True)
    if args.json:
        print(json.dumps({"summary": {k: summary(v) for k, v in rounds.items()}}))
        return
    print(fmt("bot stop (at the bot)", rounds["stop_ms"]))
    print(fmt("interruption → last bot audio (client)", rounds["heard_ms"]))
    print(fmt("WebRTC round trip", rounds["round_trip_ms"]))


if __name__ == "__main__":
    asyncio.run(main())
