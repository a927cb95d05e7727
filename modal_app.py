"""The voice agent on Modal: ASR, TTS and LLM servers on their own GPUs, the bot on CPU.

    modal deploy modal_app.py                  then open https://<workspace>--nemotron-voice-agent-bot.modal.run/client

Each model server is the command it is everywhere else (`python -m servers.asr`, ...; llama.cpp's
llama-server for the LLM), started and warmed up when its container starts, and served through
`@modal.web_server`. `@modal.concurrent` admits what one server really serves at once: a WebSocket
session or an HTTP request is one input. Weights live in one Modal Volume, downloaded by the first
container and committed for the next ones. The bot is Pipecat's runner (Playground at /client,
WebRTC offer at /api/offer); it finds the model servers when its container starts, never at import.

Settings come from the deploying machine's environment: HF_TOKEN, and BOT_* / PIPECAT_ICE_SERVERS
for the bot (e.g. BOT_LLM_API=openai BOT_LLM_URL=... to use another LLM). README.md (Deploy on Modal) has the
commands.

The model servers' URLs are not open to the internet: Modal's proxy lets a request through only
with the Modal-Key / Modal-Secret headers of a Proxy Auth Token, which the bot sends (MODAL_PROXY_KEY
and MODAL_PROXY_SECRET from the deploying environment; `servers/auth.py`). The bot's Playground is
public unless BOT_REQUIRE_PROXY_AUTH=1 at deploy time (then only clients that send the headers).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import modal

from servers.processes import ServerProcess

APP_NAME = "nemotron-voice-agent"
ROOT = Path(__file__).parent
MINUTES = 60
CACHE = "/cache"

ASR_PORT, TTS_PORT, LLM_PORT, BOT_PORT = 8080, 8001, 8002, 7860
NGC_PYTORCH_IMAGE = "nvcr.io/nvidia/pytorch:25.10-py3"
LLAMA_CPP_CUDA_IMAGE = "ghcr.io/ggml-org/llama.cpp:server-cuda13"
LLM_HF_REPO = "unsloth/Nemotron-3-Nano-30B-A3B-GGUF:Q4_K_M"
LLM_PARALLEL = 4
"""llama-server slots: the requests one LLM container generates for at once."""
LLM_CTX_PER_SLOT = 8192
# L40S (48 GB, sm_89): room for the 30B-A3B model at Q4 with four slots, and llama.cpp's prebuilt
# image carries sm_89 machine code (for an H100, sm_90, it would JIT-compile PTX at every cold start).
GPU = "L40S"
BOT_DEFAULTS = {
    # ASR, TTS and LLM have a GPU each here, so the LLM streams freely instead of taking turns.
    "BOT_INTERLEAVE": "off",
    # The GPU classes scale to zero: a call's first model server may take minutes to start and load.
    "BOT_MODEL_SERVER_WAIT_S": "600",
    # Modal containers sit behind NAT: STUN gives the browser an address that reaches the bot.
    "PIPECAT_ICE_SERVERS": "stun:stun.l.google.com:19302",
}

PROXY_AUTH_KEYS = ("MODAL_PROXY_KEY", "MODAL_PROXY_SECRET")
BOT_REQUIRES_PROXY_AUTH = os.environ.get("BOT_REQUIRE_PROXY_AUTH", "0") == "1"
if modal.is_local() and not all(os.environ.get(k) for k in PROXY_AUTH_KEYS):
    print(
        f"modal_app: set {' and '.join(PROXY_AUTH_KEYS)} (a Proxy Auth Token: Modal settings → Proxy Auth "
        "Tokens) before deploying, or the bot cannot reach its model servers",
        file=sys.stderr,
    )

app = modal.App(APP_NAME)
models = modal.Volume.from_name(f"{APP_NAME}-models", create_if_missing=True)


def requirements(*extras: str) -> list[str]:
    """The project's dependencies and the given extras from pyproject.toml, with the extras that
    name the project itself (`nemotron-voice-agent[nemo]`) expanded: the project is not on PyPI."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    own = project["name"] + "["
    result, pending, seen = list(project["dependencies"]), list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            if requirement.startswith(own):
                pending += requirement[len(own) : -1].split(",")
            else:
                result.append(requirement)
    return result


def deploy_settings(prefixes: tuple[str, ...], defaults: dict[str, str] | None = None) -> dict[str, str]:
    """Settings from the deploying machine's environment (variables starting with `prefixes`)."""
    settings = dict(defaults or {})
    settings.update({k: v for k, v in os.environ.items() if k.startswith(prefixes)})
    return settings


def deploy_secret(prefixes: tuple[str, ...], defaults: dict[str, str] | None = None) -> modal.Secret:
    # In a container this module is imported again; its environment is not the deployer's.
    return modal.Secret.from_dict(deploy_settings(prefixes, defaults) if modal.is_local() else {})


def _local(*extras: str) -> list[str]:
    """Requirements for an image definition; pyproject.toml exists only where the app is deployed from."""
    return requirements(*extras) if modal.is_local() else []


nemo_image = (
    modal.Image.from_registry(NGC_PYTORCH_IMAGE)
    .pip_install(*_local("nemo", "magpie"))
    .env({"HF_HOME": f"{CACHE}/huggingface", "NEMO_CACHE_DIR": f"{CACHE}/nemo", "PYTHONUNBUFFERED": "1"})
    .add_local_python_source("servers")
)
llm_image = (
    modal.Image.from_registry(LLAMA_CPP_CUDA_IMAGE, add_python="3.12")
    .entrypoint([])  # the image's entrypoint is llama-server; Modal runs its own
    .env({"LLAMA_CACHE": f"{CACHE}/llama.cpp"})
    .add_local_python_source("servers")  # this module imports servers.processes in every container
)
bot_image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install(*_local("bot"))
    .env({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    .add_local_python_source("servers", "pipecat_services", "bot_config")
    .add_local_file(ROOT / "bot.py", "/root/bot.py")
)
hf_secret = deploy_secret(("HF_TOKEN",))

# Every model server: first start downloads weights (startup_timeout), a WebSocket session is one
# input for as long as the call lasts (timeout), idle GPUs go away after 10 minutes.
SERVER_OPTIONS = {
    "gpu": GPU,
    "volumes": {CACHE: models},
    "secrets": [hf_secret],
    "timeout": 60 * MINUTES,
    "startup_timeout": 30 * MINUTES,
    "min_containers": 0,
    "scaledown_window": 10 * MINUTES,
}


MODAL_BIND = ("--host", "0.0.0.0", "--insecure")
"""Our servers listen beyond the container; no token of their own is needed: Modal's proxy auth
(`requires_proxy_auth`) lets only holders of the Proxy Auth Token reach them."""


class ServerContainer:
    """Start the server, wait for its health, run one real request so the first caller does not pay
    for CUDA initialisation, and save any weights it downloaded to the volume."""

    port: int

    def command(self) -> list[str]:
        raise NotImplementedError

    def warm_up(self) -> None:
        raise NotImplementedError

    @modal.enter()
    def start(self) -> None:
        self.server = ServerProcess(self.command(), f"http://127.0.0.1:{self.port}/health", cwd="/root")
        self.server.run(timeout=30 * MINUTES)
        self.warm_up()
        models.commit()

    @modal.exit()
    def stop(self) -> None:
        self.server.stop(grace_s=15)


@app.cls(image=nemo_image, max_containers=4, **SERVER_OPTIONS)
@modal.concurrent(max_inputs=32, target_inputs=16)
class ASR(ServerContainer):
    """Nemotron Speech: one engine decodes every open stream in a batch, so one GPU serves dozens."""

    port = ASR_PORT

    def command(self) -> list[str]:
        return [sys.executable, "-m", "servers.asr", "--engine", "nemotron", "--right-context", "1",
                *MODAL_BIND, "--port", str(self.port)]  # fmt: skip

    def warm_up(self) -> None:
        from servers.asr.client import ASRClient

        async def hear_once() -> None:
            async with ASRClient(f"ws://127.0.0.1:{self.port}") as asr:
                await asr.send_audio(bytes(32_000))  # one second of silence
                await asr.finalize(timeout=60)

        asyncio.run(hear_once())

    @modal.web_server(ASR_PORT, startup_timeout=60, requires_proxy_auth=True)
    def serve(self) -> None:
        """The server already runs: `start` launched it."""


@app.cls(image=nemo_image, max_containers=8, **SERVER_OPTIONS)
@modal.concurrent(max_inputs=8, target_inputs=4)
class TTS(ServerContainer):
    """Magpie TTS: one worker thread per engine takes the sessions' chunks in turn, so a handful of
    sessions share a GPU before first audio slows down."""

    port = TTS_PORT

    def command(self) -> list[str]:
        return [sys.executable, "-m", "servers.tts", "--engine", "magpie", *MODAL_BIND, "--port", str(self.port)]

    def warm_up(self) -> None:
        from servers.tts.client import TTSClient

        async def speak_once() -> None:
            async with TTSClient(f"ws://127.0.0.1:{self.port}", open_timeout=60) as tts:
                await tts.speak("warm-up", "Hello, nice to meet you.", timeout=120)

        asyncio.run(speak_once())

    @modal.web_server(TTS_PORT, startup_timeout=60, requires_proxy_auth=True)
    def serve(self) -> None:
        """The server already runs: `start` launched it."""


def llm_command(port: int = LLM_PORT) -> list[str]:
    """llama-server with the options of servers/llm/server.py on a GPU, and LLM_PARALLEL slots."""
    return [
        "/app/llama-server", "--hf-repo", LLM_HF_REPO, "--alias", "nemotron-3-nano",
        "--host", "0.0.0.0", "--port", str(port),
        "--ctx-size", str(LLM_CTX_PER_SLOT * LLM_PARALLEL), "--parallel", str(LLM_PARALLEL),
        "--gpu-layers", "999", "--device", "CUDA0",  # no CUDA backend: llama-server exits, never runs on the CPU
        "--flash-attn", "on", "--cache-reuse", "256", "--cache-ram", "512",
        "--jinja", "--reasoning", "off", "--no-webui", "--cors-origins", "localhost", "--metrics",
        "--log-colors", "off",
    ]  # fmt: skip


@app.cls(image=llm_image, max_containers=4, **SERVER_OPTIONS)
@modal.concurrent(max_inputs=LLM_PARALLEL)
class LLM(ServerContainer):
    """Nemotron 3 Nano 30B-A3B on llama.cpp: as many requests at once as it has slots."""

    port = LLM_PORT

    def command(self) -> list[str]:
        return llm_command(self.port)

    def warm_up(self) -> None:
        body = json.dumps({"prompt": "Hello", "n_predict": 8}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/completion", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300):
            pass

    @modal.web_server(LLM_PORT, startup_timeout=60, requires_proxy_auth=True)
    def serve(self) -> None:
        """The server already runs: `start` launched it."""


def service_urls() -> dict[str, str]:
    """BOT_ASR_URL, BOT_TTS_URL and BOT_LLM_URL for those not set, from the deployed app's endpoints.

    Runs in the bot's container when it starts (a lookup through Modal's API), never at import."""
    urls = {}
    for variable, name, scheme in (("BOT_ASR_URL", "ASR", "wss"), ("BOT_TTS_URL", "TTS", "wss"),
                                   ("BOT_LLM_URL", "LLM", "https")):  # fmt: skip
        if not os.environ.get(variable):
            web_url = modal.Cls.from_name(APP_NAME, name)().serve.get_web_url()
            urls[variable] = scheme + web_url.removeprefix("https")
    return urls


# One container for every call: Pipecat's runner keeps its WebRTC sessions in memory, and the
# Playground's requests for one call (/start, the offer, ICE candidates) must reach the same process.
# Calls are not Modal inputs once the offer is answered, so the container stays up (min_containers).
@app.function(
    image=bot_image,
    cpu=4,
    memory=4096,
    secrets=[deploy_secret(("BOT_", "PIPECAT_", *PROXY_AUTH_KEYS), BOT_DEFAULTS)],
    timeout=10 * MINUTES,
    min_containers=1,
    max_containers=1,
)
@modal.concurrent(max_inputs=100)
@modal.web_server(BOT_PORT, startup_timeout=2 * MINUTES, requires_proxy_auth=BOT_REQUIRES_PROXY_AUTH)
def bot() -> None:
    """Pipecat's runner with our bot: Playground at /client, WebRTC offer at /api/offer."""
    command = [sys.executable, "/root/bot.py", "-t", "webrtc", "--host", "0.0.0.0", "--port", str(BOT_PORT)]
    subprocess.Popen(command, cwd="/root", env={**os.environ, **service_urls()})
