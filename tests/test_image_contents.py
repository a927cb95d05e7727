"""What each image holds, imported there: a module an image leaves out fails here, not in a deploy.

For every Python image of docker/ (compose's builds) and of modal_app.py, the image's files are
assembled in a temporary directory from what it really takes: Dockerfile COPY lines filtered by
.dockerignore and the project as pip installs it from them, or Modal's local Python sources. Each
entry point is then imported with `python -I -S` (the repository's editable install is not on the
path) beside a site-packages holding only the distributions of that image's extras.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.servers  # pip builds of the project and imports of every image: ~50 s

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# What each image runs (its services' commands in compose.yaml, the functions of modal_app.py).
# An engine module stands for `--engine X`: the server imports it when it starts.
DOCKER_ENTRY_POINTS = {
    "nemotron-voice-agent/bot": ["bot", "servers.auth"],
    "nemotron-voice-agent/cpu-models": [
        "servers.asr.server", "servers.asr.engines.whisper", "servers.tts.server", "servers.tts.engines.piper",
    ],
    "nemotron-voice-agent/fetch": ["servers.model_fetch", "servers.gpu_driver"],
    "nemotron-voice-agent/llm-cpu": ["servers.llm.models"],  # its `model` stage; llama-server runs after it
    "nemotron-voice-agent/nemo": [
        "servers.asr.server", "servers.asr.engines.nemotron", "servers.tts.server", "servers.tts.engines.magpie",
    ],
}  # fmt: skip
PYTHON_STAGE = {"nemotron-voice-agent/llm-cpu": "model"}
"""Images whose last stage has no Python: the stage that runs ours."""
NO_PYTHON = {"nemotron-voice-agent/llama-server-cuda"}
MODAL_ENTRY_POINTS = {
    "nemo_image": ["modal_app", "servers.asr.engines.nemotron", "servers.tts.engines.magpie", "servers.model_fetch"],
    "llm_image": ["modal_app", "servers.model_fetch"],
    "bot_image": ["modal_app", "bot", "call_signalling", "phone_calls"],
}


@dataclass
class ImageFiles:
    """An image's Python view: the working directory, the project as installed, and the extras."""

    workdir: Path
    site: Path | None = None
    extras: set[str] = field(default_factory=set)
    modal: bool = False


# --- the build context and Dockerfiles, as Docker reads them ------------------------------------------


def ignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it: against a path or any of its parents."""
    regex = ""
    for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(f"{regex}(?:/.*)?")


def context_files() -> set[str]:
    """The repository's files that .dockerignore lets into a build context (last matching rule wins)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [(r.startswith("!"), ignore_pattern(r.lstrip("!"))) for r in rules if r and not r.startswith("#")]
    kept = set()
    for path in listed:
        included = True
        for negated, pattern in rules:
            if pattern.fullmatch(path):
                included = negated
        if included and (ROOT / path).is_file():
            kept.add(path)
    return kept


@dataclass
class Stage:
    """One stage of a Dockerfile: its working directory, copies and project installs."""

    workdir: str = "/"
    copies: list[tuple[list[str], str, str | None]] = field(default_factory=list)
    """(sources, absolute destination, --from stage) in order."""
    installs: list[tuple[str, str]] = field(default_factory=list)
    """(directory, extras) of each `pip install ".[extras]"` of the project."""


def dockerfile_stages(dockerfile: Path, args: dict[str, str]) -> dict[str, Stage]:
    """The stages of a Dockerfile in order, by name (or index), with their copies and project installs."""
    values = dict(args)
    stages: dict[str, Stage] = {}
    stage = Stage()
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        instruction = words[0].upper()
        if instruction == "ARG" and "=" in words[1]:
            name, default = words[1].split("=", 1)
            values.setdefault(name, default)
        elif instruction == "FROM":
            stage = stages[words[3] if len(words) > 3 else str(len(stages))] = Stage()
        elif instruction == "WORKDIR":
            stage.workdir = os.path.join(stage.workdir, words[1])
        elif instruction == "COPY":
            source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words[1:] if not w.startswith("--")]
            stage.copies.append((paths[:-1], os.path.join(stage.workdir, paths[-1]), source_stage))
        elif instruction == "RUN":
            for extras in re.findall(r'pip install "\.\[([^\]]+)\]"', line):
                stage.installs.append((stage.workdir, re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], extras)))
    return stages


def build_project(source: Path, site: Path) -> None:
    """The project as `pip install .` puts it in an image's site-packages (a real wheel build)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def assemble_stage(stages: dict[str, Stage], name: str, files: set[str], tmp: Path) -> ImageFiles:
    """Lay out a stage's filesystem under tmp/<name>: its COPY'd context files, its project installs, and
    the project installed in a virtual environment it copies from another stage."""
    root = tmp / name
    stage = stages[name]
    image = ImageFiles(workdir=root / stage.workdir.lstrip("/"))
    for sources, destination, source_stage in stage.copies:
        if source_stage is not None:
            inherited = assemble_stage(stages, source_stage, files, tmp)
            if inherited.site is not None and destination.rstrip("/") == "/opt/venv":
                image.site, image.extras = inherited.site, inherited.extras
            continue
        for source in sources:
            matched = [f for f in files if f == source or f.startswith(source.rstrip("/") + "/")]
            assert matched, f"COPY {source}: not in the build context (.dockerignore)"
            to_file = matched == [source] and len(sources) == 1 and not destination.endswith("/")
            for path in matched:
                relative = "" if to_file else path[len(source) :].lstrip("/") or Path(path).name
                target = root / destination.lstrip("/") / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / path, target)
    for directory, extras in stage.installs:
        image.site = root / "site-packages"
        build_project(root / directory.lstrip("/"), image.site)
        image.extras |= set(extras.split(","))
    image.workdir.mkdir(parents=True, exist_ok=True)
    return image


def compose_builds() -> dict[str, tuple[Path, dict[str, str]]]:
    """Each image compose builds: its Dockerfile and build arguments."""
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    return {
        service["image"]: (
            DOCKER / service["build"]["context"] / service["build"]["dockerfile"],
            service["build"].get("args", {}),
        )
        for service in services.values()
        if "build" in service
    }


def docker_image(image: str, tmp: Path) -> ImageFiles:
    dockerfile, args = compose_builds()[image]
    stages = dockerfile_stages(dockerfile.resolve(), args)
    stage = PYTHON_STAGE.get(image, list(stages)[-1])
    return assemble_stage(stages, stage, context_files(), tmp)


def modal_image(name: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> ImageFiles:
    """A Modal image's Python view: its local sources and modal_app.py in /root, as Modal lays them out."""
    monkeypatch.setenv("MODAL_PROXY_KEY", "test")  # modal_app stops a deploy without them
    monkeypatch.setenv("MODAL_PROXY_SECRET", "test")
    import modal_app

    sources = {"nemo_image": modal_app.SERVER_SOURCES, "llm_image": modal_app.SERVER_SOURCES}
    extras = {"nemo_image": modal_app.NEMO_EXTRAS, "llm_image": modal_app.LLM_EXTRAS, "bot_image": modal_app.BOT_EXTRAS}
    root = tmp / "root"
    root.mkdir(parents=True)
    shutil.copy2(ROOT / "modal_app.py", root)
    for source in sources.get(name, modal_app.BOT_SOURCES):
        package = ROOT / source
        if package.is_dir():
            shutil.copytree(package, root / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / f"{source}.py", root)
    return ImageFiles(workdir=root, extras=set(extras[name]), modal=True)


# --- the image's third-party packages: only its extras' distributions ---------------------------------


def distributions_of(extras: set[str], modal: bool) -> set[str]:
    """The installed distributions an image with these extras has: the project's dependencies, its
    extras' requirements, and everything they require in turn (markers evaluated)."""
    optional = PROJECT["optional-dependencies"]
    own = canonicalize_name(PROJECT["name"])
    pending = [Requirement(r) for r in PROJECT["dependencies"]] + [Requirement("modal")] * modal
    pending += [Requirement(r) for extra in extras for r in optional[extra]]
    wanted: dict[str, set[str]] = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name == own:
            pending += [Requirement(r) for extra in requirement.extras for r in optional[extra]]
            continue
        asked = set(requirement.extras) | {""}
        if name in wanted and asked <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(asked)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not for this platform, or not installed here: the image would not have it either
        for text in requires:
            inner = Requirement(text)
            if inner.marker is None or any(inner.marker.evaluate({"extra": e}) for e in wanted[name]):
                pending.append(inner)
    return set(wanted) | {"pip", "setuptools"}


def site_packages_view(distributions: set[str], view: Path) -> None:
    """A site-packages holding only `distributions`: links to their top-level files, or to their own
    files inside a top-level folder several distributions share (namespace packages)."""
    owners: dict[str, set[str]] = {}
    files: dict[str, list[importlib.metadata.PackagePath]] = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        files[name] = [f for f in dist.files or [] if not str(f).startswith("..")]
        for f in files[name]:
            owners.setdefault(f.parts[0], set()).add(name)
    base = Path(importlib.metadata.distribution("pip").locate_file(""))
    view.mkdir(parents=True)
    for name in distributions & set(files):
        for f in files[name]:
            shared = len(owners[f.parts[0]]) > 1 and len(f.parts) > 1
            target = view / (f if shared else f.parts[0])
            if not target.exists() and not target.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(base / (f if shared else f.parts[0]))


IMPORTER = """
import importlib, json, sys
sys.path[:0] = json.loads(sys.argv[1])
if sys.argv[3] == "modal":  # as in a Modal container: modal.is_local() is False there
    from modal._runtime.task_lifecycle_manager import _TaskLifecycleManager
    _TaskLifecycleManager._singleton = object()
for module in json.loads(sys.argv[2]):
    importlib.import_module(module)
"""


def import_in_image(image: ImageFiles, modules: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Import `modules` as the image's Python would: its working directory first, then its installs."""
    view = tmp / "third-party"
    site_packages_view(distributions_of(image.extras, image.modal), view)
    path = [str(image.workdir), *([str(image.site)] if image.site else []), str(view)]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", IMPORTER, json.dumps(path), json.dumps(modules), "modal" * image.modal],
        cwd=image.workdir, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


# --- tests ---------------------------------------------------------------------------------------------


def test_compose_runs_only_entry_points_checked_here():
    """Every service command of compose.yaml that runs our Python is among its image's entry points."""
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        command = service.get("command", [])
        if "build" not in service or command[:1] != ["python"]:
            continue
        module = command[2] if command[1] == "-m" else command[1].removesuffix(".py")
        checked = DOCKER_ENTRY_POINTS[service["image"]]
        assert any(m == module or m.startswith(module + ".") for m in checked), (name, module)
    assert set(compose_builds()) - NO_PYTHON == set(DOCKER_ENTRY_POINTS)


@pytest.mark.parametrize("image", sorted(DOCKER_ENTRY_POINTS))
def test_docker_image_imports_its_entry_points(image, tmp_path):
    files = docker_image(image, tmp_path)
    result = import_in_image(files, DOCKER_ENTRY_POINTS[image], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("image", sorted(MODAL_ENTRY_POINTS))
def test_modal_image_imports_its_entry_points(image, tmp_path, monkeypatch):
    files = modal_image(image, tmp_path, monkeypatch)
    result = import_in_image(files, MODAL_ENTRY_POINTS[image], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_file_left_out_of_an_image_fails_its_import(tmp_path):
    """The check itself: the bot image without bot_tools.py (as main shipped it) cannot import the bot."""
    files = docker_image("nemotron-voice-agent/bot", tmp_path)
    (files.workdir / "bot_tools.py").unlink()
    result = import_in_image(files, ["bot"], tmp_path)
    assert result.returncode != 0 and "No module named 'bot_tools'" in result.stderr


def test_an_extra_left_out_of_an_image_fails_its_import(tmp_path):
    """...and only the image's extras are importable: the fetch image cannot import the bot's Pipecat."""
    files = docker_image("nemotron-voice-agent/fetch", tmp_path)
    assert import_in_image(files, ["servers.model_fetch"], tmp_path).returncode == 0
    result = import_in_image(files, ["pipecat"], tmp_path / "again")
    assert result.returncode != 0 and "No module named 'pipecat'" in result.stderr


def test_dockerignore_lets_in_what_the_dockerfiles_copy():
    files = context_files()
    assert not any(f.startswith((".venv/", ".git/")) for f in files)
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for stage in dockerfile_stages(dockerfile, {"EXTRAS": "bot"}).values():
            for sources, _, source_stage in stage.copies:
                for source in sources if source_stage is None else []:
                    assert any(f == source or f.startswith(source + "/") for f in files), f"{dockerfile.name}: {source}"
