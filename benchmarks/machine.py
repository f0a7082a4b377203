"""What a benchmark figure was measured on, for its JSON line: CPU model and vector ISA, native bf16, threads,
torch version, and the GPU when one is used."""

import os
import platform
from typing import Any

import torch

from jepa.runtime.precision import cpu_bf16_support


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s), from /proc/cpuinfo; the machine type where that is not readable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_flags() -> list[str]:
    """The CPU's bf16 flags in /proc/cpuinfo (``avx512_bf16``, ``amx_bf16``, Arm's ``bf16``), whatever
    ``JEPA_CPU_BF16`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return sorted(flag for flag in line.split(":", 1)[1].split() if "bf16" in flag)
    except OSError:
        pass
    return []


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """``cpu``, ``cpu_capability`` (the ISA torch's CPU kernels use), ``cpu_bf16`` (whether and why bf16 counts as
    native, ``JEPA_CPU_BF16`` included), ``cpu_bf16_flags``, ``threads``, ``torch``, ``load_1m`` (the
    1-minute load average as the figure is reported: above the threads in use, something else was running); ``gpu``
    when ``device`` is a CUDA device."""
    native, why = cpu_bf16_support()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": native,
        "cpu_bf16_reason": why,
        "cpu_bf16_flags": cpu_bf16_flags(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_1m": round(os.getloadavg()[0], 2),
    }
    device = torch.device(device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
