"""llama-server timed over plain HTTP, and kept busy in the background while something else is measured.

    python -m benchmarks.llm_load URL [--runs 5] [--prompt-tokens 300] [--n-predict 256] [--json OUT]

TTFT: request sent → first streamed token (client side, the HTTP included; a ~300-token prompt,
evaluated afresh each run: `cache_prompt` off). Decode: streamed tokens after the first / the time
between the first and the last. Both are also read off llama-server's own `timings`. EOS is
ignored, so a random-weight model decodes the full count too. One warm-up run is left out.

`generating(url)` keeps the server decoding (one streamed request after another) in a background
thread while its context is open: to measure e.g. TTS first-audio with the LLM running on the
same GPU. Standard library and numpy only: it runs on the borrowed GPU machine as is.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.stats import summary
from servers.processes import is_healthy

TEXT = (
    "You are a friendly voice assistant. Keep answers short and speak in plain sentences. "
    "The user is cooking dinner and asks about rice, eggs, vegetables, timers and the weather; "
    "answer each question in one or two sentences, without lists, markdown or emoji. "
)
"""Prompt material, repeated and cut to the wanted token count with the server's tokenizer."""


@dataclass
class Run:
    """One request of the load test and its timings."""

    ttft_ms: float
    decode_tok_s: float
    tokens: int
    timings: dict[str, Any]
    """llama-server's own: prompt_n, prompt_ms, predicted_n, predicted_per_second, ..."""


@dataclass
class Load:
    """What `generating` did while its context was open."""

    requests: int = 0
    tokens: int = 0
    errors: list[str] = field(default_factory=list)


def _post(url: str, body: dict[str, Any], timeout: float) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    return urllib.request.urlopen(request, timeout=timeout)


def wait_healthy(url: str, timeout: float = 300.0, pid: int | None = None) -> None:
    """Until GET /health answers 200 (llama-server answers 503 while it loads the model).

    With `pid`, the server's process: its exit ends the wait at once instead of at the timeout.
    """
    deadline = time.monotonic() + timeout
    while not is_healthy(f"{url}/health"):
        if pid is not None and not Path(f"/proc/{pid}").exists():
            raise RuntimeError(f"llama-server (pid {pid}) exited before {url}/health answered; see its log")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/health did not answer 200 within {timeout:.0f} s")
        time.sleep(0.5)


def prompt_tokens(url: str, count: int) -> list[int]:
    """`count` token ids of plain English, from the server's own tokenizer."""
    text = TEXT * (count // 40 + 2)
    with _post(f"{url}/tokenize", {"content": text}, timeout=60) as response:
        tokens = json.load(response)["tokens"]
    if len(tokens) < count:
        raise ValueError(f"the prompt text gave {len(tokens)} tokens, fewer than {count}")
    return tokens[:count]


def _events(response: Any, stop: threading.Event | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent-events stream, until it ends (or `stop` is set)."""
    for raw in response:
        if stop is not None and stop.is_set():
            return
        line = raw.decode().strip()
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def stream(url: str, prompt: list[int] | str, n_predict: int, stop: threading.Event | None = None) -> Run:
    """One streamed /completion; its client-side TTFT and decode rate, and the server's timings."""
    body = {"prompt": prompt, "n_predict": n_predict, "stream": True, "ignore_eos": True, "cache_prompt": False}
    sent = time.perf_counter()
    first = last = 0.0
    first_n = last_n = 0
    timings: dict[str, Any] = {}
    with _post(f"{url}/completion", body, timeout=300) as response:
        for event in _events(response, stop):
            now = time.perf_counter()
            n = int(event.get("tokens_predicted", last_n))
            if n > last_n:
                if not first_n:
                    first, first_n = now, n
                last, last_n = now, n
            if event.get("stop"):
                timings = event.get("timings", {})
    decode = (last_n - first_n) / (last - first) if last > first else 0.0
    ttft_ms = (first - sent) * 1000 if first_n else float("nan")
    return Run(ttft_ms=ttft_ms, decode_tok_s=decode, tokens=last_n, timings=timings)


def measure(url: str, runs: int = 5, n_prompt: int = 300, n_predict: int = 256) -> dict[str, Any]:
    """`runs` timed completions after one warm-up; p50/p90 of TTFT and decode rate, and each run."""
    prompt = prompt_tokens(url, n_prompt)
    stream(url, prompt, n_predict)
    results = [stream(url, prompt, n_predict) for _ in range(runs)]
    server = [r.timings for r in results]
    return {
        "prompt_tokens": n_prompt,
        "n_predict": n_predict,
        "ttft_ms": summary([r.ttft_ms for r in results]),
        "decode_tok_s": summary([r.decode_tok_s for r in results]),
        "server_prompt_ms": summary([t.get("prompt_ms", float("nan")) for t in server]),
        "server_decode_tok_s": summary([t.get("predicted_per_second", float("nan")) for t in server]),
        "runs": [asdict(r) for r in results],
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        ("TTFT (client)", "ttft_ms", "ms"),
        ("prompt eval (server)", "server_prompt_ms", "ms"),
        ("decode (client)", "decode_tok_s", "tok/s"),
        ("decode (server)", "server_decode_tok_s", "tok/s"),
    ]
    head = f"llama-server, {result['prompt_tokens']}-token prompt, {result['n_predict']} tokens, single stream"
    lines = [head, f"{'':<24}{'p50':>10}{'p90':>10}  (n={result['ttft_ms']['n']})"]
    lines += [f"{name:<24}{result[key]['p50']:>10.1f}{result[key]['p90']:>10.1f}  {unit}" for name, key, unit in rows]
    return "\n".join(lines)


@contextmanager
def generating(url: str, n_predict: int = 256) -> Iterator[Load]:
    """Keep llama-server at `url` decoding, request after request, until the context exits.

    Yields a `Load` that counts requests and tokens (read it after the block). A failing request is
    recorded and retried after 0.5 s, so a server that went away costs nothing but the error.
    """
    load, stop = Load(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                run = stream(url, TEXT, n_predict, stop)
                load.requests += 1
                load.tokens += run.tokens
            except (urllib.error.URLError, OSError, ValueError) as e:
                load.errors.append(f"{type(e).__name__}: {e}")
                stop.wait(0.5)

    thread = threading.Thread(target=loop, name="llm-load", daemon=True)
    thread.start()
    try:
        yield load
    finally:
        stop.set()
        thread.join(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="llama-server's base URL, e.g. http://127.0.0.1:8002")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=300)
    parser.add_argument("--n-predict", type=int, default=256)
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for /health first")
    parser.add_argument("--pid", type=int, help="the server's process id: stop waiting if it exits")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--info", action="append", default=[], metavar="KEY=VALUE", help="added to the JSON")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    wait_healthy(url, args.wait, args.pid)
    result = measure(url, args.runs, args.prompt_tokens, args.n_predict)
    result = {"url": url, **dict(item.split("=", 1) for item in args.info), **result}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
