"""NVIDIA's streaming ASR and Magpie TTS at their real size, RANDOM WEIGHTS, through our engines.

    python -m benchmarks.nvidia_engines --quick          # R=1, 1 and 4 streams; 1 TTS session
    python -m benchmarks.nvidia_engines                  # R = 0, 1, 6, 13 x 1, 4, 16 streams; 1 and 4 TTS sessions
    python -m benchmarks.nvidia_engines --device cuda --jsonl results.jsonl

The models (`benchmarks/real_size/`) have the released checkpoints' architectures and random
weights: they say nothing, and are never a usable model. What they measure is what our engine code
(`NemotronEngine`, `MagpieEngine`, the classes the servers run) costs at the real dimensions.
Each engine runs in its own process, so each peak RSS is its own.

ASR, per right context R (chunk = R+1 encoder frames of 80 ms) and number of concurrent streams:
  step_ms      one tick: every stream feeds one chunk of audio, the engine's worker batches them
               into one cache-aware encoder step + greedy RNNT decoding (features included)
  rtf          step p50 / chunk duration: below 1, that many streams keep up in real time
  finalize_ms  every stream feeds half a chunk, then a hard finalize: until all finals are back
  tokens_s     tokens decoded per second of audio: the random model is fixed at one per 80 ms frame
               (12.5/s, an upper bound: speech is ≈ 3.5), so the decoder costs at least what it would
TTS, per number of concurrent sessions (interleaved chunk by chunk on one worker, as the server does):
  first_audio_ms   a reply's first segment: first chunk (4 codec frames + codec decode)
  frames_s         later segments' codec frames per second per session (21.5 frames = 1 s of audio)
  with --llm-url, each again while llama-server decodes on the same device: what the first segment
  costs when the LLM runs free (`--interleave off`) rather than paused (`first`/`all`)
Each line of --jsonl (and of stdout with --json) is one measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import summary

LABEL = "random weights, real size: timing only"
ASR_RATE = 16_000
TTS_TEXT = "Hello there, this is the first part of a reply, spoken as soon as it can be."
TTS_VOICE = "john"


def reset_cuda_peak(device: str) -> None:
    """Start a measurement's own CUDA peak (the process's RSS peak cannot be reset)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def memory(device: str) -> dict[str, float]:
    """Peak RSS of this process, and peak CUDA memory allocated on CUDA since the last reset."""
    import torch

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.startswith("cuda"):
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def stat(values: list[float]) -> dict[str, float]:
    s = summary(values)
    return {"p50": round(s["p50"], 2), "p90": round(s["p90"], 2), "n": s["n"]}


class StepCounter:
    """Within `with`: the batch size of every encoder step, by wrapping the model's `conformer_stream_step`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.batches: list[int] = []

    def __enter__(self) -> StepCounter:
        original = self.model.conformer_stream_step

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.batches.append(int(kwargs["processed_signal"].shape[0]))
            return original(*args, **kwargs)

        self.model.conformer_stream_step = counted
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.conformer_stream_step


def noise(seconds: float, seed: int) -> np.ndarray:
    """Speech-level noise: a random model cannot tell it from speech."""
    return (0.05 * np.random.default_rng(seed).standard_normal(int(seconds * ASR_RATE))).astype(np.float32)


async def asr_case(model: Any, right_context: int, streams: int, utterances: int, ticks: int) -> dict[str, Any]:
    """One (R, streams) measurement through a fresh NemotronEngine around the shared model."""
    from servers.asr.engines.nemotron import NemotronEngine

    engine = NemotronEngine.from_model(model, right_context=right_context)
    chunk = (right_context + 1) * 1280
    try:
        with StepCounter(model) as counter:
            opened = [engine.open_stream(no_interims) for _ in range(streams)]
            step_ms: list[float] = []
            finalize_ms: list[float] = []
            tokens = 0
            audio_s = 0.0
            for utterance in range(utterances + 1):
                warmup = utterance == 0
                audio = [noise((ticks + 1) * chunk / ASR_RATE, seed=utterance * 100 + i) for i in range(streams)]
                for tick in range(ticks):
                    before = len(counter.batches)
                    started = time.perf_counter()
                    await asyncio.gather(
                        *(s.feed(a[tick * chunk : (tick + 1) * chunk]) for s, a in zip(opened, audio, strict=False))
                    )
                    if not warmup and len(counter.batches) > before:
                        step_ms.append((time.perf_counter() - started) * 1000)
                if not warmup:
                    tokens += sum(len(s.state.hyp.y_sequence) for s in opened if s.state.hyp is not None)
                    audio_s += streams * ticks * chunk / ASR_RATE
                half = slice(ticks * chunk, ticks * chunk + chunk // 2)
                await asyncio.gather(*(s.feed(a[half]) for s, a in zip(opened, audio, strict=False)))
                started = time.perf_counter()
                await asyncio.gather(*(s.finalize(hard=True) for s in opened))
                if not warmup:
                    finalize_ms.append((time.perf_counter() - started) * 1000)
    finally:
        engine.close()
    steps = stat(step_ms)
    return {
        "right_context": right_context,
        "chunk_ms": (right_context + 1) * 80,
        "streams": streams,
        "step_ms": steps,
        "rtf": round(steps["p50"] / ((right_context + 1) * 80), 3),
        "finalize_ms": stat(finalize_ms),
        "tokens_s": round(tokens / audio_s, 2),
        "mean_batch": round(float(np.mean(counter.batches)), 2),
    }


async def no_interims(text: str) -> None:
    """An interim callback for streams whose interims nobody reads."""
    return None


def run_asr(args: argparse.Namespace, work_dir: Path) -> Iterator[dict[str, Any]]:
    from benchmarks.real_size import parameter_count
    from benchmarks.real_size.nemotron import PUBLISHED_PARAMETERS, build_nemotron_asr

    started = time.perf_counter()
    model = build_nemotron_asr(work_dir, args.device)
    yield {
        "what": "model",
        "parameters": parameter_count(model),
        "published": PUBLISHED_PARAMETERS,
        "build_s": round(time.perf_counter() - started, 1),
    }
    utterances, ticks = (2, 6) if args.quick else (4, 10)
    for right_context in args.right_contexts:
        for streams in args.streams:
            reset_cuda_peak(args.device)
            result = asyncio.run(asr_case(model, right_context, streams, utterances, ticks))
            yield {"what": "streaming", **result, **memory(args.device)}


async def tts_sessions(engine: Any, sessions: int, first: bool) -> list[tuple[float, int, float]]:
    """`sessions` replies at once, advanced chunk by chunk on one worker thread as the TTS server does.

    Returns per session (first chunk seconds, frames, seconds to the last chunk)."""
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    samples_per_frame = engine._samples_per_frame

    async def one() -> tuple[float, int, float]:
        started = time.perf_counter()
        chunks = await loop.run_in_executor(worker, engine.synthesize, TTS_TEXT, TTS_VOICE, "en", first)
        first_at, samples = 0.0, 0
        while (chunk := await loop.run_in_executor(worker, next, chunks, None)) is not None:
            if not samples:
                first_at = time.perf_counter() - started
            samples += len(chunk)
        return first_at, samples // samples_per_frame, time.perf_counter() - started

    try:
        return list(await asyncio.gather(*(one() for _ in range(sessions))))
    finally:
        worker.shutdown()


def run_tts(args: argparse.Namespace, work_dir: Path) -> Iterator[dict[str, Any]]:
    from benchmarks.real_size.magpie import (
        PUBLISHED_PARAMETERS,
        build_magpie_tts,
        codec_parameter_count,
        magpie_parameter_count,
    )
    from servers.tts.engines.magpie import MagpieEngine

    frames = 8 if args.quick else 64
    started = time.perf_counter()
    model = build_magpie_tts(args.device, work_dir, frames)
    yield {
        "what": "model",
        "parameters": magpie_parameter_count(model),
        "codec_parameters": codec_parameter_count(model),
        "published": PUBLISHED_PARAMETERS,
        "build_s": round(time.perf_counter() - started, 1),
    }
    engine = MagpieEngine.from_model(model, seed=1)
    runs = 2 if args.quick else 5
    try:
        asyncio.run(tts_sessions(engine, 1, first=True))
        for sessions in args.sessions:
            reset_cuda_peak(args.device)
            yield {"what": "synthesis", **synthesis(engine, sessions, runs, frames), **memory(args.device)}
            if args.llm_url:
                from benchmarks.llm_load import generating

                with generating(args.llm_url) as load:
                    started = time.perf_counter()
                    row = synthesis(engine, sessions, runs, frames)
                    llm_tokens_s = round(load.tokens / (time.perf_counter() - started), 1)
                yield {"what": "synthesis", **row, "llm": "decoding", "llm_tokens_s": llm_tokens_s}
    finally:
        engine.close()


def synthesis(engine: Any, sessions: int, runs: int, frames: int) -> dict[str, Any]:
    """First-audio latency of first segments, then frames/s of later segments, `runs` times each."""
    first_audio, frames_s = [], []
    for _ in range(runs):
        for first_at, _, _ in asyncio.run(tts_sessions(engine, sessions, first=True)):
            first_audio.append(first_at * 1000)
        for _, n_frames, total in asyncio.run(tts_sessions(engine, sessions, first=False)):
            frames_s.append(n_frames / total)
    return {"sessions": sessions, "frames": frames, "first_audio_ms": stat(first_audio), "frames_s": stat(frames_s)}


def run_part(args: argparse.Namespace) -> None:
    """Run one engine's measurements in this process, one JSON line each."""
    import torch

    torch.set_grad_enabled(False)
    parts = {"asr": run_asr, "tts": run_tts}
    with tempfile.TemporaryDirectory() as work_dir:
        for row in parts[args.part](args, Path(work_dir)):
            print(json.dumps({"engine": args.part, "device": args.device, "weights": LABEL, **row}), flush=True)


def run_all(args: argparse.Namespace, argv: list[str]) -> int:
    """Each engine in a child process; collect, save and print its lines."""
    rows: list[dict[str, Any]] = []
    failed = 0
    for part in args.parts:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.nvidia_engines", *argv, "--part", part],
            stdout=subprocess.PIPE,
            text=True,
        )
        part_rows = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
        if child.returncode:
            failed += 1
            part_rows.append({"engine": part, "device": args.device, "what": "error", "returncode": child.returncode})
        rows += part_rows
        for row in part_rows:
            if args.json:
                print(json.dumps(row), flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as out:
                    out.write(json.dumps(row) + "\n")
    print(table(rows))
    return 1 if failed else 0


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"NVIDIA engines at real size ({LABEL})"]
    for r in rows:
        head = f"{r['engine']:<4} {r['device']:<5}"
        if r["what"] == "model":
            codec = f" + codec {r['codec_parameters'] / 1e6:.0f}M" if "codec_parameters" in r else ""
            lines.append(
                f"{head} parameters {r['parameters'] / 1e6:.0f}M (published {r['published'] / 1e6:.0f}M){codec}, "
                f"built in {r['build_s']} s"
            )
        elif r["what"] == "streaming":
            s, f = r["step_ms"], r["finalize_ms"]
            lines.append(
                f"{head} R={r['right_context']:<2} ({r['chunk_ms']:>4} ms) x{r['streams']:<2} "
                f"step p50 {s['p50']:7.1f} p90 {s['p90']:7.1f} ms  rtf {r['rtf']:.3f}  "
                f"finalize p50 {f['p50']:7.1f} p90 {f['p90']:7.1f} ms  {r['tokens_s']} tok/s  "
                f"batch {r['mean_batch']}{_memory(r)}"
            )
        elif r["what"] == "synthesis":
            a, fps = r["first_audio_ms"], r["frames_s"]
            llm = f"  while the LLM decodes {r['llm_tokens_s']} tok/s" if "llm" in r else ""
            lines.append(
                f"{head} x{r['sessions']:<2} first audio p50 {a['p50']:7.1f} p90 {a['p90']:7.1f} ms  "
                f"frames/s per session p50 {fps['p50']:.1f} (21.5 = real time){llm}{_memory(r)}"
            )
        else:
            lines.append(f"{head} FAILED (exit {r['returncode']}): see its output above")
    return "\n".join(lines)


def _memory(row: dict[str, Any]) -> str:
    if "peak_rss_mb" not in row:
        return ""
    cuda = f", CUDA peak {row['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in row else ""
    return f"  peak RSS {row['peak_rss_mb']:.0f} MB{cuda}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="R=1 with 1 and 4 streams, 1 TTS session, short runs")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--parts", nargs="+", choices=("asr", "tts"), default=["asr", "tts"])
    parser.add_argument("--right-contexts", type=int, nargs="+", default=None, help="ASR look-aheads R")
    parser.add_argument("--streams", type=int, nargs="+", default=None, help="concurrent ASR streams")
    parser.add_argument("--sessions", type=int, nargs="+", default=None, help="concurrent TTS sessions")
    parser.add_argument("--llm-url", help="llama-server to keep decoding during a second TTS measurement (GPU sharing)")
    parser.add_argument("--json", action="store_true", help="also print every measurement as a JSON line")
    parser.add_argument("--jsonl", type=Path, default=None, help="append every measurement to this file")
    parser.add_argument("--part", choices=("asr", "tts"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.right_contexts = args.right_contexts or ([1] if args.quick else [0, 1, 6, 13])
    args.streams = args.streams or ([1, 4] if args.quick else [1, 4, 16])
    args.sessions = args.sessions or ([1] if args.quick else [1, 4])
    return args


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.part:
        run_part(args)
        return
    sys.exit(run_all(args, [a for a in argv if a != "--json"]))


if __name__ == "__main__":
    main()
