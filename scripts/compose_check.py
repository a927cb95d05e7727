"""Build the compose stack's `cpu` profile here, bring it up, hold one spoken conversation with the bot
through its published port, and take it down: what the images contain, run for real.

    scripts/compose-check.sh             the check (exit 0: the bot answered)
    scripts/compose-check.sh --probe     exit 0 when a container engine is usable here, else 2 and why

No image registry is reachable on these machines, so the base images are made here: Debian bookworm
from Debian's packages (mmdebstrap) stands in for `python:3.11-slim-bookworm`, and llama-server built
from the pinned llama.cpp sources (servers/llm/binary.py) on that base stands in for llama.cpp's server
image; the Dockerfiles take both as build arguments (PYTHON_IMAGE, LLAMA_CPP_IMAGE). The base trusts
the host's extra CA certificates (/usr/local/share/ca-certificates), as the host's pip does.

Compose: `docker compose` (v2) when installed, else Debian's docker-compose 1.29, which rejects parts of
the v2 file. Either way the check runs a compatibility copy of docker/compose.yaml (`compatible_file`:
no top-level `name`, no `start_interval`, the stand-in bases, the check's own image names); the
user-facing files stay written for Compose v2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from servers.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "nemotron-voice-agent-check"
PYTHON_BASE = f"{PROJECT}/python:3.11-bookworm"
LLAMA_BASE = f"{PROJECT}/llama.cpp:server"
BASES = {"PYTHON_IMAGE": PYTHON_BASE, "LLAMA_CPP_IMAGE": LLAMA_BASE}
"""The Dockerfiles' base-image build arguments, and the stand-ins made here."""
BASE_PACKAGES = "python3,python3-venv,python3-pip,python-is-python3,ca-certificates,curl,passwd,libgomp1"
QUESTION, ANSWER = "What is the capital of France?", "paris"
HEALTHY_TIMEOUT_S = 900


def say(message: str) -> None:
    print(f"compose-check: {message}", flush=True)


def compose_command() -> list[str] | None:
    """Compose v2 (`docker compose`) when present, else Debian's docker-compose 1.29."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def engine_problem() -> str | None:
    """Why no stack can be built and run here, in one line; None when it can."""
    if shutil.which("docker") is None:
        return "no docker CLI (Debian: apt-get install docker.io docker-compose mmdebstrap)"
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if info.returncode != 0:
        return f"no Docker engine answers: {(info.stderr.strip().splitlines() or ['docker info failed'])[-1]}"
    if compose_command() is None:
        return "no Compose (Debian: apt-get install docker-compose)"
    if shutil.which("mmdebstrap") is None and not image_exists(PYTHON_BASE):
        return "no mmdebstrap to make the base image (Debian: apt-get install mmdebstrap)"
    return None


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode == 0


def run(cmd: list[str], **kwargs) -> None:
    subprocess.run(cmd, check=True, **kwargs)


def python_base() -> None:
    """Debian bookworm with Python 3.11, as a docker image made from Debian's packages."""
    if image_exists(PYTHON_BASE):
        return
    say(f"making {PYTHON_BASE} with mmdebstrap")
    hooks = [
        '--customize-hook=cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" || true',
        '--customize-hook=chroot "$1" update-ca-certificates',
        # As in the official image, pip installs into the system Python (Debian marks it externally managed).
        '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tarball = Path(tmp) / "base.tar"
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                *hooks,
                "bookworm",
                str(tarball),
            ]
        )
        changes = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt", 'CMD ["python3"]']  # fmt: skip
        run(
            ["docker", "import", *[f"--change={c}" for c in changes], str(tarball), PYTHON_BASE],
            stdout=subprocess.DEVNULL,
        )


def llama_base() -> None:
    """llama.cpp's server image as its Dockerfile lays it out (/app/llama-server, the entrypoint), with the
    llama-server built from the pinned sources."""
    from servers.llm import binary

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(binary.ensure(), Path(tmp) / "llama-server")
        dockerfile = (
            f'FROM {PYTHON_BASE}\nCOPY llama-server /app/llama-server\nWORKDIR /app\nENTRYPOINT ["/app/llama-server"]\n'
        )
        (Path(tmp) / "Dockerfile").write_text(dockerfile)
        run(["docker", "build", "-q", "-t", LLAMA_BASE, tmp], stdout=subprocess.DEVNULL)


def compatible_file(dest: Path) -> None:
    """docker/compose.yaml as both Compose v2 and docker-compose 1.29 read it, building on the bases made
    here and naming its images after the check, so a user's own images stay untouched."""
    stack = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    stack = {key: value for key, value in stack.items() if key != "name" and not key.startswith("x-")}
    for service in stack["services"].values():
        service.get("healthcheck", {}).pop("start_interval", None)
        if "build" in service:
            service["image"] = service["image"].replace("nemotron-voice-agent/", f"{PROJECT}/")
            service["build"] = build = dict(service["build"])
            declared = (ROOT / "docker" / build["context"] / build["dockerfile"]).read_text()
            bases = {k: v for k, v in BASES.items() if f"ARG {k}=" in declared}
            build["args"] = {**build.get("args", {}), **bases}
    dest.write_text(yaml.safe_dump(stack, sort_keys=False))


def wait_healthy(compose: list[str], service: str) -> None:
    """Until `service` is healthy; fails on a container that exits or stays unhealthy."""
    start = time.monotonic()
    while time.monotonic() - start < HEALTHY_TIMEOUT_S:
        ids = subprocess.run(
            [*compose, "ps", "-q", service], capture_output=True, text=True, check=False
        ).stdout.split()
        if ids:
            state = json.loads(
                subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True, check=True).stdout
            )[0]
            health = state["State"].get("Health", {}).get("Status")
            if health == "healthy":
                return
            if state["State"]["Status"] == "exited":
                raise RuntimeError(f"{service} exited with code {state['State']['ExitCode']}")
        time.sleep(2)
    raise RuntimeError(f"{service} not healthy after {HEALTHY_TIMEOUT_S} s")


def converse(port: int, work: Path) -> dict:
    """One spoken question through the bot's published port, by the project's WebRTC client."""
    from benchmarks.audio import speak

    wav = work / "question.wav"
    speak(QUESTION, wav, voice="en-us+m3", words_per_minute=150)  # the voice Whisper tiny.en hears best
    cmd = [sys.executable, "-m", "benchmarks.conversation", str(wav), "--url", f"http://127.0.0.1:{port}", "--json"]
    output = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    turns = [json.loads(line) for line in output.stdout.splitlines() if line.startswith("{") and '"said"' in line]
    if not turns:
        raise RuntimeError(f"the conversation client got no turn:\n{output.stdout[-2000:]}{output.stderr[-2000:]}")
    return turns[0]


def check(keep: bool) -> int:
    compose_cli = compose_command()
    assert compose_cli is not None
    started = time.monotonic()
    python_base()
    llama_base()
    say(f"bases ready ({time.monotonic() - started:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        compatible_file(work / "compose.yaml")
        port = free_port()
        compose = [*compose_cli, "-p", PROJECT, "--project-directory", str(ROOT / "docker"),
                   "-f", str(work / "compose.yaml"), "--profile", "cpu"]  # fmt: skip
        env = {**os.environ, "BOT_PORT": str(port), "DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}
        try:
            built = time.monotonic()
            run([*compose, "build"], env=env)
            say(f"images built in {time.monotonic() - built:.0f} s:")
            run(["docker", "image", "ls", "--format", "  {{.Repository}}:{{.Tag}} {{.Size}}", f"{PROJECT}/*"])
            up = time.monotonic()
            run([*compose, "up", "-d"], env=env)
            wait_healthy(compose, "bot-cpu")
            say(f"every service healthy {time.monotonic() - up:.0f} s after `up`")
            turn = converse(port, work)
            say(f"asked {QUESTION!r} through 127.0.0.1:{port}; the ASR heard {turn.get('heard')!r}")
            say(f"the bot's spoken answer, transcribed: {turn.get('said')!r}")
            if ANSWER not in str(turn.get("said", "")).lower():
                raise RuntimeError(f"the answer does not say {ANSWER!r}")
            say(f"OK: a spoken answer heard through the published port ({time.monotonic() - started:.0f} s in all)")
            return 0
        except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            say(f"FAILED: {error}")
            subprocess.run([*compose, "logs", "--tail", "40"], env=env, check=False)
            return 1
        finally:
            if not keep:
                subprocess.run([*compose, "down", "-v", "--remove-orphans"], env=env, check=False, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", action="store_true", help="only say whether a container engine is usable")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    problem = engine_problem()
    if problem:
        say(problem)
        return 2
    return 0 if args.probe else check(args.keep)


if __name__ == "__main__":
    sys.exit(main())
