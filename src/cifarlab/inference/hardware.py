"""What the run ran on: device, GPU memory, CPU model, cores, RAM (from /proc or os; no psutil).

Printed before training, as the reference notebook printed its Colab GPU.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from cifarlab.errors import ConfigError


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; a forced device that is missing is an error."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device=mps but this torch has no MPS support; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu, cuda or mps") from None


@functools.cache
def _bf16_native(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":  # AVX512-BF16 or AMX: oneDNN runs bf16 convs natively (elsewhere it emulates, slower)
        probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None),
                  getattr(torch.cpu, "_is_amx_tile_supported", None))
        return any(bool(probe()) for probe in probes if probe is not None)
    return False


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively, so that autocast to bf16 pays.

    True on CUDA GPUs with bf16 and on CPUs with AVX512-BF16 or AMX (a training step of the
    CPU recipes' networks runs faster; results/train_throughput.csv). False on MPS and on
    CPUs without those units, where bf16 is emulated and slower than float32.
    """
    return _bf16_native(torch.device(device).type)


def bf16_in_use(amp: bool, device: torch.device) -> bool:
    """Whether a run with ``amp`` on computes in bf16 on ``device``: the one test of it."""
    return bool(amp) and bf16_native(device)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def hardware_info(device: torch.device | None = None) -> dict:
    device = device or pick_device("auto")
    info = {"device": str(device), "device_name": device.type, "cpu": cpu_model(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "ram_gib": round(ram_gib() or 0, 1), "torch": torch.__version__,
            "python": platform.python_version(), "bf16_native": bf16_native(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_name"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    elif device.type == "cpu":
        info["device_name"] = info["cpu"]
    return info


def describe(info: dict) -> str:
    line = f"device {info['device']} ({info['device_name']})"
    if "gpu_memory_gib" in info:
        line += f", {info['gpu_memory_gib']} GiB GPU memory"
    if "bf16_native" in info:
        line += f", bf16 {'native' if info['bf16_native'] else 'not native'}"
    if info.get("amp") is not None:
        line += f", bf16 autocast {'on' if info['amp'] else 'off'}"
    return (f"{line} | CPU {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads, "
            f"{info['ram_gib']} GiB RAM | torch {info['torch']}, python {info['python']}")
