"""Does this host's NVIDIA driver run our GPU images? One line either way, before any GPU service starts.

    python -m servers.gpu_driver            (compose's one-shot `gpu-driver` service runs it)

GeForce cards (RTX 5090) and the DGX Spark's GB10 get no CUDA forward compatibility: an image built on a
newer CUDA than the driver supports fails inside the CUDA runtime (error 804, "forward compatibility was
attempted on non supported HW"), and with `restart: unless-stopped` the service then restarts forever.
This check says so once, with the versions, and the GPU services never start.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

from servers.cli import add_flag

IMAGE_CUDA = "13.0"
"""The CUDA our GPU images are built on: NVIDIA's PyTorch container 25.10 (docker/nemo.Dockerfile) and
docker/llama-cuda.Dockerfile's CUDA_VERSION 13.0.2."""
MINIMUM_DRIVER = {"13.0": "580.65.06", "13.1": "590.44.01", "13.2": "595.45.04", "13.3": "610.43.02"}
"""NVIDIA's minimum Linux driver per CUDA release (CUDA Toolkit release notes, table 3, GA versions)."""


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split("."))


def host_driver() -> tuple[str, str]:
    """(driver version, GPU name) of the first GPU, from nvidia-smi."""
    output = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    driver, _, name = output.splitlines()[0].partition(",")
    return driver.strip(), name.strip()


def verdict(cuda: str) -> tuple[bool, str]:
    """(whether this host's driver runs an image built on CUDA `cuda`, the one line that says so)."""
    needed = MINIMUM_DRIVER[cuda]
    if shutil.which("nvidia-smi") is None:
        return False, "no NVIDIA driver in this container: install the NVIDIA Container Toolkit (docs/deploy-docker.md)"
    try:
        driver, name = host_driver()
    except (subprocess.SubprocessError, OSError, IndexError) as error:
        return False, f"nvidia-smi failed ({error}): the GPU is not usable from containers"
    line = f"this image needs driver >= {needed} (CUDA {cuda}), the host has {driver} ({name})"
    try:
        too_old = version(driver) < version(needed)
    except ValueError:
        return False, f"{line}: that is not a driver version nvidia-smi should report"
    if too_old:
        return False, f"{line}: update the NVIDIA driver"
    return True, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flag(parser, "--cuda", "IMAGE_CUDA", IMAGE_CUDA, "the images' CUDA release", choices=sorted(MINIMUM_DRIVER))
    args = parser.parse_args()
    if args.cuda not in MINIMUM_DRIVER:  # an IMAGE_CUDA from the environment skips argparse's check
        parser.error(f"--cuda / IMAGE_CUDA: {args.cuda!r} is not one of {sorted(MINIMUM_DRIVER)}")
    runs, line = verdict(args.cuda)
    print(f"gpu-driver: {line}", file=sys.stdout if runs else sys.stderr, flush=True)
    sys.exit(0 if runs else 1)


if __name__ == "__main__":
    main()
