"""modal_app.py, without a Modal account: import the app (with the network cut off, as it must not
need one) and read back what each function asks Modal for: GPU, volume, timeouts, concurrency,
autoscaling, web endpoints; then the bot's service discovery and call start with Modal's calls faked.
The call path itself (signalling, one worker per call, the real bot) runs in test_call_signalling.py."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import modal
import pytest

from bot_config import BotConfig, add_bot_flags, flag_name
from servers.llm.server import llama_server_command
from tests.test_compose import LLAMA_GPU_POLICY, LLAMA_POLICY, flags

MINUTES = 60
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def deployed():
    """modal_app imported afresh with no network, recording what it passes to Modal's decorators."""
    registrations, ports, web_servers = [], [], {}
    patch = pytest.MonkeyPatch()
    original_cls, original_function, original_web_server = modal.App.cls, modal.App.function, modal.web_server

    def record(original):
        def decorator(self, **options):
            wrap = original(self, **options)

            def register(target):
                registered = wrap(target)
                registrations.append((registered, options))
                return registered

            return register

        return decorator

    def web_server(port, **options):
        ports.append(port)
        web_servers[port] = options
        return original_web_server(port, **options)

    def no_network(*args, **kwargs):
        raise AssertionError("modal_app touched the network at import")

    patch.setattr(modal.App, "cls", record(original_cls))
    patch.setattr(modal.App, "function", record(original_function))
    patch.setattr(modal, "web_server", web_server)
    patch.setattr(socket, "getaddrinfo", no_network)
    patch.setattr(socket.socket, "connect", no_network)
    for key in ("MODAL_PROXY_KEY", "MODAL_PROXY_SECRET"):
        patch.setenv(key, "test")  # a deploy refuses to start without them (test below)
    sys.modules.pop("modal_app", None)
    module = importlib.import_module("modal_app")
    patch.undo()
    names = ("ASR", "TTS", "LLM", "Call", "Phone", "web")
    options = {name: o for name in names for r, o in registrations if r is getattr(module, name)}
    yield SimpleNamespace(module=module, options=options, ports=ports, web_servers=web_servers)
    sys.modules.pop("modal_app", None)


def info(deployed, name: str, method: str = "serve"):
    """Modal's own summary of a function: for a class, that of one of its methods (the web endpoint)."""
    target = getattr(deployed.module, name)
    return (getattr(target(), method) if isinstance(target, modal.Cls) else target).info()


@pytest.mark.parametrize("name", ["ASR", "TTS", "LLM"])
def test_model_servers_run_on_a_gpu_with_the_model_volume(deployed, name):
    summary = info(deployed, name)
    assert summary.gpus == [("L40S", 1)]
    assert [(path, v.name) for path, v in summary.volumes.items()] == [("/cache", "nemotron-voice-agent-models")]
    assert summary.timeout >= 30 * MINUTES  # a WebSocket session is one input for a whole call
    assert summary.startup_timeout >= 20 * MINUTES  # the first container downloads the weights
    assert set(summary.method_details) == {"serve"}  # the one web endpoint
    assert getattr(deployed.module, name)().wake.info().gpus == summary.gpus  # a no-op that starts a container
    assert getattr(deployed.module, name).port in deployed.ports


@pytest.mark.parametrize("name", ["ASR", "TTS", "LLM"])
def test_model_servers_fetch_their_own_weights_then_run_offline(deployed, name):
    """Each container runs the fetch step for its part into the volume before its server, which
    starts with the hub off; the LLM loads the fetch step's link, at the budgeted quantization."""
    from servers.gpu_budget import MODAL_QUANT
    from servers.model_fetch import parse_args

    server = getattr(deployed.module, name)
    command = deployed.module.fetch_command(server.part)
    assert command[1:3] == ["-m", "servers.model_fetch"]
    args = parse_args(command[3:])
    assert args.parts == [name.lower()] and args.dest == deployed.module.CACHE and args.llm_quant == MODAL_QUANT
    assert deployed.module.SERVER_ENV["HF_HOME"].startswith(args.dest + "/")
    if name == "LLM":
        assert flags(deployed.module.llm_command())["--model"] == f"{args.dest}/gguf/llm.gguf"


@pytest.mark.parametrize(
    "name, max_inputs, target_inputs",
    [("ASR", 32, 16), ("TTS", 8, 4), ("LLM", 4, None)],  # batched streams; one TTS worker; 4 llama slots
)
def test_concurrency_matches_what_each_server_serves(deployed, name, max_inputs, target_inputs):
    concurrency = info(deployed, name).concurrency_info
    assert (concurrency.max_inputs, concurrency.target_inputs) == (max_inputs, target_inputs)


def test_llm_concurrency_is_its_slot_count(deployed):
    command = flags(deployed.module.llm_command())
    assert int(command["--parallel"]) == info(deployed, "LLM").concurrency_info.max_inputs
    assert int(command["--ctx-size"]) == deployed.module.MODAL_CTX_PER_SLOT * int(command["--parallel"])
    assert command["--host"] == "0.0.0.0" and command["--port"] == str(deployed.module.LLM.port)


def test_llm_runs_with_the_wrappers_options(deployed):
    args = argparse.Namespace(
        host="0.0.0.0", port=8002, model="x", ctx_size=1, parallel=1, threads=1, gpu_layers=-1, cache_ram=512
    )
    wrapper = flags(llama_server_command(args, Path("llama-server"), Path("m.gguf"), True, []))
    command = flags(deployed.module.llm_command())
    assert command["--device"] == "CUDA0"  # fails at start without CUDA, never runs on the CPU
    for option in LLAMA_POLICY + LLAMA_GPU_POLICY:
        assert command[option] == wrapper[option], option


@pytest.mark.parametrize("name", ["ASR", "TTS", "LLM"])
def test_gpus_scale_to_zero_and_out(deployed, name):
    options = deployed.options[name]
    assert options["min_containers"] == 0
    assert options["max_containers"] >= 2
    assert 5 * MINUTES <= options["scaledown_window"] <= 3600


def test_signalling_is_a_stateless_cpu_web_app(deployed):
    summary = info(deployed, "web")
    assert summary.gpus == [] and summary.web_info is not None
    assert summary.concurrency_info.max_inputs >= 50  # short HTTP requests: page, start, offer, ICE candidates
    options = deployed.options["web"]
    assert options["min_containers"] == 1 and options.get("max_containers") is None  # scales out: no call state
    assert sorted(deployed.ports) == [8001, 8002, 8080]  # web is an ASGI app, not a server on a port


def test_each_call_has_a_cpu_container_of_its_own(deployed):
    summary = info(deployed, "Call", "run")
    assert summary.gpus == [] and summary.web_info is None
    assert summary.concurrency_info is None  # no @modal.concurrent: one call per container
    assert summary.timeout >= 20 * MINUTES  # a 20-minute call is one input
    options = deployed.options["Call"]
    assert options["buffer_containers"] >= 1  # a warm container waits for the next call
    assert options.get("max_containers") is None


def test_each_phone_call_has_a_cpu_container_of_its_own(deployed):
    summary = info(deployed, "Phone")
    assert summary.gpus == [] and summary.method_details["serve"].unauthenticated  # carriers have no Modal key
    assert summary.concurrency_info.max_inputs == 1  # a media stream is an input: one call per container
    assert summary.timeout >= 20 * MINUTES
    assert deployed.options["Phone"]["buffer_containers"] >= 1


class LocalDict:
    """The four Modal Dict calls SharedStreamTokens makes, on a dict (what two containers share)."""

    def __init__(self) -> None:
        self.data: dict = {}

        async def items():
            for item in list(self.data.items()):
                yield item

        async def put(key, value):
            self.data[key] = value

        async def pop(key, default):
            return self.data.pop(key, default)

        async def length():
            return len(self.data)

        self.items, self.put, self.pop, self.len = (SimpleNamespace(aio=f) for f in (items, put, pop, length))


def test_phone_tokens_are_shared_by_containers_and_one_time(deployed, monkeypatch):
    store = LocalDict()
    webhook, media = (deployed.module.SharedStreamTokens(store, ttl_s=30, capacity=2) for _ in range(2))

    async def scenario() -> None:
        first, second = await webhook.issue(), await webhook.issue()
        assert await webhook.issue() is None, "past capacity"
        assert await media.redeem(first) and not await media.redeem(first)
        now = deployed.module.time.time() + 31
        monkeypatch.setattr(deployed.module.time, "time", lambda: now)
        assert not await media.redeem(second), "expired"
        assert await webhook.issue() is not None and len(store.data) == 1, "expired tokens are dropped"

    asyncio.run(scenario())


def test_the_phone_endpoint_answers_its_carriers_signed_webhook(deployed, monkeypatch):
    """The Phone container's app is bot.py's phone routes: a Twilio-signed webhook to its own Modal
    host gets stream instructions for that host; an unsigned one 403."""
    from fastapi.testclient import TestClient

    from benchmarks.phone_client import CarrierAccount

    account = CarrierAccount.new("twilio")
    monkeypatch.setenv("PHONE_CARRIER", "twilio")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", account.secret)
    monkeypatch.setattr(deployed.module, "phone_tokens", LocalDict())
    host = "ws--nemotron-voice-agent-phone-serve.modal.run"
    client = TestClient(deployed.module.Phone._get_user_cls()().serve(), base_url=f"https://{host}")
    body, headers = account.signed_webhook(f"https://{host}/", "CA1")
    answer = client.post("/", content=body, headers=headers)
    assert answer.status_code == 200 and f'url="wss://{host}/ws"' in answer.text, answer.text
    assert client.post("/", content=body, headers={"Content-Type": headers["Content-Type"]}).status_code == 403


def test_a_connected_call_wakes_the_deployed_model_servers_it_uses(deployed, monkeypatch):
    """/start only spawns the call's container; once its offer is answered the call wakes, at once,
    the deployed app's model servers it found (not one set by URL, e.g. another LLM)."""
    spawned = []

    async def record(*args):
        spawned.append(args)

    def from_name(app_name, class_name):
        url = f"https://ws--{app_name}-{class_name.lower()}-serve.modal.run"
        spawn = SimpleNamespace(aio=lambda *args: record(app_name, class_name, *args))
        return lambda: SimpleNamespace(
            serve=SimpleNamespace(get_web_url=lambda: url), wake=SimpleNamespace(spawn=spawn)
        )

    call = deployed.module.Call._get_user_cls()()
    monkeypatch.setattr(modal.Cls, "from_name", from_name)
    spawn_call = SimpleNamespace(aio=lambda *args: record("Call", *args))
    monkeypatch.setattr(deployed.module, "Call", lambda: SimpleNamespace(run=SimpleNamespace(spawn=spawn_call)))
    asyncio.run(deployed.module.start_call("s1", {"voice": "x"}))
    assert spawned == [("Call", "s1", {"voice": "x"})]

    spawned.clear()
    for variable in ("BOT_ASR_URL", "BOT_TTS_URL"):
        monkeypatch.setenv(variable, "")  # so that what prepare() sets is undone after the test
        monkeypatch.delenv(variable)
    monkeypatch.setenv("BOT_LLM_URL", "https://api.example.com/v1")
    monkeypatch.setitem(sys.modules, "bot", SimpleNamespace(bot=lambda args: record("bot", args)))
    call.prepare()
    assert call.ours == ["ASR", "TTS"]
    asyncio.run(deployed.module.wake(call.ours))
    assert spawned == [("nemotron-voice-agent", "ASR"), ("nemotron-voice-agent", "TTS")]


def test_turn_credentials_come_from_a_modal_secret(deployed, monkeypatch):
    """MODAL_TURN_SECRET names a Secret holding PIPECAT_ICE_SERVERS: it must exist at deploy time,
    and it is the only source of that variable (the STUN default and the deployer's own are dropped)."""
    named = []
    monkeypatch.setattr(modal.Secret, "from_name", lambda name, **kw: named.append((name, kw)) or "secret")
    monkeypatch.setenv("PIPECAT_ICE_SERVERS", "stun:example.org:3478")
    assert "PIPECAT_ICE_SERVERS" not in deployed.module.bot_settings("voice-turn")
    assert deployed.module.bot_settings("")["PIPECAT_ICE_SERVERS"] == "stun:example.org:3478"
    secrets = deployed.module.bot_secrets("voice-turn")
    assert named == [("voice-turn", {"required_keys": ["PIPECAT_ICE_SERVERS"]})] and secrets[-1] == "secret"
    assert len(deployed.module.bot_secrets("")) == 1


def test_ice_servers_with_turn_credentials_reach_browser_and_bot(deployed, monkeypatch):
    turn = (
        '[{"urls": "stun:stun.example.org:3478"}, '
        '{"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]'
    )
    monkeypatch.setenv("PIPECAT_ICE_SERVERS", turn)
    servers = deployed.module.ice_servers()
    assert servers[1]["username"] == "u" and servers[1]["credential"] == "p" and "turn:" in str(servers[1]["urls"])
    from pipecat.transports.smallwebrtc.connection import IceServer

    assert [IceServer(**s).username for s in servers] == [None, "u"]  # what call_signalling builds for aiortc


def test_bot_settings_come_from_the_deploying_environment(deployed, monkeypatch):
    monkeypatch.setenv("BOT_LLM_API", "openai")
    monkeypatch.setenv("OTHER_SETTING", "x")
    settings = deployed.module.deploy_settings(("BOT_", "PIPECAT_"), deployed.module.BOT_DEFAULTS)
    assert settings["BOT_LLM_API"] == "openai" and "OTHER_SETTING" not in settings
    assert settings["BOT_INTERLEAVE"] == "off"  # a GPU each: the LLM need not take turns with the TTS
    assert float(settings["BOT_MODEL_SERVER_WAIT_S"]) >= 300  # a model server scaled to zero comes back
    assert settings["PIPECAT_ICE_SERVERS"].startswith("stun:")
    monkeypatch.setenv("BOT_INTERLEAVE", "all")
    assert deployed.module.deploy_settings(("BOT_",), deployed.module.BOT_DEFAULTS)["BOT_INTERLEAVE"] == "all"


def test_bot_finds_model_servers_through_modal(deployed, monkeypatch):
    looked_up = []

    def from_name(app_name, class_name):
        looked_up.append((app_name, class_name))
        url = f"https://ws--nemotron-voice-agent-{class_name.lower()}-serve.modal.run"
        return lambda: SimpleNamespace(serve=SimpleNamespace(get_web_url=lambda: url))

    monkeypatch.setattr(modal.Cls, "from_name", from_name)
    for variable in ("BOT_ASR_URL", "BOT_TTS_URL", "BOT_LLM_URL"):
        monkeypatch.delenv(variable, raising=False)
    assert deployed.module.service_urls() == {
        "BOT_ASR_URL": "wss://ws--nemotron-voice-agent-asr-serve.modal.run",
        "BOT_TTS_URL": "wss://ws--nemotron-voice-agent-tts-serve.modal.run",
        "BOT_LLM_URL": "https://ws--nemotron-voice-agent-llm-serve.modal.run",
    }
    assert looked_up == [("nemotron-voice-agent", n) for n in ("ASR", "TTS", "LLM")]

    # A URL set at deploy time (e.g. an OpenAI-compatible LLM) is used as is, without a lookup.
    looked_up.clear()
    monkeypatch.setenv("BOT_LLM_URL", "https://api.example.com/v1")
    assert "BOT_LLM_URL" not in deployed.module.service_urls()
    assert ("nemotron-voice-agent", "LLM") not in looked_up


def test_images_install_the_projects_own_requirements(deployed):
    nemo = deployed.module.requirements("nemo", "magpie")
    assert "nemo_toolkit[asr]==3.0.0" in nemo and "pyopenjtalk==0.4.1" in nemo and "websockets>=14,<18" in nemo
    assert not any(r.startswith("nemotron-voice-agent") for r in nemo)  # the project is not on PyPI
    assert "pipecat-ai[webrtc,silero,websocket,runner,tracing,mcp]==1.14.0" in deployed.module.requirements("bot")


def test_model_servers_are_behind_proxy_auth_and_the_bot_holds_the_credentials(deployed, monkeypatch):
    """Nobody who merely learns a model server's URL can spend the GPUs; the Playground stays public."""
    module = deployed.module
    for port in (module.ASR_PORT, module.TTS_PORT, module.LLM_PORT):
        assert deployed.web_servers[port]["requires_proxy_auth"] is True, port
    monkeypatch.setenv("MODAL_PROXY_KEY", "wk-test")
    monkeypatch.setenv("MODAL_PROXY_SECRET", "ws-test")
    settings = module.deploy_settings(("BOT_", "PIPECAT_", *module.PROXY_AUTH_KEYS), module.BOT_DEFAULTS)
    assert settings["MODAL_PROXY_KEY"] == "wk-test" and settings["MODAL_PROXY_SECRET"] == "ws-test"
    # In the bot's container those variables become the headers of every model-server request.
    from servers.auth import auth_headers

    monkeypatch.delenv("MODEL_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("MODEL_SERVER_TOKEN_FILE", raising=False)
    proxy = {"Modal-Key": "wk-test", "Modal-Secret": "ws-test"}
    assert auth_headers("wss://ws--nemotron-voice-agent-asr-serve.modal.run") == proxy
    assert auth_headers("https://api.example.com/v1") == {}  # never to anyone else's server


@pytest.mark.parametrize("name", ["ASR", "TTS"])
def test_model_server_commands_start_in_their_container(deployed, name, monkeypatch):
    """The container has no model-server token (Modal's proxy guards it): the command must still be
    one our server accepts and starts with on 0.0.0.0."""
    from servers.cli import refuse_insecure_bind

    monkeypatch.delenv("MODEL_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("MODEL_SERVER_TOKEN_FILE", raising=False)
    command = getattr(deployed.module, name).command(SimpleNamespace(port=1234))
    module = importlib.import_module(f"{command[2]}.server")
    args = module.parse_args(command[3:])
    assert args.host == "0.0.0.0" and args.port == 1234
    refuse_insecure_bind(name, args)  # would exit: a LAN address without a token or --insecure


def test_a_deploy_without_the_proxy_auth_token_stops_with_one_line(deployed, tmp_path):
    """`modal deploy` as a user runs it, with no Proxy Auth Token exported: modal_app's own check stops it
    before anything is sent, in one line naming what to export (no Modal account needed to see it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["HOME"] = str(tmp_path)  # no Modal token either: the check comes first
    modal_cli = Path(sys.executable).parent / "modal"
    result = subprocess.run(
        [str(modal_cli), "deploy", "modal_app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "export MODAL_PROXY_KEY and MODAL_PROXY_SECRET first" in lines[0], result.stderr
    problem = deployed.module.deploy_problem
    assert problem({"MODAL_PROXY_KEY": "wk-1"}).startswith("modal_app: export MODAL_PROXY_SECRET first")
    assert problem({"MODAL_PROXY_KEY": "wk-1", "MODAL_PROXY_SECRET": "ws-1"}) is None


def test_modals_bot_defaults_are_valid_settings(deployed):
    """`BOT_DEFAULTS` names settings of `bot_config.py` and gives each a value its flag accepts."""
    fields = {f.name: f for f in dataclasses.fields(BotConfig)}
    parser = add_bot_flags(argparse.ArgumentParser(exit_on_error=False))
    for name, value in deployed.module.BOT_DEFAULTS.items():
        if not name.startswith("BOT_"):
            continue  # Pipecat's own (PIPECAT_ICE_SERVERS)
        field = name.removeprefix("BOT_").lower()
        assert field in fields, f"Modal sets {name}, which is no setting"
        parser.parse_args([flag_name(field), value])
