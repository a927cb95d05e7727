"""The one-shot model fetch of GPU deployments, and servers that refuse to start without their files.

The hub cannot be reached from here: what `plan` asks it is answered from a listing (RepoFile objects
built as huggingface_hub builds them), downloads are local copies; the verification, the LLM link, the
manifests and the start without the network run for real on real files. The servers are started for
real with the hub off and an empty cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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


class HubListing:
    """What `plan` asks the hub, answered from `files`: repo -> filename -> (size, LFS sha256 or None, blob id)."""

    def __init__(self, files: dict[str, dict[str, tuple[int, str | None, str]]]) -> None:
        self.files = files
        self.revisions: dict[str, set[str | None]] = {}
        """repo -> the revisions it was asked about."""

    def install(self, monkeypatch) -> None:
        import huggingface_hub
        from huggingface_hub.hf_api import RepoFile

        def listing(api, repo, revision=None):
            self.revisions.setdefault(repo, set()).add(revision)
            return list(self.files[repo])

        def paths_info(api, repo, names, revision=None):
            self.revisions.setdefault(repo, set()).add(revision)
            return [
                RepoFile(
                    path=n, size=size, oid=blob, lfs={"size": size, "oid": sha, "pointerSize": 130} if sha else None
                )
                for n in names
                if n in self.files[repo]
                for size, sha, blob in [self.files[repo][n]]
            ]

        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", listing)
        monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", paths_info)


def hub_listing() -> HubListing:
    nemo_names = (
        "nemotron-speech-streaming-en-0.6b",
        "magpie_tts_multilingual_357m",
        "nemo-nano-codec-22khz-1.89kbps-21.5fps",
    )
    nemo = {f"nvidia/{n}": {f"{n}.nemo": (10, "a" * 64, "b" * 40)} for n in nemo_names}
    byt5 = {"google/byt5-small": {"config.json": (5, None, "c" * 40), "tokenizer_config.json": (6, None, "d" * 40),
                                  "pytorch_model.bin": (99, "e" * 64, "f" * 40)}}  # fmt: skip
    gguf = {model_fetch.LLM_REPO: {n: (20, "9" * 64, "8" * 40) for n in LISTING}}
    return HubListing(nemo | byt5 | gguf)


def test_plan_lists_every_part_with_the_hubs_digests(monkeypatch):
    """ASR: its .nemo; TTS: Magpie, its codec and the ByT5 tokenizer's JSON files (git blob hashes,
    not LFS); LLM: the one GGUF of the quantization."""
    hub_listing().install(monkeypatch)
    files = model_fetch.plan(model_fetch.parse_args([]), token=None)
    names = {p: [f.filename for f in files if f.part == p] for p in model_fetch.PARTS}
    assert names["asr"] == ["nemotron-speech-streaming-en-0.6b.nemo"]
    assert names["tts"] == [
        "magpie_tts_multilingual_357m.nemo", "nemo-nano-codec-22khz-1.89kbps-21.5fps.nemo",
        "config.json", "tokenizer_config.json",
    ]  # fmt: skip
    assert names["llm"] == ["Nemotron-3-Nano-30B-A3B-IQ4_XS.gguf"]
    assert {(f.filename, f.digest) for f in files if not f.lfs} == {
        ("config.json", "c" * 40),
        ("tokenizer_config.json", "d" * 40),
    }
    assert all(f.digest == "a" * 64 for f in files if f.filename.endswith(".nemo"))


def test_nemo_checkpoints_come_from_pinned_revisions_and_load_by_name(tmp_path, monkeypatch):
    """The hub is asked about each NeMo repository at its pinned commit (the LLM's GGUF repository has
    no public pin: its `main`), and after the fetch a load by name with the hub off (as NeMo and
    transformers load) finds the pinned snapshot."""
    from huggingface_hub import try_to_load_from_cache

    from servers.nemo_loading import PINNED_REVISIONS, TTS_MODEL, require_local

    hub = hub_listing()
    hub.install(monkeypatch)
    files = model_fetch.plan(model_fetch.parse_args([]), token=None)
    for repo, revision in PINNED_REVISIONS.items():
        assert hub.revisions[repo] == {revision}, repo
        assert all(f.revision == revision for f in files if f.repo == repo)
    assert hub.revisions[model_fetch.LLM_REPO] == {None}

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))

    def download(repo: str, filename: str, revision: str | None, token: str | None, local_dir: str | None) -> str:
        """As huggingface_hub lays out its cache: a snapshot per commit."""
        target = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / revision / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"magpie")
        return str(target)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    magpie = hub_file(tmp_path / "magpie.nemo", b"magpie", repo=TTS_MODEL, filename="magpie_tts_multilingual_357m.nemo",
                      part="tts", revision=PINNED_REVISIONS[TTS_MODEL])  # fmt: skip
    model_fetch.fetch([magpie], tmp_path / "models", token=None)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    found = try_to_load_from_cache(TTS_MODEL, magpie.filename)  # by name: `main`
    assert isinstance(found, str) and PINNED_REVISIONS[TTS_MODEL] in found
    require_local(TTS_MODEL)  # the servers' own check passes


def test_split_missing_or_absent_files_are_refused_before_any_download(monkeypatch):
    """llama-server is started with one path (`llm.gguf`): a split GGUF cannot sit behind it; a file
    the hub does not have is an error, never silently skipped."""
    hub = hub_listing()
    hub.install(monkeypatch)
    for quant, why in (("Q8_0", "2 files"), ("Q2_K", "no file")):
        with pytest.raises(FetchError, match=why):
            model_fetch.plan(model_fetch.parse_args(["--parts", "llm", "--llm-quant", quant]), token=None)
    del hub.files["nvidia/nemotron-speech-streaming-en-0.6b"]["nemotron-speech-streaming-en-0.6b.nemo"]
    with pytest.raises(FetchError, match="has no nemotron-speech-streaming-en-0.6b.nemo"):
        model_fetch.plan(model_fetch.parse_args(["--parts", "asr"]), token=None)


def hub_file(path: Path, content: bytes, **overrides) -> HubFile:
    path.write_bytes(content)
    fields = {"part": "asr", "repo": "org/repo", "filename": path.name, "size": len(content),
              "digest": hashlib.sha256(content).hexdigest(), "lfs": True} | overrides  # fmt: skip
    return HubFile(**fields)


def git_blob_id(content: bytes) -> str:
    """What `git hash-object` prints: the id the hub gives a small (non-LFS) file."""
    done = subprocess.run(["git", "hash-object", "--stdin"], input=content, capture_output=True, check=True)
    return done.stdout.decode().strip()


def test_a_file_is_verified_once_and_a_bad_one_refused(tmp_path, monkeypatch):
    stamps = tmp_path / "verified"
    good = hub_file(tmp_path / "a.nemo", b"weights" * 1000)
    verify(tmp_path / "a.nemo", good, stamps)
    assert (stamps / good.digest).exists()
    small = hub_file(tmp_path / "config.json", b'{"a": 1}', digest=git_blob_id(b'{"a": 1}'), lfs=False)
    verify(tmp_path / "config.json", small, stamps)  # git's blob hash, computed as git does

    def no_hashing(path: Path, lfs: bool) -> str:
        raise AssertionError("a verified file is hashed again")

    monkeypatch.setattr(model_fetch, "digest_of", no_hashing)
    verify(tmp_path / "a.nemo", good, stamps)
    monkeypatch.undo()

    truncated = hub_file(tmp_path / "b.nemo", b"weights", size=10)
    with pytest.raises(FetchError, match="7 bytes on disk, the hub says 10"):
        verify(tmp_path / "b.nemo", truncated, stamps)
    corrupt = hub_file(tmp_path / "c.nemo", b"weights", digest="0" * 64)
    with pytest.raises(FetchError, match="sha256"):
        verify(tmp_path / "c.nemo", corrupt, stamps)
    assert not (stamps / ("0" * 64)).exists()


def test_fetch_verifies_links_and_a_later_start_needs_no_network(tmp_path, monkeypatch):
    """`fetch` with the hub download replaced by a local copy: every file verified, one stable LLM
    path, a manifest per part; then `main` with the hub off succeeds on those files, and fails with
    one line once one is missing, the link moved, or another quantization or repo is asked for."""
    source = tmp_path / "hub"
    source.mkdir()
    gguf = hub_file(source / "m-IQ4_XS.gguf", b"weights", repo=model_fetch.LLM_REPO, part="llm")
    files = [hub_file(source / "asr.nemo", b"asr"), gguf]

    def download(repo: str, filename: str, revision: str | None, token: str | None, local_dir: str | None) -> str:
        target = Path(local_dir or tmp_path / "hf-cache") / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((source / filename).read_bytes())
        return str(target)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    models = tmp_path / "models"
    link = model_fetch.fetch(files, models, token=None)
    assert link == models / "gguf" / "llm.gguf"
    assert link.read_bytes() == b"weights" and not os.path.isabs(os.readlink(link))
    assert sorted(p.name for p in (models / "verified").iterdir()) == sorted(f.digest for f in files)
    assert [f["filename"] for f in json.loads((models / "manifest-llm.json").read_text())] == ["m-IQ4_XS.gguf"]

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model_fetch.main(["--dest", str(models), "--parts", "llm"])  # offline, all there: no error
    for other in (["--llm-quant", "Q4_K_M"], ["--llm-repo", "someone/else"], ["--parts", "asr,llm"]):
        with pytest.raises(SystemExit, match="model_fetch: OfflineModeIsEnabled"):
            model_fetch.main(["--dest", str(models), "--parts", "llm", *other])
    link_llm(models / "gguf", "another.gguf")  # an interrupted switch: the link is off the verified file
    with pytest.raises(SystemExit, match="model_fetch: "):
        model_fetch.main(["--dest", str(models), "--parts", "llm"])
    link_llm(models / "gguf", gguf.filename)
    (models / "gguf" / gguf.filename).unlink()
    with pytest.raises(SystemExit, match="model_fetch: "):
        model_fetch.main(["--dest", str(models), "--parts", "llm"])


def test_only_an_unreachable_hub_falls_back_to_the_files_on_disk():
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    def http_error(cls, status: int) -> Exception:
        return cls("x", response=SimpleNamespace(status_code=status, headers={}, request=None))

    assert model_fetch.hub_unreachable(OfflineModeIsEnabled("off"))
    assert model_fetch.hub_unreachable(ConnectionError("refused"))
    assert model_fetch.hub_unreachable(http_error(HfHubHTTPError, 503))
    assert not model_fetch.hub_unreachable(http_error(RepositoryNotFoundError, 404))  # a typo stays an error
    assert not model_fetch.hub_unreachable(FetchError("no file"))


@pytest.mark.servers
@pytest.mark.parametrize(
    ("module", "engine", "missing"),
    [
        ("servers.asr", "nemotron", "nemotron-speech-streaming-en-0.6b"),
        ("servers.tts", "magpie", "nemo-nano-codec"),
    ],  # fmt: skip
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


def test_weights_fetched_before_a_pin_do_not_count_as_present(tmp_path, monkeypatch):
    """With the hub unreachable a start falls back on the last verified fetch, but only if it fetched the
    pinned revision: an older, unpinned fetch is not what the servers expect."""
    from servers.nemo_loading import ASR_MODEL, PINNED_REVISIONS

    weights = hub_file(tmp_path / "asr.nemo", b"asr", repo=ASR_MODEL, filename="nemotron-speech-streaming-en-0.6b.nemo")
    (tmp_path / "verified").mkdir()
    (tmp_path / "verified" / weights.digest).touch()
    monkeypatch.setattr(model_fetch, "local_path", lambda file, dest: tmp_path / "asr.nemo")
    args = model_fetch.parse_args(["--parts", "asr"])
    for revision, present in ((None, False), ("0" * 40, False), (PINNED_REVISIONS[ASR_MODEL], True)):
        pinned = dataclasses.replace(weights, revision=revision)
        model_fetch.manifest(tmp_path, "asr").write_text(json.dumps([dataclasses.asdict(pinned)]))
        assert model_fetch.all_present(args, tmp_path) is present, revision
