"""Servers as processes: start one, wait until its /health says ready, stop it.

The one implementation of "start a server and wait for it", used by the launcher, the tests, the
benchmarks and the Modal app. Standard library only: it is imported in every Modal container.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ServerExited(RuntimeError):
    """The process we were waiting for ended before it became healthy."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Nobody listens there (connections of a stopped server in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_healthy(
    url: str, process: subprocess.Popen | None = None, timeout: float = 300.0, interval: float = 0.2
) -> None:
    """Poll `url` (a /health) until it answers 200 (503 while loading); ServerExited if `process`
    ends first, TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerExited(f"exited with {exit_reason(process.returncode)}")
        if is_healthy(url):
            return
        time.sleep(interval)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s")


def is_healthy(url: str, timeout: float = 1.0) -> bool:
    """One probe: does `url` answer 200?"""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"code {returncode}"


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServerProcess:
    """A server run as its own process group, the way users run it, output appended to `log`.

    `stop` is Ctrl-C, then Ctrl-C again for what still runs (Pipecat's runner, uvicorn, waits for
    live sessions on the first and quits on the second), SIGKILL as the last resort.
    """

    def __init__(
        self,
        command: Sequence[str],
        health_url: str,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str = ROOT,
        nice: int = 0,
    ) -> None:
        self.command, self.health_url, self.log, self.cwd, self.nice = list(command), health_url, log, cwd, nice
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the process; returns at once (see `wait_healthy`)."""
        out = self.log.open("a") if self.log is not None else None
        try:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None,
                start_new_session=True, preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()

    def wait_healthy(self, timeout: float = 300.0, interval: float = 0.2) -> None:
        """Until /health answers 200; ServerExited (with the log's last lines) if the process ends first."""
        assert self.process is not None, "start() first"
        try:
            wait_healthy(self.health_url, self.process, timeout, interval)
        except ServerExited as e:
            raise ServerExited(f"{e}:\n{tail(self.log)}" if self.log is not None else str(e)) from None

    def is_healthy(self) -> bool:
        return is_healthy(self.health_url)

    def run(self, timeout: float = 300.0) -> None:
        self.start()
        self.wait_healthy(timeout)

    @property
    def returncode(self) -> int | None:
        """None while it runs."""
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, grace_s: float = 5.0) -> None:
        stop_all([self], grace_s)


def stop_all(servers: Sequence[ServerProcess], grace_s: float = 5.0) -> None:
    """Stop several servers at once (see `ServerProcess`)."""
    for sig, grace in ((signal.SIGINT, grace_s), (signal.SIGINT, grace_s), (signal.SIGKILL, 0.0)):
        running = [s.process for s in servers if s.returncode is None and s.process is not None]
        for process in running:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            time.sleep(0.05)
    for server in servers:
        if server.process is not None:
            server.process.wait()


class LocalServer(ServerProcess):
    """One of our Python servers (`python -m <module> --port N ...`) on a free loopback port."""

    def __init__(
        self, module: str, args: Sequence[str], log: Path | None = None, health: str = "/health",
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.port = free_port()
        super().__init__(
            [sys.executable, "-m", module, "--port", str(self.port), *args], f"{self.http_url}{health}", log, env
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()


def rss_mb(pid: int, peak: bool = False) -> float:
    """Resident memory of one process now (or its peak so far), MB; 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    field = "VmHWM:" if peak else "VmRSS:"
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith(field)), 0)
    return kb / 1024
