"""Download and verify every weight a GPU deployment needs, before any server starts.

    python -m servers.model_fetch --dest /models        (compose: the one-shot `models` service)

The NeMo checkpoints go to the Hugging Face cache (HF_HOME), where NeMo's `from_pretrained` finds
them with the hub off; the LLM's GGUF goes to `<dest>/gguf/` and is linked as `<dest>/gguf/llm.gguf`,
the one path llama-server is started with (single-file quantizations). Every file is checked against the sha256 the hub publishes
for it (git LFS) and a checked file is remembered (`<dest>/verified/<sha256>`), so a second run costs
a few HTTP requests. The servers then start from local files only (HF_HUB_OFFLINE=1) and a missing
file stops them with one line that names this command.
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
from servers.nemo_loading import ASR_MODEL, TTS_CODEC_MODEL, TTS_MODEL, nemo_filename

LLM_REPO = "unsloth/Nemotron-3-Nano-30B-A3B-GGUF"
LLM_LINK = "llm.gguf"
MANIFEST = "manifest.json"
"""The last verified fetch (its files' repos, names, sizes and sha256), for starts without the network."""
HASH_CHUNK = 16 << 20
REFERENCE_LINK_MBIT_S = 100


@dataclass(frozen=True)
class HubFile:
    repo: str
    filename: str
    size: int
    sha256: str
    gguf: bool = False


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


PARTS = ("asr", "tts", "llm")


def plan(args: argparse.Namespace, token: str | None) -> list[HubFile]:
    """Every file of `args.parts` to fetch, with the size and sha256 the hub publishes (a few requests)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    nemo = {"asr": (args.asr_model,), "tts": (args.tts_model, TTS_CODEC_MODEL), "llm": ()}
    wanted = [(name, [nemo_filename(name)], False) for part in args.parts for name in nemo[part]]
    if "llm" in args.parts:
        llm_names = gguf_files(api.list_repo_files(args.llm_repo), args.llm_quant)
        if len(llm_names) != 1:
            found = f"{len(llm_names)} files (split GGUFs are not supported)" if llm_names else "no file"
            raise FetchError(f"{args.llm_repo}: quantization {args.llm_quant!r} has {found}; choose a single-file one")
        wanted.append((args.llm_repo, llm_names, True))
    files = []
    for repo, names, gguf in wanted:
        for info in api.get_paths_info(repo, names):
            if info.lfs is None:
                raise FetchError(f"{repo}/{info.path} has no published sha256 (not a git LFS file)")
            files.append(HubFile(repo, info.path, info.size, info.lfs.sha256, gguf))
    return files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: HubFile, verified_dir: Path) -> None:
    """Check size and sha256 once; remember a match in `verified_dir`."""
    stamp = verified_dir / expected.sha256
    if stamp.exists() and path.stat().st_size == expected.size:
        return
    size = path.stat().st_size
    if size != expected.size:
        raise FetchError(f"{expected.repo}/{expected.filename}: {size} bytes on disk, the hub says {expected.size}")
    started = time.monotonic()
    actual = sha256_of(path)
    if actual != expected.sha256:
        raise FetchError(f"{expected.repo}/{expected.filename}: sha256 {actual}, the hub says {expected.sha256}")
    verified_dir.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    logger.info(f"verified {expected.filename} (sha256, {time.monotonic() - started:.0f} s)")


def link_llm(gguf_dir: Path, filename: str) -> Path:
    """`llm.gguf` → the chosen file (relative: the link works wherever the volume is mounted)."""
    link = gguf_dir / LLM_LINK
    tmp = gguf_dir / (LLM_LINK + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(filename)
    tmp.replace(link)
    return link


def download_minutes(total_bytes: int, mbit_s: float = REFERENCE_LINK_MBIT_S) -> float:
    return total_bytes * 8 / (mbit_s * 1e6) / 60


def fetch(files: list[HubFile], dest: Path, token: str | None) -> Path | None:
    """Download what is missing (resumable), verify everything, link the LLM; returns the link if any."""
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
        path = Path(hf_hub_download(file.repo, file.filename, token=token, local_dir=local_dir))
        verify(path, file, verified_dir)
    llm = [f.filename for f in files if f.gguf]
    link = link_llm(gguf_dir, llm[0]) if llm else None
    (dest / MANIFEST).write_text(json.dumps([dataclasses.asdict(f) for f in files], indent=1))
    logger.info(f"all {len(files)} files present and verified" + (f"; the LLM is {link}" if link else ""))
    return link


def offline_check(args: argparse.Namespace, dest: Path) -> bool:
    """With the hub unreachable: are this request's files those of the last verified fetch, all there?
    A machine that has its weights must start without the network."""
    try:
        files = [HubFile(**f) for f in json.loads((dest / MANIFEST).read_text())]
    except (OSError, ValueError, TypeError):
        return False
    from huggingface_hub import try_to_load_from_cache

    by_part = {"asr": [args.asr_model], "tts": [args.tts_model, TTS_CODEC_MODEL], "llm": [args.llm_repo]}
    wanted = {repo for part in args.parts for repo in by_part[part]}
    files = [f for f in files if f.repo in wanted]
    if {f.repo for f in files} != wanted:
        return False
    if "llm" in args.parts and not any(f.gguf and gguf_files([f.filename], args.llm_quant) for f in files):
        return False
    for f in files:
        path = dest / "gguf" / f.filename if f.gguf else try_to_load_from_cache(f.repo, f.filename)
        if not isinstance(path, (str, Path)) or not (dest / "verified" / f.sha256).exists() or not Path(path).exists():
            return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(parser, "--dest", "MODELS_DIR", "/models", "where the GGUF and the verification stamps go")
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
        except Exception as e:  # the hub unreachable (or offline mode): fine if nothing is missing
            if not offline_check(args, Path(args.dest)):
                raise
            logger.warning(f"cannot ask the hub ({e}); the files of the last verified fetch are all here")
            return
        fetch(files, Path(args.dest), token)
    except Exception as e:
        logger.opt(exception=e).debug("fetch failure")
        raise SystemExit(f"model_fetch: {type(e).__name__}: {e}") from None


if __name__ == "__main__":
    main()
