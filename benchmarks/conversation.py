"""Conversation benchmark: talk to the running agent over WebRTC, one WAV per user turn.

    scripts/run.sh                                   # the stack, in another terminal
    python -m benchmarks.conversation                # 10 generated questions (espeak-ng)
    python -m benchmarks.conversation clips/ q.wav --json --no-interleave

Each WAV (any rate, resampled) plays in real time as one user turn, silence follows until the bot
has answered and been quiet for a while; the bot's audio is recorded as it arrives. Per turn, one
JSON line: what the ASR heard, what the bot said (its audio transcribed afterwards by the embedded
Whisper), client V2V (end of the user's speech in the WAV → first non-silent bot audio at this
client), and the bot's own per-stage numbers (server V2V = VAD stop → bot speaking + VAD stop_secs;
STT final, LLM TTFB, TTS TTFB) and timeline (each stage's first frame, in ms after the end of the
user's speech; `pipecat_services/turn_metrics.py`), then a summary with p50 / p90 / max and the
timeline's p50 per mark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.audio import read_wav, speak
from benchmarks.stats import fmt, summary
from benchmarks.voice_client import VoiceClient
from benchmarks.webrtc_client import WebRTCVoiceClient
from pipecat_services.turn_metrics import TIMELINE
from servers.ports import BOT_PORT

QUESTIONS = [
    "What is the capital of France?",
    "What time is it?",
    "How many legs does a spider have?",
    "What is two plus two?",
    "Hello there.",
    "Tell me a fun fact about the moon.",
    "What color is the sky?",
    "Can you recommend a good book?",
    "Why do cats purr?",
    "Thanks, that is all.",
]
VARIED_QUESTIONS = [
    "Good morning!",
    "How far away is the sun from the earth?",
    "Could you explain what a black hole is, in simple words?",
    "What should I cook for dinner tonight if I only have eggs, rice and some spinach?",
    "Is it going to be cold this weekend?",
    "Who wrote Romeo and Juliet?",
    "Give me three tips for sleeping better.",
    "What's the difference between a virus and a bacterium?",
    "How do I convert twenty degrees Celsius to Fahrenheit?",
    "Why is the ocean salty?",
    "Can you help me plan a short trip to the mountains?",
    "What does a software engineer do all day?",
    "How many minutes are there in a day?",
    "Tell me a joke about computers.",
    "What is the tallest mountain in the world?",
    "I feel a bit stressed today, any advice?",
    "How do airplanes stay in the air?",
    "What year did the first person walk on the moon?",
    "Which is bigger, a blue whale or an elephant?",
    "Say something nice about Mondays.",
    "Okay, thank you, goodbye!",
]
"""`--questions varied`: greetings, facts, numbers, advice, long and short, ending the call."""
STAGES = ["client_v2v_ms", "server_v2v_ms", "stt_final_ms", "llm_ttfb_ms", "tts_ttfb_ms"]


@dataclass
class TurnResult:
    """One user turn as the benchmark saw it: what was heard and said, and its latencies."""

    turn: int
    file: str
    heard: str | None
    said: str | None
    client_v2v_ms: float | None
    server_v2v_ms: float | None
    stt_final_ms: float | None
    llm_ttfb_ms: float | None
    tts_ttfb_ms: float | None
    timeline_ms: dict[str, float] | None = None
    llm_evaluated_tokens: int | None = None


async def converse(
    url: str,
    clips: list[tuple[str, np.ndarray]],
    body: dict[str, Any] | None = None,
    turn_timeout: float = 30.0,
    fresh_sessions: bool = False,
    reply_start_only: bool = False,
    new_client: Callable[[], VoiceClient] | None = None,
) -> tuple[list[TurnResult], list[np.ndarray]]:
    """Play each clip as a turn; returns the results (without `said`) and each reply's audio.
    `fresh_sessions`: each clip in a session of its own, so that no answer depends on earlier ones
    (a fair comparison of two settings' answers, and no call the bot ended itself). `reply_start_only`:
    go on once the reply starts (its audio is then not returned): what was heard and how soon.
    `new_client`: another transport's client (default: WebRTC to `url` with `body`)."""
    results, replies = [], []
    client = None
    new_client = new_client or (lambda: WebRTCVoiceClient(url, body))
    try:
        for i, (name, audio) in enumerate(clips, 1):
            if client is None or fresh_sessions:
                if client is not None:
                    await client.close()
                client = new_client()
                await client.connect()
                await asyncio.sleep(1.0)
            speech_end = await client.say(audio)
            if reply_start_only:
                start = await client.wait_for_reply_start(speech_end, timeout=turn_timeout)
                reply = None if start is None else (start, start)
            else:
                reply = await client.wait_for_reply(speech_end, timeout=turn_timeout)
            latency = await client.wait_for_message("turn_latency", speech_end, timeout=2.0 if reply else 0.1) or {}
            replies.append(client.audio.between(reply[0] - 0.1, reply[1] + 0.1) if reply else np.zeros(0, np.int16))
            results.append(
                TurnResult(
                    turn=i,
                    file=name,
                    heard=latency.get("user_text"),
                    said=None,
                    client_v2v_ms=round((reply[0] - speech_end) * 1000, 1) if reply else None,
                    **{k: latency.get(k) for k in STAGES[1:]},
                    timeline_ms=latency.get("timeline_ms"),
                    llm_evaluated_tokens=latency.get("llm_evaluated_tokens"),
                )
            )
    finally:
        if client is not None:
            await client.close()
    return results, replies


async def transcribe_replies(replies: list[np.ndarray]) -> list[str]:
    """What the bot said, heard by the embedded ASR (after the conversation: no CPU stolen from it)."""
    from servers.asr.engines.whisper import WhisperEngine

    engine = WhisperEngine()
    engine.load()
    return [(await engine.transcribe(r.astype(np.float32) / 32768)).strip() if len(r) else "" for r in replies]


def load_clips(paths: list[str], folder: Path, questions: list[str] = QUESTIONS) -> list[tuple[str, np.ndarray]]:
    """WAVs from files and folders (sorted), or `questions` spoken by espeak-ng when none are given."""
    if not paths:
        return [(q, read_wav(speak(q, folder / f"q{i:02d}.wav", "en-us+m3", 150))) for i, q in enumerate(questions)]
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.wav")) if p.is_dir() else [p])
    if not files:
        raise SystemExit(f"no .wav files in {' '.join(paths)}")
    return [(str(f), read_wav(f)) for f in files]


def report(results: list[TurnResult], as_json: bool, interleave: str | None) -> None:
    for r in results:
        print(json.dumps(asdict(r)), flush=True)
    stats = {k: summary(v) for k in STAGES if (v := [getattr(r, k) for r in results if getattr(r, k) is not None])}
    answered = sum(r.client_v2v_ms is not None for r in results)
    if as_json:
        print(json.dumps({"summary": stats, "turns": len(results), "answered": answered, "interleave": interleave}))
        return
    print(f"\n{answered}/{len(results)} turns answered, interleave {interleave or 'as the bot is configured'}")
    for k in STAGES:
        values = [getattr(r, k) for r in results if getattr(r, k) is not None]
        if values:
            print(fmt(k, values))
    print(timeline_summary(results))


def timeline_summary(results: list[TurnResult]) -> str:
    """Each timeline mark's p50 over the turns, and the step from the mark before it."""
    lines, before = ["timeline p50, ms after the end of speech (step from the previous mark):"], 0.0
    for mark in TIMELINE:
        values = [r.timeline_ms[mark] for r in results if r.timeline_ms and mark in r.timeline_ms]
        if values:
            p50 = summary(values)["p50"]
            lines.append(f"  {mark:<16} +{p50:6.0f}   (+{p50 - before:.0f})")
            before = p50
    evaluated = [r.llm_evaluated_tokens for r in results if r.llm_evaluated_tokens is not None]
    if evaluated:
        lines.append(f"  prompt tokens the LLM server evaluated per turn: p50 {summary(evaluated)['p50']:.0f}")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="*", help="WAV files or folders of WAVs (default: generated questions)")
    parser.add_argument("--url", default=f"http://localhost:{BOT_PORT}", help="the bot's runner (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="JSON summary line instead of the table")
    parser.add_argument(
        "--interleave", choices=["all", "first", "off"], help="the bot's LLM/TTS turn-taking (default: its own)"
    )
    parser.add_argument("--no-interleave", action="store_true", help="the same as --interleave off")
    parser.add_argument(
        "--prefill-interims", choices=["on", "off"], help="the bot evaluates interim words early (default: its own)"
    )
    parser.add_argument(
        "--questions", choices=["default", "varied"], default="default",
        help=f"generated questions without WAVs: the {len(QUESTIONS)} default ones "
        f"or {len(VARIED_QUESTIONS)} varied ones",
    )  # fmt: skip
    parser.add_argument("--turn-timeout", type=float, default=30.0, help="seconds to wait for a reply")
    parser.add_argument("--fresh-sessions", action="store_true", help="one session per question (answers independent)")
    parser.add_argument("--temperature", type=float, help="the bot's LLM sampling temperature (default: its own)")
    args = parser.parse_args()
    mode = "off" if args.no_interleave else args.interleave
    body: dict[str, Any] = {"interleave": mode} if mode else {}
    if args.prefill_interims:
        body["prefill_interims"] = args.prefill_interims == "on"
    if args.temperature is not None:
        body["temperature"] = args.temperature
    with tempfile.TemporaryDirectory() as tmp:
        clips = load_clips(args.audio, Path(tmp), VARIED_QUESTIONS if args.questions == "varied" else QUESTIONS)
    results, replies = await converse(args.url, clips, body, args.turn_timeout, args.fresh_sessions)
    for result, said in zip(results, await transcribe_replies(replies), strict=False):
        result.said = said
    report(results, args.json, body.get("interleave"))


if __name__ == "__main__":
    asyncio.run(main())
