"""Run the local stack: the three model servers and the bot, each waited for, all stopped on Ctrl-C.

    python -m servers.launch          (scripts/run.sh does this after setting up .venv)
    python -m servers.launch --no-bot (model servers only)

Each service logs to logs/<name>.log. Ports and engines come from the same environment variables
as the servers' own flags (ASR_PORT, ASR_ENGINE, ..., BOT_PORT); the bot reads its BOT_* settings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from servers.common import ServerExited, port_is_free, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "logs"


@dataclass(frozen=True)
class Service:
    name: str
    command: tuple[str, ...]
    port_env: str
    default_port: int
    host_env: str
    scheme: str = "ws"
    health_path: str = "/health"
    nice: int = 0
    address_flags: bool = False
    """Pass --host/--port: Pipecat's runner takes its address as flags only (the servers read env)."""

    @property
    def host(self) -> str:
        return os.environ.get(self.host_env, "127.0.0.1")

    @property
    def port(self) -> int:
        return int(os.environ.get(self.port_env, self.default_port))

    def flags(self) -> list[str]:
        return ["--host", self.host, "--port", str(self.port)] if self.address_flags else []


MODEL_SERVERS = [
    Service("asr", ("-m", "servers.asr"), "ASR_PORT", 8080, "ASR_HOST"),
    Service("tts", ("-m", "servers.tts"), "TTS_PORT", 8001, "TTS_HOST"),
    # On a shared CPU the LLM yields to ASR and TTS: they are on the way to the first audio, while the
    # LLM streams far ahead of speech (measured on 2 cores: server V2V p50 -100 ms).
    Service("llm", ("-m", "servers.llm"), "LLM_PORT", 8002, "LLM_HOST", scheme="http", nice=10),
]
BOT = Service(
    "bot", ("bot.py", "-t", "webrtc"), "BOT_PORT", 7860, "BOT_HOST", scheme="http", health_path="/status",
    address_flags=True,
)


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start(service: Service) -> subprocess.Popen:
    if not port_is_free(service.host, service.port):
        sys.exit(
            f"{service.name}: port {service.port} on {service.host} is already in use "
            f"(is another copy running?). Stop it or set {service.port_env} to another port."
        )
    log = LOGS / f"{service.name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, *service.command, *service.flags()], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            preexec_fn=(lambda: os.nice(service.nice)) if service.nice else None,
        )
    print(f"{service.name}: starting on {service.host}:{service.port} (log: {log.relative_to(ROOT)})", flush=True)
    return process


def wait_ready(service: Service, process: subprocess.Popen, timeout: float = 600.0) -> None:
    try:
        wait_healthy(f"http://{service.host}:{service.port}{service.health_path}", process, timeout, interval=0.3)
    except ServerExited as e:
        raise RuntimeError(f"{service.name} {e}:\n{tail(LOGS / f'{service.name}.log')}") from None
    except TimeoutError:
        raise RuntimeError(f"{service.name} not healthy after {timeout:.0f} s; see logs/{service.name}.log") from None
    print(f"{service.name}: ready at {service.scheme}://{service.host}:{service.port}", flush=True)


def stop(processes: list[subprocess.Popen]) -> None:
    """Ctrl-C, then Ctrl-C again for what still runs: Pipecat's runner (uvicorn) waits for live
    sessions to end on the first and quits on the second; SIGKILL is the last resort."""
    for sig, grace in ((signal.SIGINT, 2.0), (signal.SIGINT, 2.0), (signal.SIGKILL, 0.0)):
        running = [p for p in processes if p.poll() is None]
        for p in running:
            os.killpg(p.pid, sig)
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            time.sleep(0.1)


def main() -> None:
    services = MODEL_SERVERS if "--no-bot" in sys.argv[1:] else [*MODEL_SERVERS, BOT]
    LOGS.mkdir(exist_ok=True)
    processes: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for service in services:
            processes.append(start(service))
        for service, process in zip(services, processes):
            wait_ready(service, process)
        if BOT in services:
            print(f"\nTalk to the agent: http://localhost:{BOT.port}/client  (Pipecat Playground)", flush=True)
        print("all services ready; Ctrl-C stops everything", flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        crashed = next(s for s, p in zip(services, processes) if p.poll() is not None)
        sys.exit(f"{crashed.name} stopped unexpectedly:\n{tail(LOGS / f'{crashed.name}.log')}")
    except RuntimeError as e:
        sys.exit(str(e))
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    finally:
        stop(processes)


if __name__ == "__main__":
    main()
