"""Download and verify every weight a GPU deployment needs, before any server starts.

    python -m servers.model_fetch --dest /models        (compose: the one-shot `models` service)

The NeMo checkpoints (and the ByT5 tokenizer files Magpie's text front end loads by name) go to the
Hugging Face cache (HF_HOME), where NeMo finds them with the hub off; the LLM's GGUF goes to
`<dest>/gguf/` and is linked as `<dest>/gguf/llm.gguf`, the one path llama-server is started with
(single-file quantizations only). The NeMo checkpoints come from pinned hub revisions
(`nemo_loading.PINNED_REVISIONS`), and the cache's `main` is pointed at them, so the servers, which
load by name, load exactly those. Every file is checked against the digest the hub publishes for it
(sha256 for git-LFS files, the git blob hash for small ones) and a checked file is remembered
(`<dest>/verified/<digest>`), so a second run costs a few HTTP requests. What a part fetched is
written down (`<dest>/manifest-<part>.json`): with the hub unreachable, a run whose files are all
there still succeeds, so a machine that has its weights starts without the network. The servers then
start from local files only (HF_HUB_OFFLINE=1); a missing file stops them with one line naming this
command.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from servers.cli import add_flag, setup_logging
from servers.gpu_budget import COMPOSE_QUANT
from servers.nemo_loading import (
    ASR_MODEL,
    PINNED_REVISIONS,
    TTS_CODEC_MODEL,
    TTS_MODEL,
    TTS_TEXT_TOKENIZER,
    nemo_filename,
)

LLM_REPO = "unsloth/Nemotron-3-Nano-30B-A3B-GGUF"
LLM_LINK = "llm.gguf"
PARTS = ("asr", "tts", "llm")
HASH_CHUNK = 16 << 20
REFERENCE_LINK_MBIT_S = 100


@dataclass(frozen=True)
class HubFile:
    """One file to fetch: where it is on the hub and the digest it must have."""

    part: str
    repo: str
    filename: str
    size: int
    digest: str
    lfs: bool
    """True: `digest` is the file's sha256 (git LFS); False: its git blob sha1 (small files)."""
    revision: str | None = None
    """The hub commit (PINNED_REVISIONS); None: the repository's `main` (the LLM's GGUF, another model)."""

    @property
    def gguf(self) -> bool:
        return self.part == "llm"


class FetchError(RuntimeError):
    """A file that cannot be found, downloaded or verified."""


def gguf_files(filenames: list[str], quant: str) -> list[str]:
    """The GGUF file(s) of one quantization in a repo listing, split parts in order, as llama-server's
    `--hf-repo repo:QUANT` picks them (case-insensitive tag; projector files excluded)."""
    tag = quant.lower()
    chosen = [
        name for name in filenames
        if name.lower().endswith(".gguf") and "mmproj" not in name.lower()
        and (fnmatch.fnmatch(name.lower(), f"*-{tag}.gguf") or fnmatch.fnmatch(name.lower(), f"*-{tag}-*-of-*.gguf"))
    ]  # fmt: skip
    return sorted(chosen)


def part_repos(args: argparse.Namespace) -> dict[str, list[str]]:
    """The hub repositories each part fetches from."""
    return {
        "asr": [args.asr_model],
        "tts": [args.tts_model, TTS_CODEC_MODEL, TTS_TEXT_TOKENIZER],
        "llm": [args.llm_repo],
    }


def plan(args: argparse.Namespace, token: str | None) -> list[HubFile]:
    """Every file of `args.parts` to fetch, with the size and digest the hub publishes (a few requests)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    wanted: list[tuple[str, str, str | None, list[str]]] = []
    for part in args.parts:
        for repo in part_repos(args)[part]:
            revision = PINNED_REVISIONS.get(repo)
            if repo == TTS_TEXT_TOKENIZER:
                names = [name for name in api.list_repo_files(repo, revision=revision) if name.endswith(".json")]
            elif part == "llm":
                names = gguf_files(api.list_repo_files(repo, revision=revision), args.llm_quant)
                if len(names) != 1:
                    found = f"{len(names)} files (split GGUFs are not supported)" if names else "no file"
                    raise FetchError(f"{repo}: quantization {args.llm_quant!r} has {found}; choose a single-file one")
            else:
                names = [nemo_filename(repo)]
            wanted.append((part, repo, revision, names))
    files = []
    for part, repo, revision, names in wanted:
        infos = {info.path: info for info in api.get_paths_info(repo, names, revision=revision)}
        if missing := sorted(set(names) - set(infos)):
            raise FetchError(f"{repo} has no {', '.join(missing)}")
        for name in names:
            info = infos[name]
            lfs = info.lfs is not None
            digest = info.lfs.sha256 if lfs else info.blob_id
            files.append(HubFile(part, repo, name, info.size, digest, lfs, revision))
    return files


def digest_of(path: Path, lfs: bool) -> str:
    r"""sha256 of the content (LFS files), or git's blob hash: sha1 of "blob <size>\0" + content."""
    digest = hashlib.sha256() if lfs else hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: HubFile, verified_dir: Path) -> None:
    """Check size and digest once; remember a match in `verified_dir`."""
    stamp = verified_dir / expected.digest
    size = path.stat().st_size
    if stamp.exists() and size == expected.size:
        return
    if size != expected.size:
        raise FetchError(f"{expected.repo}/{expected.filename}: {size} bytes on disk, the hub says {expected.size}")
    started = time.monotonic()
    actual = digest_of(path, expected.lfs)
    if actual != expected.digest:
        kind = "sha256" if expected.lfs else "git blob hash"
        raise FetchError(f"{expected.repo}/{expected.filename}: {kind} {actual}, the hub says {expected.digest}")
    verified_dir.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    logger.info(f"verified {expected.filename} ({time.monotonic() - started:.0f} s)")


def link_llm(gguf_dir: Path, filename: str) -> Path:
    """`llm.gguf` → the chosen file (relative: the link works wherever the volume is mounted)."""
    link = gguf_dir / LLM_LINK
    tmp = gguf_dir / (LLM_LINK + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(filename)
    tmp.replace(link)
    return link


def point_main_at(repo: str, revision: str) -> None:
    """Make the cache's `main` of `repo` the pinned commit: NeMo, and transformers for the tokenizer,
    load by name, which resolves `main` in the cache when the hub is off (refs/main holds a commit)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model") / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(revision)


def download_minutes(total_bytes: int, mbit_s: float = REFERENCE_LINK_MBIT_S) -> float:
    return total_bytes * 8 / (mbit_s * 1e6) / 60


def manifest(dest: Path, part: str) -> Path:
    return dest / f"manifest-{part}.json"


def fetch(files: list[HubFile], dest: Path, token: str | None) -> Path | None:
    """Download what is missing (resumable), verify everything, link the LLM, write each part's
    manifest; returns the LLM's link if the LLM was fetched."""
    from huggingface_hub import hf_hub_download

    total = sum(f.size for f in files)
    logger.info(
        f"{len(files)} files, {total / 1e9:.1f} GB "
        f"(≈ {download_minutes(total):.0f} min at {REFERENCE_LINK_MBIT_S} Mbit/s the first time)"
    )
    gguf_dir, verified_dir = dest / "gguf", dest / "verified"
    for number, file in enumerate(files, 1):
        logger.info(f"[{number}/{len(files)}] {file.repo}/{file.filename} ({file.size / 1e9:.2f} GB)")
        local_dir = str(gguf_dir) if file.gguf else None
        path = Path(hf_hub_download(file.repo, file.filename, revision=file.revision, token=token, local_dir=local_dir))
        verify(path, file, verified_dir)
        if file.revision and not file.gguf:
            point_main_at(file.repo, file.revision)
    llm = [f.filename for f in files if f.gguf]
    link = link_llm(gguf_dir, llm[0]) if llm else None
    for part in {f.part for f in files}:
        manifest(dest, part).write_text(json.dumps([dataclasses.asdict(f) for f in files if f.part == part], indent=1))
    logger.info(f"all {len(files)} files present and verified" + (f"; the LLM is {link}" if link else ""))
    return link


def local_path(file: HubFile, dest: Path) -> Path | None:
    if file.gguf:
        return dest / "gguf" / file.filename
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(file.repo, file.filename, revision=file.revision)
    return Path(cached) if isinstance(cached, str) else None


def all_present(args: argparse.Namespace, dest: Path) -> bool:
    """Are the files this run asks for those of each part's last verified fetch, all on disk (and the
    LLM's link on its file)?"""
    for part in args.parts:
        try:
            files = [HubFile(**f) for f in json.loads(manifest(dest, part).read_text())]
        except (OSError, ValueError, TypeError):
            return False
        if {f.repo for f in files} != set(part_repos(args)[part]):
            return False
        if any(f.revision != PINNED_REVISIONS.get(f.repo) for f in files):
            return False  # fetched before a pin changed: those are not the weights the servers expect
        for file in files:
            path = local_path(file, dest)
            if path is None or not path.exists() or not (dest / "verified" / file.digest).exists():
                return False
        if part == "llm":
            link = dest / "gguf" / LLM_LINK
            if not gguf_files([files[0].filename], args.llm_quant) or not link.is_symlink():
                return False
            if os.readlink(link) != files[0].filename:
                return False
    return True


def hub_unreachable(error: Exception) -> bool:
    """No answer from the hub (offline mode, a network error, a 5xx or 429), unlike a wrong name."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled | ConnectionError | TimeoutError):
        return True
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else 0
        return status >= 500 or status == 429
    return any(cls.__name__ == "TransportError" for cls in type(error).__mro__)  # httpx's network errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(parser, "--dest", "MODELS_DIR", "/models", "where the GGUF, manifests and verification stamps go")
    add_flag(parser, "--asr-model", "ASR_NEMOTRON_MODEL", ASR_MODEL, "Nemotron Speech checkpoint (hub name)")
    add_flag(parser, "--tts-model", "TTS_MAGPIE_MODEL", TTS_MODEL, "Magpie TTS checkpoint (hub name)")
    add_flag(parser, "--llm-repo", "LLM_GGUF_REPO", LLM_REPO, "hub repository of the LLM's GGUF files")
    add_flag(parser, "--llm-quant", "LLM_GGUF_QUANT", COMPOSE_QUANT, "quantization tag of the GGUF to fetch")
    add_flag(parser, "--log-level", "MODELS_LOG_LEVEL", "INFO", "loguru level")
    add_flag(parser, "--parts", "MODELS_PARTS", ",".join(PARTS), "comma-separated: which servers' weights")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {PARTS}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.log_level)
    token = os.environ.get("HF_TOKEN") or None
    try:
        try:
            files = plan(args, token)
        except Exception as e:
            if not (hub_unreachable(e) and all_present(args, Path(args.dest))):
                raise
            logger.warning(f"cannot reach the hub ({e}); every file of the last verified fetch is here")
            return
        fetch(files, Path(args.dest), token)
    except Exception as e:
        logger.opt(exception=e).debug("fetch failure")
        raise SystemExit(f"model_fetch: {type(e).__name__}: {e}") from None


if __name__ == "__main__":
    main()
