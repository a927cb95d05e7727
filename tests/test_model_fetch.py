"""The one-shot model fetch of GPU deployments, and servers that refuse to start without their files.

The hub cannot be reached from here: the choice of files, the verification and the LLM link are
tested on real files; the servers are started for real with the hub off and an empty cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from servers import model_fetch
from servers.model_fetch import FetchError, HubFile, gguf_files, link_llm, verify

LISTING = [
    "README.md",
    "Nemotron-3-Nano-30B-A3B-IQ4_XS.gguf",
    "Nemotron-3-Nano-30B-A3B-Q4_K_M.gguf",
    "Nemotron-3-Nano-30B-A3B-UD-Q4_K_XL.gguf",
    "Q8_0/Nemotron-3-Nano-30B-A3B-Q8_0-00002-of-00002.gguf",
    "Q8_0/Nemotron-3-Nano-30B-A3B-Q8_0-00001-of-00002.gguf",
    "mmproj-Nemotron-Q4_K_M.gguf",
]


def test_one_quantization_is_chosen_like_llama_server_does():
    assert gguf_files(LISTING, "Q4_K_M") == ["Nemotron-3-Nano-30B-A3B-Q4_K_M.gguf"]
    assert gguf_files(LISTING, "iq4_xs") == ["Nemotron-3-Nano-30B-A3B-IQ4_XS.gguf"]
    assert gguf_files(LISTING, "Q8_0") == [
        "Q8_0/Nemotron-3-Nano-30B-A3B-Q8_0-00001-of-00002.gguf",
        "Q8_0/Nemotron-3-Nano-30B-A3B-Q8_0-00002-of-00002.gguf",
    ]
    assert gguf_files(LISTING, "Q2_K") == []


def test_split_or_missing_quantizations_are_refused_before_any_download(monkeypatch):
    """llama-server is started with one path (`llm.gguf`): a split GGUF cannot sit behind it."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo: LISTING)
    for quant, why in (("Q8_0", "2 files"), ("Q2_K", "no file")):
        with pytest.raises(FetchError, match=why):
            model_fetch.plan(model_fetch.parse_args(["--parts", "llm", "--llm-quant", quant]), token=None)


def hub_file(path: Path, content: bytes, **overrides) -> HubFile:
    path.write_bytes(content)
    fields = {"repo": "org/repo", "filename": path.name, "size": len(content),
              "sha256": hashlib.sha256(content).hexdigest()} | overrides  # fmt: skip
    return HubFile(**fields)


def test_a_file_is_verified_once_and_a_bad_one_refused(tmp_path, monkeypatch):
    stamps = tmp_path / "verified"
    good = hub_file(tmp_path / "a.nemo", b"weights" * 1000)
    verify(tmp_path / "a.nemo", good, stamps)
    assert (stamps / good.sha256).exists()

    def no_hashing(path: Path) -> str:
        raise AssertionError("a verified file is hashed again")

    monkeypatch.setattr(model_fetch, "sha256_of", no_hashing)
    verify(tmp_path / "a.nemo", good, stamps)
    monkeypatch.undo()

    truncated = hub_file(tmp_path / "b.nemo", b"weights", size=10)
    with pytest.raises(FetchError, match="7 bytes on disk, the hub says 10"):
        verify(tmp_path / "b.nemo", truncated, stamps)
    corrupt = hub_file(tmp_path / "c.nemo", b"weights", sha256="0" * 64)
    with pytest.raises(FetchError, match="sha256"):
        verify(tmp_path / "c.nemo", corrupt, stamps)
    assert not (stamps / ("0" * 64)).exists()


def test_fetch_verifies_links_and_a_later_start_needs_no_network(tmp_path, monkeypatch):
    """`fetch` with the hub download replaced by a local copy: every file verified, one stable LLM
    path, a manifest; then `main` with the hub off succeeds on those files, and fails with one line
    once one is missing or another quantization is asked for."""
    source = tmp_path / "hub"
    source.mkdir()
    gguf = hub_file(source / "m-IQ4_XS.gguf", b"weights", repo=model_fetch.LLM_REPO, gguf=True)
    files = [hub_file(source / "asr.nemo", b"asr"), gguf]

    def download(repo: str, filename: str, token: str | None, local_dir: str | None) -> str:
        target = Path(local_dir or tmp_path / "hf-cache") / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / filename).read_bytes())
        return str(target)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    models = tmp_path / "models"
    link = model_fetch.fetch(files, models, token=None)
    assert link == models / "gguf" / "llm.gguf"
    assert link.read_bytes() == b"weights" and not os.path.isabs(os.readlink(link))
    assert sorted(p.name for p in (models / "verified").iterdir()) == sorted(f.sha256 for f in files)

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model_fetch.main(["--dest", str(models), "--parts", "llm"])  # offline, all there: no error
    with pytest.raises(SystemExit, match="model_fetch: "):
        model_fetch.main(["--dest", str(models), "--parts", "llm", "--llm-quant", "Q4_K_M"])
    (models / "gguf" / gguf.filename).unlink()
    with pytest.raises(SystemExit, match="model_fetch: "):
        model_fetch.main(["--dest", str(models), "--parts", "llm"])


@pytest.mark.parametrize(
    ("module", "engine", "missing"),
    [("servers.asr", "nemotron", "nemotron-speech-streaming-en-0.6b"),
     ("servers.tts", "magpie", "nemo-nano-codec")],  # fmt: skip
)
def test_a_server_without_its_checkpoint_stops_with_one_line(tmp_path, module, engine, missing):
    """Hub off, empty cache: the server exits at once with a line naming the fetch command."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-m", module, "--engine", engine, "--port", "0"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert missing in last and "servers.model_fetch" in last
    assert "Traceback" not in done.stderr
