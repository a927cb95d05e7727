"""The voice agent on Modal: ASR, TTS and LLM servers on their own GPUs, one CPU container per call.

    modal deploy modal_app.py                  then open https://<workspace>--nemotron-voice-agent-web.modal.run/client

Each model server is the command it is everywhere else (`python -m servers.asr`, ...; llama.cpp's
llama-server for the LLM), served through `@modal.web_server`. A container first fetches and verifies
its weights into one Modal Volume (`servers.model_fetch`: the first container downloads, the next ones
find them), then starts its server offline, healthy once it has answered one request.
`@modal.concurrent` admits what one server really serves at once: a WebSocket session or an HTTP
request is one input.

Calls (call_signalling.py): `web` serves the Playground and the WebRTC signalling, stateless; every
call gets its own `Call` container (one input each), which answers the offer through a Modal Queue and
runs the bot for that call only. Calls scale with Modal, and a redeploy lets running calls finish.
When a call connects, the model classes it uses are woken at once (a no-op method spawned on each),
so containers that scaled to zero start loading together; the bot's clients wait for them
(BOT_MODEL_SERVER_WAIT_S, bounded).

Settings come from the deploying machine's environment: HF_TOKEN, and BOT_* / PIPECAT_ICE_SERVERS
for the bot (e.g. BOT_LLM_API=openai BOT_LLM_URL=... to use another LLM). TURN credentials belong in a
Modal Secret holding PIPECAT_ICE_SERVERS: name it in MODAL_TURN_SECRET at deploy time.
docs/deploy-modal.md has the commands.

The model servers' URLs are not open to the internet: Modal's proxy lets a request through only
with the Modal-Key / Modal-Secret headers of a Proxy Auth Token, which the bot sends (MODAL_PROXY_KEY
and MODAL_PROXY_SECRET from the deploying environment; `servers/auth.py`). The bot's Playground is
public unless BOT_REQUIRE_PROXY_AUTH=1 at deploy time (then only clients that send the headers).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import modal

from servers.gpu_budget import MODAL_CTX_PER_SLOT, MODAL_QUANT, MODAL_SLOTS
from servers.llm.binary import LLAMA_CPP_BUILD
from servers.model_fetch import LLM_LINK
from servers.ports import ASR_PORT, LLM_PORT, TTS_PORT
from servers.processes import ServerProcess

APP_NAME = "nemotron-voice-agent"
ROOT = Path(__file__).parent
MINUTES = 60
CACHE = "/cache"

NGC_PYTORCH_IMAGE = "nvcr.io/nvidia/pytorch:25.10-py3"
LLAMA_CPP_CUDA_IMAGE = f"ghcr.io/ggml-org/llama.cpp:server-cuda13-{LLAMA_CPP_BUILD}"
CALL_TIMEOUT = 60 * MINUTES
"""The longest call: its Call container's one input."""
SIGNALLING_TTL_S = 10 * MINUTES
"""How long an unread signalling message is kept (a call's offer waits at most ANSWER_TIMEOUT_S)."""
# L40S (48 GB, sm_89): room for the 30B-A3B model at Q4 with four slots, and llama.cpp's prebuilt
# image carries sm_89 machine code (for an H100, sm_90, it would JIT-compile PTX at every cold start).
GPU = "L40S"
BOT_DEFAULTS = {
    # ASR, TTS and LLM have a GPU each here, so the LLM streams freely instead of taking turns.
    "BOT_INTERLEAVE": "off",
    # The GPU classes scale to zero: a call's first model server may take minutes to start and load.
    "BOT_MODEL_SERVER_WAIT_S": "600",
    # Modal containers sit behind NAT: STUN gives the browser an address that reaches the bot. Strict
    # NATs need TURN as well: MODAL_TURN_SECRET (below).
    "PIPECAT_ICE_SERVERS": "stun:stun.l.google.com:19302",
}
TURN_SECRET = os.environ.get("MODAL_TURN_SECRET", "")
"""Name of a Modal Secret with PIPECAT_ICE_SERVERS (STUN and TURN, with credentials, in Pipecat's JSON
form); it replaces the STUN-only default for both the browser and the bot."""

PROXY_AUTH_KEYS = ("MODAL_PROXY_KEY", "MODAL_PROXY_SECRET")
PHONE_KEYS = ("PHONE_CARRIER", "TWILIO_", "TELNYX_")
"""Phone calls (docs/phone.md): PHONE_CARRIER=twilio|telnyx and its secrets at deploy time make the
`Phone` endpoint answer that carrier's calls."""
BOT_REQUIRES_PROXY_AUTH = os.environ.get("BOT_REQUIRE_PROXY_AUTH", "0") == "1"


def deploy_problem(environ: dict[str, str]) -> str | None:
    """Why a deploy from this environment could not work, in one line: without the Proxy Auth Token the
    model servers refuse every request of the bot, so every call would fail."""
    missing = [k for k in PROXY_AUTH_KEYS if not environ.get(k)]
    if missing:
        return (f"modal_app: export {' and '.join(missing)} first (a Proxy Auth Token: Modal Settings → Proxy "
                "Auth Tokens); without it the model servers refuse the bot and every call fails")  # fmt: skip
    return None


if modal.is_local() and (problem := deploy_problem(dict(os.environ))):
    sys.exit(problem)  # `modal deploy` / `modal serve` print this one line and stop

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


# What each image holds of this repository (beside this module, which Modal adds to every image) and
# which extras it installs; tests/test_image_contents.py imports every entry point from exactly these.
NEMO_EXTRAS, LLM_EXTRAS, BOT_EXTRAS = ("nemo", "magpie", "fetch"), ("fetch",), ("bot",)
SERVER_SOURCES = ("servers",)
BOT_SOURCES = ("servers", "pipecat_services", "bot_config", "bot", "bot_tools", "call_signalling", "phone_calls")

SERVER_ENV = {"HF_HOME": f"{CACHE}/huggingface", "NEMO_CACHE_DIR": f"{CACHE}/nemo", "PYTHONUNBUFFERED": "1"}
# As docker/nemo.Dockerfile: NVIDIA's own builds (torch...) pinned while NeMo installs around them,
# and pyopenjtalk's dictionary fetched at build time rather than in a running server.
nemo_image = (
    modal.Image.from_registry(NGC_PYTORCH_IMAGE)
    .add_local_file(ROOT / "scripts" / "keep-image-builds.sh", "/opt/keep-image-builds.sh", copy=True)
    .run_commands("bash /opt/keep-image-builds.sh > /opt/keep-image-builds.txt")
    .pip_install(*_local(*NEMO_EXTRAS), extra_options="--constraint /opt/keep-image-builds.txt")
    .run_commands("python -c \"import pyopenjtalk; pyopenjtalk.g2p('テスト')\"")
    .env(SERVER_ENV)
    .add_local_python_source(*SERVER_SOURCES)
)
llm_image = (
    modal.Image.from_registry(LLAMA_CPP_CUDA_IMAGE, add_python="3.12")
    .entrypoint([])  # the image's entrypoint is llama-server; Modal runs its own
    .pip_install(*_local(*LLM_EXTRAS))  # servers.model_fetch, and what this module imports in every container
    .env(SERVER_ENV)
    .add_local_python_source(*SERVER_SOURCES)
)
bot_image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install(*_local(*BOT_EXTRAS))
    .env({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    .add_local_python_source(*BOT_SOURCES)
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


def fetch_command(part: str) -> list[str]:
    """Download and verify one server's weights into the volume (a no-op when they are there)."""
    return [sys.executable, "-m", "servers.model_fetch", "--dest", CACHE, "--parts", part, "--llm-quant", MODAL_QUANT]


class ServerContainer:
    """Fetch this server's weights into the volume, start the server from them with the hub off, and
    return once it is healthy, which for our servers means it has answered one request."""

    port: int
    part: str
    """Which weights (servers.model_fetch --parts)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def warm_up(self) -> None:
        """A first request, for a server whose health does not already include one."""

    @modal.enter()
    def start(self) -> None:
        subprocess.run(fetch_command(self.part), cwd="/root", check=True)
        models.commit()
        health = f"http://127.0.0.1:{self.port}/health"
        self.server = ServerProcess(self.command(), health, env={"HF_HUB_OFFLINE": "1"}, cwd="/root")
        self.server.run(timeout=30 * MINUTES)
        self.warm_up()

    @modal.method()
    def wake(self) -> None:
        """Nothing: spawning it when a call connects brings a container up (see `start`) before the
        call's first words need it."""

    @modal.exit()
    def stop(self) -> None:
        self.server.stop(grace_s=15)


@app.cls(image=nemo_image, max_containers=4, **SERVER_OPTIONS)
@modal.concurrent(max_inputs=32, target_inputs=16)
class ASR(ServerContainer):
    """Nemotron Speech: one engine decodes every open stream in a batch, so one GPU serves dozens."""

    port, part = ASR_PORT, "asr"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "servers.asr", "--engine", "nemotron", "--right-context", "1",
                *MODAL_BIND, "--port", str(self.port)]  # fmt: skip

    @modal.web_server(ASR_PORT, startup_timeout=60, requires_proxy_auth=True)
    def serve(self) -> None:
        """The server already runs: `start` launched it."""


@app.cls(image=nemo_image, max_containers=8, **SERVER_OPTIONS)
@modal.concurrent(max_inputs=8, target_inputs=4)
class TTS(ServerContainer):
    """Magpie TTS: one worker thread per engine takes the sessions' chunks in turn, so a handful of
    sessions share a GPU before first audio slows down."""

    port, part = TTS_PORT, "tts"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "servers.tts", "--engine", "magpie", *MODAL_BIND, "--port", str(self.port)]

    @modal.web_server(TTS_PORT, startup_timeout=60, requires_proxy_auth=True)
    def serve(self) -> None:
        """The server already runs: `start` launched it."""


def llm_command(port: int = LLM_PORT) -> list[str]:
    """llama-server with the options of servers/llm/server.py on a GPU, and the budgeted slots."""
    return [
        "/app/llama-server", "--model", f"{CACHE}/gguf/{LLM_LINK}", "--alias", "nemotron-3-nano",
        "--host", "0.0.0.0", "--port", str(port),
        "--ctx-size", str(MODAL_CTX_PER_SLOT * MODAL_SLOTS), "--parallel", str(MODAL_SLOTS),
        "--gpu-layers", "999", "--device", "CUDA0",  # no CUDA backend: llama-server exits, never runs on the CPU
        "--flash-attn", "on", "--cache-reuse", "256", "--cache-ram", "512",
        "--jinja", "--reasoning", "off", "--no-webui", "--cors-origins", "localhost", "--metrics",
        "--log-colors", "off",
    ]  # fmt: skip


@app.cls(image=llm_image, max_containers=4, **SERVER_OPTIONS)
@modal.concurrent(max_inputs=MODAL_SLOTS)
class LLM(ServerContainer):
    """Nemotron 3 Nano 30B-A3B on llama.cpp: as many requests at once as it has slots."""

    port, part = LLM_PORT, "llm"

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


MODEL_SERVICES = (("BOT_ASR_URL", "ASR", "wss"), ("BOT_TTS_URL", "TTS", "wss"), ("BOT_LLM_URL", "LLM", "https"))


def service_urls() -> dict[str, str]:
    """BOT_ASR_URL, BOT_TTS_URL and BOT_LLM_URL for those not set, from the deployed app's endpoints.

    Runs in the bot's container when it starts (a lookup through Modal's API), never at import."""
    urls = {}
    for variable, name, scheme in MODEL_SERVICES:
        if not os.environ.get(variable):
            web_url = modal.Cls.from_name(APP_NAME, name)().serve.get_web_url()
            urls[variable] = scheme + web_url.removeprefix("https")
    return urls


class QueueMailbox:
    """call_signalling's Mailbox on a Modal Queue: a partition per call inbox and per reply."""

    def __init__(self, signalling: modal.Queue) -> None:
        self.queue = signalling

    async def send(self, partition: str, message: dict[str, Any]) -> None:
        await self.queue.put.aio(message, partition=partition, partition_ttl=SIGNALLING_TTL_S)

    async def receive(self, partition: str, timeout: float) -> dict[str, Any] | None:
        try:
            return await self.queue.get.aio(timeout=timeout, partition=partition)
        except queue.Empty:
            return None

    async def clear(self, partition: str) -> None:
        await self.queue.clear.aio(partition=partition)


signalling = modal.Queue.from_name(f"{APP_NAME}-signalling", create_if_missing=True)


def ice_servers() -> list[dict[str, Any]]:
    """PIPECAT_ICE_SERVERS in Pipecat's runner format (URLs, or JSON objects with TURN credentials),
    read by the runner's own parser (private in pipecat-ai 1.14.0, which pyproject pins; tested)."""
    from pipecat.runner.run import _parse_ice_servers

    return _parse_ice_servers(os.environ.get("PIPECAT_ICE_SERVERS"))


def bot_settings(turn_secret: str = TURN_SECRET) -> dict[str, str]:
    """The deploying environment's BOT_*/PIPECAT_* settings and proxy credentials, over BOT_DEFAULTS;
    with a TURN Secret named, PIPECAT_ICE_SERVERS comes from it alone (one source per variable)."""
    settings = deploy_settings(("BOT_", "PIPECAT_", *PROXY_AUTH_KEYS, *PHONE_KEYS), BOT_DEFAULTS)
    if turn_secret:
        settings.pop("PIPECAT_ICE_SERVERS")
    return settings


def bot_secrets(turn_secret: str = TURN_SECRET) -> list[modal.Secret]:
    settings = bot_settings(turn_secret) if modal.is_local() else {}  # see deploy_secret
    turn = [modal.Secret.from_name(turn_secret, required_keys=["PIPECAT_ICE_SERVERS"])] if turn_secret else []
    return [modal.Secret.from_dict(settings), *turn]


BOT_SECRETS = bot_secrets()


@app.cls(image=bot_image, cpu=2, memory=2048, secrets=BOT_SECRETS, timeout=CALL_TIMEOUT, buffer_containers=1,
         scaledown_window=5 * MINUTES)  # fmt: skip
class Call:
    """One call per container (no @modal.concurrent): its VAD, Smart Turn, Opus and aiortc have the
    container's CPUs to themselves. One idle container waits ready (buffer_containers) for the next call."""

    @modal.enter()
    def prepare(self) -> None:
        discovered = service_urls()
        os.environ.update(discovered)
        self.ours = [name for variable, name, _ in MODEL_SERVICES if variable in discovered]
        import bot

        self.bot = bot.bot

    @modal.method()
    async def run(self, session_id: str, body: dict[str, Any]) -> None:
        from call_signalling import serve_call

        async def bot_waking_model_servers(runner_args: Any) -> None:
            await wake(self.ours)
            await self.bot(runner_args)

        await serve_call(QueueMailbox(signalling), session_id, body, ice_servers(), bot_waking_model_servers)


async def wake(names: list[str]) -> None:
    """Once a call is connected (not at a mere /start: nobody wakes GPUs without a call), start the
    deployed app's model servers it uses, all at once, should they have scaled to zero."""
    await asyncio.gather(*(modal.Cls.from_name(APP_NAME, name)().wake.spawn.aio() for name in names))


async def start_call(session_id: str, body: dict[str, Any]) -> None:
    await Call().run.spawn.aio(session_id, body)


class SharedStreamTokens:
    """phone_calls' one-time stream tokens in a Modal Dict: the container that answers a call's webhook
    issues its token, the one that takes its media stream redeems it (`Dict.pop` is atomic)."""

    def __init__(self, tokens: modal.Dict, ttl_s: float, capacity: int) -> None:
        self.tokens, self.ttl_s, self.capacity = tokens, ttl_s, capacity

    async def issue(self) -> str | None:
        now = time.time()
        expired = [token async for token, expiry in self.tokens.items.aio() if expiry <= now]
        for token in expired:
            await self.tokens.pop.aio(token, None)
        if await self.tokens.len.aio() >= self.capacity:
            return None
        token = secrets.token_urlsafe(24)
        await self.tokens.put.aio(token, now + self.ttl_s)
        return token

    async def redeem(self, token: str) -> bool:
        expiry = await self.tokens.pop.aio(token, None)
        return expiry is not None and expiry > time.time()


phone_tokens = modal.Dict.from_name(f"{APP_NAME}-phone-tokens", create_if_missing=True)


@app.cls(image=bot_image, cpu=2, memory=2048, secrets=BOT_SECRETS, timeout=CALL_TIMEOUT, buffer_containers=1,
         scaledown_window=5 * MINUTES)  # fmt: skip
@modal.concurrent(max_inputs=1)
class Phone:
    """Phone calls, one per container as `Call` for WebRTC: each request is an input and a container
    takes one at a time, so a call's media stream has its container to itself. The carrier's webhook
    goes to https://<workspace>--nemotron-voice-agent-phone-serve.modal.run/ (signed for that host)."""

    @modal.enter()
    def prepare(self) -> None:
        os.environ.update(service_urls())

    @modal.asgi_app(requires_proxy_auth=False)
    def serve(self) -> Any:
        from fastapi import FastAPI

        import bot
        from bot_config import BotConfig
        from phone_calls import MAX_PENDING_STREAMS, STREAM_TOKEN_TTL_S

        phone = FastAPI(title="voice agent phone calls")
        carrier = os.environ.get("PHONE_CARRIER", "")
        if carrier:
            tokens = SharedStreamTokens(phone_tokens, STREAM_TOKEN_TTL_S, MAX_PENDING_STREAMS)
            bot.serve_phone_calls(phone, carrier, None, BotConfig.from_args(None), tokens)
        return phone


@app.function(image=bot_image, secrets=BOT_SECRETS, min_containers=1)
@modal.concurrent(max_inputs=100)
@modal.asgi_app(requires_proxy_auth=BOT_REQUIRES_PROXY_AUTH)
def web() -> Any:
    """The Playground at /client and the WebRTC signalling: short requests, no call state."""
    from call_signalling import signalling_app

    return signalling_app(QueueMailbox(signalling), start_call, ice_servers())
