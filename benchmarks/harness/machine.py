"""The machine and the software a benchmark ran on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["machine_info", "versions", "load_average", "cpu_model"]

REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append(f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": _ram_gib(),
        "gpu": gpus or None,
        "platform": platform.platform(),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def versions() -> dict[str, Any]:
    commit = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gymnasium": _version("gymnasium"),
        "mujoco": _version("mujoco"),
        "stable_baselines3": _version("stable_baselines3") or _version("stable-baselines3"),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "drl": _version("drl"),
        "optuna": _version("optuna"),
        "onnxruntime": _version("onnxruntime"),
        "pettingzoo": _version("pettingzoo"),
        "gymnasium_robotics": _version("gymnasium_robotics") or _version("gymnasium-robotics"),
        "rsl_rl": _version("rsl-rl-lib"),
        "drl_git_commit": None if commit is None else commit + (" (with uncommitted changes)" if status else ""),
    }
