"""Run the local stack: the three model servers and the bot, each waited for, kept running, all
stopped on Ctrl-C.

    python -m servers.launch          (scripts/run.sh does this after setting up .venv)
    python -m servers.launch --no-bot (model servers only; --logs DIR: where the logs go)

Each service logs to logs/<name>.log. Ports and engines come from the same environment variables
as the servers' own flags (ASR_PORT, ASR_ENGINE, ..., BOT_PORT); the bot reads its BOT_* settings
and is pointed at the model servers started here unless BOT_ASR_URL etc. say otherwise.
A service that exits after it was ready is started again (the bot's clients reconnect); one that
keeps crashing stops the stack with its log's last lines.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from servers.ports import ASR_PORT, BOT_PORT, LLM_PORT, TTS_PORT
from servers.processes import (
    ROOT,
    ServerExited,
    ServerProcess,
    child_pids,
    command_line,
    exit_reason,
    port_is_free,
    stop_all,
    tail,
)  # fmt: skip


@dataclass(frozen=True)
class Service:
    """One service of the local stack: its command, port and health check."""

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

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def process(self, logs: Path, env: dict[str, str]) -> ServerProcess:
        flags = ["--host", self.host, "--port", str(self.port)] if self.address_flags else []
        health = f"http://{self.host}:{self.port}{self.health_path}"
        log = logs / f"{self.name}.log"
        return ServerProcess([sys.executable, *self.command, *flags], health, log, env, nice=self.nice)


MODEL_SERVERS = [
    Service("asr", ("-m", "servers.asr"), "ASR_PORT", ASR_PORT, "ASR_HOST"),
    Service("tts", ("-m", "servers.tts"), "TTS_PORT", TTS_PORT, "TTS_HOST"),
    # On a shared CPU the LLM yields to ASR and TTS: they are on the way to the first audio, while the
    # LLM streams far ahead of speech (measured on 2 cores: server V2V p50 -100 ms).
    Service("llm", ("-m", "servers.llm"), "LLM_PORT", LLM_PORT, "LLM_HOST", scheme="http", nice=10),
]
BOT = Service(
    "bot",
    ("bot.py", "-t", "webrtc"),
    "BOT_PORT",
    BOT_PORT,
    "BOT_HOST",
    scheme="http",
    health_path="/status",
    address_flags=True,
)


@dataclass(frozen=True)
class RestartPolicy:
    """A service that exits starts again after 1, 2, 4 ... `max_delay_s` seconds; more than
    `max_crashes` exits within `window_s` means it would only crash again, so the stack stops."""

    max_crashes: int = 5
    window_s: float = 300.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay_s(self, recent_crashes: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2 ** (recent_crashes - 1))


class GaveUp(RuntimeError):
    """A service kept crashing."""


@dataclass
class Supervised:
    """One service of the stack, its process and its recent crashes."""

    service: Service
    process: ServerProcess
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    ready: bool = False

    def check(self, policy: RestartPolicy, now: float) -> None:
        """Notice an exit, start again when its delay is over, report when it is ready again."""
        name = self.service.name
        if self.restart_at is None and self.process.returncode is not None:
            self.crashes.append(now)
            while self.crashes and self.crashes[0] < now - policy.window_s:
                self.crashes.popleft()
            reason = exit_reason(self.process.returncode)
            if len(self.crashes) > policy.max_crashes:
                raise GaveUp(
                    f"{name} exited ({reason}) {len(self.crashes)} times in {policy.window_s:.0f} s; giving up. "
                    f"Last lines of {self.process.log}:\n{tail(self.process.log)}"
                )
            delay = policy.delay_s(len(self.crashes))
            say(f"{name}: exited ({reason}); restarting in {delay:.0f} s. Last lines of {self.process.log}:\n"
                f"{tail(self.process.log, 5)}")  # fmt: skip
            self.restart_at, self.ready = now + delay, False
        elif self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self.process.start()
            say(f"{name}: restarted")
        elif not self.ready and self.restart_at is None and self.process.is_healthy():
            self.ready = True
            say(f"{name}: ready again at {self.service.url}")


def say(line: str) -> None:
    print(line, flush=True)


def bot_env(servers: list[Service]) -> dict[str, str]:
    """The bot talks to the model servers started here, unless its own settings say otherwise."""
    wanted = {f"BOT_{s.name.upper()}_URL": s.url for s in servers}
    return {name: os.environ.get(name) or url for name, url in wanted.items()}


def start(service: Service, logs: Path, env: dict[str, str]) -> ServerProcess:
    if not port_is_free(service.host, service.port):
        sys.exit(
            f"{service.name}: port {service.port} on {service.host} is already in use "
            f"(is another copy running?). Stop it or set {service.port_env} to another port."
        )
    process = service.process(logs, env)
    process.log.write_text("")
    process.start()
    say(f"{service.name}: starting on {service.host}:{service.port} (log: {process.log})")
    return process


def wait_ready(service: Service, process: ServerProcess, timeout: float = 600.0) -> None:
    try:
        process.wait_healthy(timeout, interval=0.3)
    except ServerExited as e:
        raise RuntimeError(f"{service.name} {e}") from None
    except TimeoutError:
        raise RuntimeError(f"{service.name} not healthy after {timeout:.0f} s; see {process.log}") from None
    say(f"{service.name}: ready at {service.url}")


def service_pids(launcher_pid: int) -> dict[str, list[int]]:
    """The processes of each service a launcher runs (servers.llm: the wrapper, then llama-server)."""
    pids: dict[str, list[int]] = {}
    for pid in child_pids(launcher_pid):
        line = command_line(pid)
        for service in (*MODEL_SERVERS, BOT):
            if " ".join(service.command) in line:
                pids[service.name] = [pid, *child_pids(pid)]
    return pids


def supervise(stack: list[Supervised], policy: RestartPolicy) -> None:
    """Until Ctrl-C or SIGTERM, or a service that keeps crashing."""
    while True:
        for member in stack:
            member.check(policy, time.monotonic())
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The local stack: model servers and the bot, restarted when they crash."
    )
    parser.add_argument("--no-bot", action="store_true", help="model servers only")
    parser.add_argument("--logs", type=Path, default=ROOT / "logs", help="folder of <service>.log (default logs/)")
    args = parser.parse_args()
    services = MODEL_SERVERS if args.no_bot else [*MODEL_SERVERS, BOT]
    args.logs.mkdir(parents=True, exist_ok=True)
    stack: list[Supervised] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for service in services:
            env = bot_env(MODEL_SERVERS) if service is BOT else {}
            stack.append(Supervised(service, start(service, args.logs, env)))
        for member in stack:
            wait_ready(member.service, member.process)
            member.ready = True
        if BOT in services:
            say(f"\nTalk to the agent: http://localhost:{BOT.port}/client  (Pipecat Playground)")
        say("all services ready; Ctrl-C stops everything")
        supervise(stack, RestartPolicy())
    except RuntimeError as e:
        sys.exit(str(e))
    except KeyboardInterrupt:
        say("\nstopping...")
    finally:
        # A second Ctrl-C must not leave services behind (each runs in its own session).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all([member.process for member in stack], grace_s=2.0)


if __name__ == "__main__":
    main()
