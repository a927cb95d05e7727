"""LLM server: llama.cpp's `llama-server` with a packaged GGUF model, in one command.

    python -m servers.llm [--model qwen2.5-1.5b|qwen2.5-0.5b|smollm2-135m|/path/x.gguf] [-- llama-server args]

We do not wrap llama-server's HTTP API: clients talk to it directly (`/apply-template`,
`/tokenize`, `/completion` with token ids and `cache_prompt`, `GET /health` on the same port).
This module assembles the model, finds or builds the binary, picks flags for a voice agent
(one warm conversation slot, chat template from the GGUF, no reasoning), forwards SIGINT/SIGTERM,
logs the child's output through loguru and exits with its code.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from loguru import logger

from servers.auth import load_token
from servers.cli import add_flag, add_server_flags, refuse_insecure_bind, setup_logging
from servers.llm.binary import BinaryError, add_binary_flags, ensure
from servers.llm.models import DEFAULT_MODEL, MODELS, ModelError, resolve
from servers.ports import LLM_PORT
from servers.processes import ServerExited, port_is_free, wait_healthy

DEFAULT_PORT = LLM_PORT
CACHE_REUSE = 256
"""Reuse cached KV chunks of >= this many tokens after an edit in the middle of the prompt
(history trimmed); llama-server turns it off itself for models that cannot shift their cache."""
CACHE_RAM_MIB = 512
"""llama-server saves idle slots' prompts in host memory, to bring a conversation back without
evaluating it again when calls outnumber slots; its default cap (8 GiB) made a 500-turn soak's
llama-server grow past 1.3 GB and on. 512 MiB holds a few 4k-token conversations of the 1.5B."""
LOG_LINE = re.compile(r"\d+\.\d+\.\d+\.\d+ (?P<level>[DIWE]) (?P<text>.*)")
LOG_LEVELS = {"D": "DEBUG", "I": "INFO", "W": "WARNING", "E": "ERROR"}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our flags, and what follows `--` (passed to llama-server as is, after ours, so it wins)."""
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    cores = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(
        prog="python -m servers.llm",
        description="Run llama.cpp's llama-server with a packaged GGUF model. Arguments after -- go to llama-server.",
    )
    add_server_flags(parser, "LLM", DEFAULT_PORT, serves="llama-server's HTTP API and GET /health")
    add_flag(parser, "--model", "LLM_MODEL", DEFAULT_MODEL, f"{', '.join(MODELS)}, or the path of a .gguf file")
    add_flag(parser, "--ctx-size", "LLM_CTX_SIZE", 4096, "context tokens per slot (llama-server: ctx-size x parallel)")
    add_flag(parser, "--parallel", "LLM_PARALLEL", 1, "conversation slots (each keeps its own prompt cache)")
    add_flag(
        parser,
        "--cache-ram",
        "LLM_CACHE_RAM",
        CACHE_RAM_MIB,
        "MiB of host memory for conversations' prompts saved off their slot (llama-server's default: 8192)",
    )
    add_flag(parser, "--threads", "LLM_THREADS", cores, "CPU threads (all of this machine's cores by default)")
    add_flag(parser, "--gpu-layers", "LLM_GPU_LAYERS", -1, "layers on the GPU; -1: all when llama-server sees a GPU")
    add_binary_flags(parser)
    return parser.parse_args(own), extra


def sees_gpu(binary: Path) -> bool:
    """Whether this llama-server build has a GPU device to use (a CUDA build on a GPU machine)."""
    try:
        out = subprocess.run([str(binary), "--list-devices"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    listed = out.split("Available devices:", 1)[-1].split()
    return bool(listed) and listed[0] != "(none)"


def llama_server_command(args: argparse.Namespace, binary: Path, model: Path, gpu: bool, extra: list[str]) -> list[str]:
    offload: list[str] = []
    if gpu or args.gpu_layers >= 0:
        layers = args.gpu_layers if args.gpu_layers >= 0 else 999
        offload = ["--gpu-layers", str(layers), "--flash-attn", "on" if layers > 0 else "auto"]
    return [
        str(binary),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--model",
        str(model),
        "--alias",
        Path(args.model).stem if args.model not in MODELS else args.model,
        "--ctx-size",
        str(args.ctx_size * args.parallel),  # llama-server splits the context between slots
        "--parallel",
        str(args.parallel),
        "--threads",
        str(args.threads),
        *offload,
        "--cache-reuse",
        str(CACHE_REUSE),
        "--cache-ram",
        str(args.cache_ram),
        "--jinja",  # the GGUF's own chat template, for /apply-template and /v1/chat/completions
        "--reasoning",
        "off",  # a voice reply cannot wait for a thought (Nemotron, Qwen3 ...)
        "--no-webui",
        "--cors-origins",
        "localhost",  # our clients are programs; no web page elsewhere may drive it
        "--metrics",  # Prometheus counters on GET /metrics; costs nothing per token
        "--log-colors",
        "off",
        *extra,
    ]


def _die_with_parent() -> None:
    """In the child: get SIGTERM if we are killed outright, so no llama-server is left running."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _forward_output(process: subprocess.Popen) -> None:
    """llama-server's lines ("0.00.002.557 I srv  load_model: ...") through loguru, at their level."""
    assert process.stdout is not None
    for line in process.stdout:
        if m := LOG_LINE.match(line.rstrip()):
            logger.log(LOG_LEVELS[m["level"]], f"llama-server: {m['text']}")
        elif line.strip():
            logger.info(f"llama-server: {line.rstrip()}")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    """Start llama-server, log until it exits, and return its exit code."""
    if not port_is_free(args.host, args.port):
        taken = f"port {args.port} on {args.host} is already in use"
        raise OSError(f"{taken} (is another copy running?); use --port or LLM_PORT")
    model = resolve(args.model)
    binary = ensure(args.llama_server, args.cuda)
    gpu = sees_gpu(binary)
    cmd = llama_server_command(args, binary, model, gpu, extra)
    logger.info(f"starting {' '.join(cmd)}")
    started = time.perf_counter()
    token = load_token()  # to llama-server through its environment: a flag would show in `ps`
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        start_new_session=True, preexec_fn=_die_with_parent,
        env={**os.environ, "LLAMA_API_KEY": token} if token else None,
    )  # fmt: skip
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: process.send_signal(signum))
    reader = threading.Thread(target=_forward_output, args=(process,), daemon=True)
    reader.start()
    url = f"http://{args.host}:{args.port}"
    try:
        wait_healthy(f"{url}/health", process, timeout=float("inf"))
        logger.info(f"ready in {time.perf_counter() - started:.1f} s: {url}")
    except ServerExited:
        pass  # its exit code is reported below
    code = process.wait()
    reader.join(timeout=5)
    if code != 0:
        logger.error(f"llama-server exited with code {code}")
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.log_level)
    refuse_insecure_bind("llm", args)
    # Until llama-server runs, SIGTERM unwinds like Ctrl-C so half-written files are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        code = run(args, extra)
    except (ModelError, BinaryError, OSError) as e:
        raise SystemExit(f"llm: {e}") from None
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    sys.exit(code)
