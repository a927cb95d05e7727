"""servers/gpu_driver.py: the GPU stack's driver check, with a stand-in nvidia-smi reporting a driver."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servers.gpu_driver import IMAGE_CUDA, MINIMUM_DRIVER

ROOT = Path(__file__).resolve().parent.parent


def check(tmp_path: Path, driver: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m servers.gpu_driver` on a host whose nvidia-smi reports `driver` (None: no nvidia-smi)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if driver is not None:
        smi = bin_dir / "nvidia-smi"
        reply = f"{driver}, NVIDIA GeForce RTX 5090"
        smi.write_text(f'#!/bin/sh\ncase "$*" in *driver_version,name*) echo "{reply}";; esac\n')
        smi.chmod(0o755)
    return subprocess.run(
        [sys.executable, "-m", "servers.gpu_driver"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env}, check=False,
    )  # fmt: skip


def test_an_old_driver_stops_the_stack_with_one_line(tmp_path):
    result = check(tmp_path, "575.57.08")
    assert result.returncode == 1 and result.stdout == ""
    line = "this image needs driver >= 580.65.06 (CUDA 13.0), the host has 575.57.08 (NVIDIA GeForce RTX 5090)"
    assert result.stderr.splitlines() == [f"gpu-driver: {line}: update the NVIDIA driver"]


@pytest.mark.parametrize("driver", ["580.65.06", "580.95.05", "610.43.02"])
def test_a_driver_for_the_images_cuda_passes(tmp_path, driver):
    result = check(tmp_path, driver)
    assert result.returncode == 0, result.stderr
    assert f"the host has {driver}" in result.stdout


def test_the_prebuilt_llama_image_asks_for_its_newer_cuda(tmp_path):
    """compose.llama-prebuilt.yaml sets IMAGE_CUDA for the check: a 580 driver is then too old."""
    override = yaml.safe_load((ROOT / "docker" / "compose.llama-prebuilt.yaml").read_text().replace("!reset ", ""))
    cuda = override["services"]["gpu-driver"]["environment"]["IMAGE_CUDA"]
    result = check(tmp_path, "580.95.05", IMAGE_CUDA=cuda)
    assert result.returncode == 1 and f"needs driver >= {MINIMUM_DRIVER[cuda]} (CUDA {cuda})" in result.stderr


def test_no_driver_in_the_container_is_one_line_too(tmp_path):
    result = check(tmp_path, None)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "NVIDIA Container Toolkit" in result.stderr


def test_the_checked_cuda_is_the_one_the_gpu_images_are_built_on():
    llama = (ROOT / "docker" / "llama-cuda.Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_VERSION=(\d+\.\d+)\.", llama, re.MULTILINE).group(1) == IMAGE_CUDA
    # NVIDIA's PyTorch container 25.10 is built on CUDA 13.0.2 (its release notes).
    assert "ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.10-py3" in (ROOT / "docker" / "nemo.Dockerfile").read_text()
    assert IMAGE_CUDA == "13.0"
    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    assert services["gpu-driver"]["command"] == ["python", "-m", "servers.gpu_driver"]
    assert "devices" in str(services["gpu-driver"]["deploy"])  # nvidia-smi is there only with the GPU


def test_odd_answers_are_one_line_too(tmp_path):
    result = check(tmp_path, "N/A")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1 and "not a driver version" in result.stderr
    unknown = check(tmp_path, "580.95.05", IMAGE_CUDA="12.9")
    assert unknown.returncode == 2 and "IMAGE_CUDA: '12.9' is not one of" in unknown.stderr
