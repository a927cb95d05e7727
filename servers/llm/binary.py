"""Find llama.cpp's `llama-server`, or build it once from the sources that llama-cpp-python vendors.

    python -m servers.llm.binary [--cuda | --no-cuda]     (prints the path; CI prebuilds with it)

Order: `--llama-server PATH` or $LLAMA_SERVER, `llama-server` on PATH, our cached build, else a
build: llama-cpp-python's sdist is the one copy of llama.cpp a package registry gives us (no
GitHub here), and it includes `tools/server`. The build is native (-march=native) and cached per
user in ~/.cache, so it never travels to another CPU type.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from loguru import logger

from servers.cli import add_flag, setup_logging

LLAMA_CPP_PYTHON = "0.3.36"
"""Its sdist vendors the llama.cpp we build; the server's flags and endpoints are checked against it."""
LLAMA_CPP_BUILD = "b11312"
"""That llama.cpp's release (commit 0c1e57098): the tag of the prebuilt llama.cpp images our deployments
pin (docker/compose.yaml, docker/llm-cpu.Dockerfile, modal_app.py), so they run the llama-server we test."""


class BinaryError(Exception):
    """No usable llama-server; the message says what to do."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nemotron-voice-agent" / "llama.cpp"


def cached_binary(cuda: bool) -> Path:
    return cache_root() / (LLAMA_CPP_PYTHON + ("-cuda" if cuda else "")) / "bin" / "llama-server"


def gpu_present() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


def nvcc() -> str | None:
    return shutil.which("nvcc") or shutil.which("nvcc", path="/usr/local/cuda/bin")


def want_cuda(cuda: bool | None) -> bool:
    """`--cuda`/`--no-cuda` decide; otherwise CUDA when this machine has an NVIDIA GPU and nvcc."""
    return cuda if cuda is not None else gpu_present() and nvcc() is not None


def find(explicit: str | None = None, cuda: bool | None = None) -> Path | None:
    """The llama-server to run, without building; None when there is none yet."""
    if explicit:
        path = Path(shutil.which(explicit) or explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinaryError(f"{explicit!r} (from --llama-server or LLAMA_SERVER) is not an executable file")
        return path
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    cached = cached_binary(want_cuda(cuda))
    return cached if cached.is_file() else None


def ensure(explicit: str | None = None, cuda: bool | None = None) -> Path:
    """The llama-server to run, building it (once, cached) when there is none."""
    return find(explicit, cuda) or build(want_cuda(cuda))


def _run(cmd: list[str], log: Path) -> None:
    """Run a build step, its output appended to `log`; progress every 10 % of a compile."""
    shown = -1
    with (
        log.open("a") as out,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as process,
    ):
        out.write(f"$ {' '.join(cmd)}\n")
        assert process.stdout is not None
        try:
            for line in process.stdout:
                out.write(line)
                if (m := re.match(r"\[\s*(\d+)%\]", line)) and int(m.group(1)) // 10 > shown:
                    shown = int(m.group(1)) // 10
                    logger.info(f"llama-server build: {m.group(1)}%")
        except BaseException:
            process.kill()  # interrupted: do not leave a compile running
            raise
    if process.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if "error" in line.lower()]
        detail = "\n".join((errors or lines)[-20:])
        raise BinaryError(f"building llama-server failed at `{' '.join(cmd[:3])} ...` (full log: {log}):\n{detail}")


def fetch_sources(work: Path) -> Path:
    """llama-cpp-python's sdist, downloaded once and unpacked; returns its vendored llama.cpp."""
    top = f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    source = work / top / "vendor" / "llama.cpp"
    if (source / "CMakeLists.txt").is_file():
        return source
    work.mkdir(parents=True, exist_ok=True)
    sdist = work / f"{top}.tar.gz"
    if not sdist.is_file():
        logger.info(f"downloading llama-cpp-python {LLAMA_CPP_PYTHON} sources (76 MB)")
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", str(work)]
        _run([*pip, f"llama-cpp-python=={LLAMA_CPP_PYTHON}"], work / "build.log")
    unpacking = work / "unpacking"  # renamed into place when complete: an interrupted unpack is redone
    shutil.rmtree(unpacking, ignore_errors=True)
    shutil.rmtree(work / top, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacking, filter="data")
    os.replace(unpacking / top, work / top)
    unpacking.rmdir()
    return source


def configure_command(source: Path, build_dir: Path, cuda: bool) -> list[str]:
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # otherwise the build tries to download the web UI
    ]
    if platform.machine() in ("x86_64", "AMD64"):
        # -march=native turns on ggml's AMX kernels on Sapphire Rapids and later, and they crash in
        # the first matmul (ggml-org/llama.cpp#20824); without them the AVX-512 repacked kernels run.
        no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        flags += [f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}"]
    if cuda:
        flags += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc()}"]
        if not gpu_present():  # building for another machine: CMake's default "native" needs a GPU here
            flags.append("-DCMAKE_CUDA_ARCHITECTURES=80;86;89;90")
    return ["cmake", "-S", str(source), "-B", str(build_dir), *flags]


def build(cuda: bool, jobs: int | None = None) -> Path:
    """Configure and compile llama-server, install it into the cache atomically, clean up.

    One build at a time per cache: a second process waits for the first and uses its binary.
    """
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if cuda and nvcc() is None:
        missing.append("nvcc (the CUDA toolkit)")
    if missing:
        needs = " and ".join(missing)
        raise BinaryError(f"building llama-server needs {needs} on PATH (Debian/Ubuntu: apt-get install cmake g++)")
    target = cached_binary(cuda)
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / "build.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is building llama-server; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        logger.info(
            f"building llama-server ({'CUDA' if cuda else 'CPU'}) from llama-cpp-python {LLAMA_CPP_PYTHON} "
            f"sources, ~7-20 min on 2 cores, once (or pass --llama-server PATH)"
        )
        work = cache_root() / f"build-{LLAMA_CPP_PYTHON}"
        build_dir = work / ("build-cuda" if cuda else "build-cpu")
        source = fetch_sources(work)
        _run(configure_command(source, build_dir, cuda), work / "build.log")
        jobs = jobs or len(os.sched_getaffinity(0))
        _run(["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)], work / "build.log")
        install(build_dir / "bin" / "llama-server", target)
        shutil.rmtree(work, ignore_errors=True)
    logger.info(f"llama-server installed at {target}")
    return target


def install(built: Path, target: Path) -> None:
    """Copy `built` to `target` through a temporary file, so a half-copied binary is never found."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        shutil.copy2(built, tmp)
        tmp.chmod(0o755)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def add_binary_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--llama-server", "LLAMA_SERVER", None, "llama-server to run (default: find or build)", type=str)
    parser.add_argument(
        "--cuda",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="build/use the CUDA llama-server (default: when an NVIDIA GPU and nvcc are present)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the llama-server path, building it first if needed.")
    add_binary_flags(parser)
    args = parser.parse_args()
    setup_logging("INFO")
    try:
        print(ensure(args.llama_server, args.cuda))
    except BinaryError as e:
        raise SystemExit(f"llama-server: {e}") from None


if __name__ == "__main__":
    main()
