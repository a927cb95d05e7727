"""Resolve docker/nemo.Dockerfile's `pip install ".[nemo,magpie]"` without Docker, against a stand-in of its base.

    python scripts/nemo_image_resolve.py [--build-sdists]      (needs python3.12 and PyPI; ~2 min)

No Docker and no NVIDIA registry here, so the image is simulated where it matters to pip: a Python
3.12 venv holding metadata-only stand-ins of NVIDIA's own builds (docker/ngc-pytorch-25.10-builds.txt),
the constraints the Dockerfile derives from them (scripts/keep-image-builds.sh), then pip's resolver
in `--dry-run --report` mode. It checks that:
- the resolution succeeds and keeps every NVIDIA build (no PyPI torch replacing the CUDA one);
- every package to install has a wheel for linux/amd64 and linux/arm64 (cp312, manylinux <= glibc
  2.39), or is an sdist we can build (`--build-sdists` builds them here: pyopenjtalk is one).
What it cannot prove: the image's other packages (numpy, scipy...) are not stood in, so pip may
resolve versions the image would keep; the result file says what was resolved.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
BUILDS = ROOT / "docker" / "ngc-pytorch-25.10-builds.txt"
RESULT = ROOT / "docker" / "nemo-image-resolve.txt"
GLIBC = (2, 39)
ARCHES = ("x86_64", "aarch64")


def image_builds() -> list[tuple[str, str]]:
    lines = [ln.split("#")[0].strip() for ln in BUILDS.read_text().splitlines()]
    return [tuple(ln.split("==", 1)) for ln in lines if ln]  # type: ignore[misc]


def install_stand_ins(python: Path, builds: list[tuple[str, str]]) -> None:
    """A dist-info (METADATA, INSTALLER, RECORD) per build: pip sees them installed; no code."""
    site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    site_dir = Path(site.decode().strip())
    for name, version in builds:
        info = site_dir / f"{canonicalize_name(name).replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("nemo-image-resolve\n")
        (info / "RECORD").write_text("")


def wheel_fits(filename: str, arch: str) -> bool:
    """A wheel installable on CPython 3.12, linux `arch`, glibc <= 2.39."""
    _, _, _, tags = parse_wheel_filename(filename)
    return any(_tag_fits(tag, arch) for tag in tags)


def _tag_fits(tag: Tag, arch: str) -> bool:
    if tag.interpreter not in ("py3", "cp312", "py312") and not re.fullmatch(r"cp3\d+", tag.interpreter):
        return False
    if tag.interpreter.startswith("cp3") and tag.interpreter != "cp312":
        if tag.abi != "abi3" or int(tag.interpreter[2:]) > 312:  # abi3 wheels run on their version and later
            return False
    if tag.platform == "any":
        return True
    m = re.fullmatch(rf"manylinux_(\d+)_(\d+)_{arch}", tag.platform)
    if m:
        return (int(m.group(1)), int(m.group(2))) <= GLIBC
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    m = re.fullmatch(rf"(manylinux1|manylinux2010|manylinux2014)_{arch}", tag.platform)
    return bool(m) and legacy[m.group(1)] <= GLIBC


def pypi_files(name: str, version: str) -> list[str]:
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=120) as response:
        releases = json.load(response)["releases"]
    return [f["filename"] for f in releases.get(version, [])]


def availability(name: str, version: str) -> dict[str, str]:
    """Per architecture: "wheel", "sdist" (must compile) or "missing"."""
    files = pypi_files(name, version)
    wheels = [f for f in files if f.endswith(".whl")]
    has_sdist = any(f.endswith((".tar.gz", ".zip")) for f in files)
    return {
        arch: "wheel" if any(wheel_fits(w, arch) for w in wheels) else "sdist" if has_sdist else "missing"
        for arch in ARCHES
    }


def public_pip_env(**settings: str) -> dict[str, str]:
    """The environment of a pip that sees PyPI only, as a docker build does: no pip config files and no
    PIP_* settings of this machine (local wheel folders, extra indexes, constraint files)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "https://pypi.org/simple"} | settings


def run(python312: str, build_sdists: bool) -> tuple[bool, list[str]]:
    report_lines: list[str] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="nemo-image-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.check_call([python312, "-m", "venv", str(venv)])
        python = venv / "bin" / "python"
        subprocess.check_call([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], env=public_pip_env())
        builds = image_builds()
        install_stand_ins(python, builds)
        env = public_pip_env(PYTHON=str(python))
        keep = subprocess.check_output(["bash", str(ROOT / "scripts" / "keep-image-builds.sh")], env=env, text=True)
        constraints = Path(tmp) / "keep-image-builds.txt"
        constraints.write_text(keep)
        report_lines.append(f"constraints (scripts/keep-image-builds.sh): {', '.join(keep.split())}")
        report = Path(tmp) / "report.json"
        resolve = subprocess.run(
            [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
             f"{ROOT}[nemo,magpie]"],
            env=public_pip_env(PIP_CONSTRAINT=str(constraints)), capture_output=True, text=True,
        )  # fmt: skip
        if resolve.returncode != 0:
            report_lines.append("RESOLUTION FAILED:\n" + resolve.stderr[-4000:])
            return False, report_lines
        installs = json.loads(report.read_text())["install"]
        packages = sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in installs if not i.get("is_direct"))
        replaced = sorted({canonicalize_name(n) for n, _ in packages} & {canonicalize_name(n) for n, _ in builds})
        report_lines.append(f"resolved: {len(packages)} packages to install on top of the image")
        if replaced:
            ok = False
            report_lines.append(f"REPLACES NVIDIA BUILDS: {replaced}")
        else:
            report_lines.append("NVIDIA's builds kept: " + ", ".join(f"{n}=={v}" for n, v in builds))
        to_build = []
        for name, version in packages:
            where = availability(name, version)
            if "missing" in where.values():
                ok = False
            if "sdist" in where.values():
                to_build.append(f"{name}=={version}")
            report_lines.append(f"  {name}=={version}  amd64: {where['x86_64']}  arm64: {where['aarch64']}")
        if build_sdists:
            for requirement in to_build:
                wheel_dir = Path(tmp) / "wheels"
                built = subprocess.run(
                    [str(python), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), requirement],
                    env=public_pip_env(), capture_output=True, text=True,
                )  # fmt: skip
                status = "built" if built.returncode == 0 else "BUILD FAILED: " + built.stderr[-1500:]
                ok = ok and built.returncode == 0
                report_lines.append(f"sdist {requirement} on this machine ({os.uname().machine}): {status}")
    return ok, report_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default="python3.12", help="a CPython 3.12, as in the image")
    parser.add_argument("--build-sdists", action="store_true", help="build the packages that have no wheel")
    parser.add_argument("--out", type=Path, default=RESULT, help="where the result goes")
    args = parser.parse_args()
    ok, lines = run(args.python, args.build_sdists)
    text = "\n".join([f"# python scripts/nemo_image_resolve.py{' --build-sdists' if args.build_sdists else ''}",
                      f"result: {'OK' if ok else 'FAILED'}", *lines]) + "\n"  # fmt: skip
    args.out.write_text(text)
    print(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
