"""The local stack launcher keeps the agent up: a model server that dies comes back, and the call goes on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.webrtc_client import WebRTCVoiceClient
from servers.launch import MODEL_SERVERS, GaveUp, RestartPolicy, Supervised, service_pids
from servers.processes import ServerProcess, free_port, is_healthy
from tests.test_bot import ask, heard

pytestmark = [pytest.mark.servers, pytest.mark.timeout(600)]


def model_server_pid(launcher: ServerProcess, service: str) -> int:
    """The process doing the service's work: our server, or the llama-server under servers.llm."""
    return service_pids(launcher.process.pid)[service][-1]


def test_a_service_that_keeps_crashing_stops_the_stack(tmp_path: Path):
    log = tmp_path / "boom.log"
    crashing = ServerProcess([sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"],
                             "http://127.0.0.1:9/health", log)  # fmt: skip
    member = Supervised(MODEL_SERVERS[0], crashing)
    crashing.start()
    policy = RestartPolicy(max_crashes=2, first_delay_s=0.0)
    with pytest.raises(GaveUp) as gave_up:
        while True:
            member.check(policy, time.monotonic())
            time.sleep(0.02)
    assert "exited (code 3) 3 times" in str(gave_up.value) and "no model here" in str(gave_up.value)
    assert log.read_text().count("no model here") == 3  # started once, restarted twice


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """`python -m servers.launch` as a user runs it (CI-sized LLM), on free ports."""
    ports = {f"{s.port_env}": str(free_port()) for s in MODEL_SERVERS}
    bot_port = free_port()
    env = {**ports, "BOT_PORT": str(bot_port), "LLM_MODEL": "smollm2-135m", "BOT_TEMPERATURE": "0"}
    env.update({k: "" for k in ("BOT_ASR_URL", "BOT_TTS_URL", "BOT_LLM_URL") if k in os.environ})
    logs = tmp_path_factory.mktemp("stack")
    launcher = ServerProcess([sys.executable, "-m", "servers.launch", "--logs", str(logs)],
                             f"http://127.0.0.1:{bot_port}/status", logs / "launch.out", env)  # fmt: skip
    launcher.run(timeout=600)
    yield launcher, {s.name: f"http://127.0.0.1:{env[s.port_env]}/health" for s in MODEL_SERVERS}
    launcher.stop()


async def wait_until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.2)


def sessions(health_url: str) -> int:
    """How many sessions the server says it has; -1 while it is down."""
    try:
        with urllib.request.urlopen(health_url, timeout=1) as response:
            return json.loads(response.read())["sessions"]
    except OSError:
        return -1


async def test_killed_model_servers_come_back_and_the_call_goes_on(stack, whisper, say_wav):
    launcher, health = stack
    bot_url = launcher.health_url.removesuffix("/status")
    question = say_wav("What is the capital of France?")
    client = WebRTCVoiceClient(bot_url, {"idle_secs": 0})  # restarts are long silences, not an idle user
    await client.connect()
    try:
        for victim in (None, "asr", "tts", "llm"):
            if victim is not None:
                os.kill(model_server_pid(launcher, victim), signal.SIGKILL)
                await wait_until(lambda victim=victim: not is_healthy(health[victim]), f"{victim} to die")
                await wait_until(lambda victim=victim: is_healthy(health[victim]), f"the launcher to restart {victim}")
            # The bot's STT and TTS clients are connected again before the user speaks.
            for name in ("asr", "tts"):
                await wait_until(lambda name=name: sessions(health[name]) == 1, f"the bot to reconnect to {name}")
            speech_end, reply = await ask(client, question)
            assert reply is not None, f"no spoken answer after {victim} was killed"
            said = await heard(whisper, client.audio.between(reply[0] - 0.1, reply[1] + 0.1))
            latency = await client.wait_for_message("turn_latency", speech_end, timeout=10)
            assert latency is not None and "capital" in latency["user_text"].lower(), (victim, latency)
            assert len(said.split()) >= 2, (victim, said)
    finally:
        await client.close()
    out = Path(launcher.log).read_text()
    for name in ("asr", "tts", "llm"):
        assert f"{name}: exited (" in out and f"{name}: ready again" in out, out
