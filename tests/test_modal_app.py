"""modal_app.py, without a Modal account: import the app (with the network cut off, as it must not
need one) and read back what each function asks Modal for: GPU, volume, timeouts, concurrency,
autoscaling, web endpoints; then the bot's service discovery with Modal's lookup faked."""

from __future__ import annotations

import argparse
import importlib
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

modal = pytest.importorskip("modal")

from servers.llm.server import llama_server_command
from tests.test_compose import LLAMA_GPU_POLICY, LLAMA_POLICY, flags

MINUTES = 60


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
    sys.modules.pop("modal_app", None)
    module = importlib.import_module("modal_app")
    patch.undo()
    options = {name: o for name in ("ASR", "TTS", "LLM", "bot") for r, o in registrations if r is getattr(module, name)}
    yield SimpleNamespace(module=module, options=options, ports=ports, web_servers=web_servers)
    sys.modules.pop("modal_app", None)


def info(deployed, name: str):
    """Modal's own summary of a function: for a class, that of its web endpoint method."""
    target = getattr(deployed.module, name)
    return (target().serve if isinstance(target, modal.Cls) else target).info()


@pytest.mark.parametrize("name", ["ASR", "TTS", "LLM"])
def test_model_servers_run_on_a_gpu_with_the_model_volume(deployed, name):
    summary = info(deployed, name)
    assert summary.gpus == [("L40S", 1)]
    assert [(path, v.name) for path, v in summary.volumes.items()] == [("/cache", "nemotron-voice-agent-models")]
    assert summary.timeout >= 30 * MINUTES  # a WebSocket session is one input for a whole call
    assert summary.startup_timeout >= 20 * MINUTES  # the first container downloads the weights
    assert set(summary.method_details) == {"serve"}  # the web endpoint
    assert getattr(deployed.module, name).port in deployed.ports


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
    assert int(command["--ctx-size"]) == deployed.module.LLM_CTX_PER_SLOT * int(command["--parallel"])
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


def test_bot_is_one_cpu_web_endpoint_that_stays_up(deployed):
    summary = info(deployed, "bot")
    assert summary.gpus == [] and summary.web_info is not None
    assert summary.concurrency_info.max_inputs >= 50  # short HTTP requests: page, offer, ICE candidates
    options = deployed.options["bot"]
    # The runner keeps sessions in memory: every request of a call must reach the one container.
    assert options["min_containers"] == options["max_containers"] == 1
    assert deployed.module.BOT_PORT in deployed.ports
    assert sorted(deployed.ports) == sorted({8080, 8001, 8002, 7860})


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
    assert "pipecat-ai[webrtc,silero,websocket,runner,tracing]==1.14.0" in deployed.module.requirements("bot")


def test_model_servers_are_behind_proxy_auth_and_the_bot_holds_the_credentials(deployed, monkeypatch):
    """Nobody who merely learns a model server's URL can spend the GPUs; the Playground stays public."""
    module = deployed.module
    for port in (module.ASR_PORT, module.TTS_PORT, module.LLM_PORT):
        assert deployed.web_servers[port]["requires_proxy_auth"] is True, port
    assert deployed.web_servers[module.BOT_PORT]["requires_proxy_auth"] is False
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
