"""Which precision a run computes in: ``meta.dtype`` / ``use_bfloat16`` / ``--dtype``, with ``auto`` picked by the
hardware.

bfloat16 autocast pays on CUDA devices that support it and on CPUs with native bf16 matrix units (AVX-512 BF16 or
AMX on x86, the BF16 extension on Arm): there bf16 matrix products run 2.5-3.5x faster than float32. On a CPU
without them (AVX2 only, most laptops and CI machines) torch emulates bf16 and a matrix product runs about 50x
slower than in float32, so ``auto`` means float32 there. An explicit ``bfloat16`` is honoured everywhere, with a
warning where it is emulated.

``JEPA_CPU_BF16=0`` (or ``1``) overrides the CPU detection, e.g. to keep test runs in float32 on any machine.
"""

import functools
import logging
import os
import platform

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The feature flags Linux lists for the first CPU (``flags`` on x86, ``Features`` on Arm); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) under which its bf16 matrix products are emulated.
_ONEDNN_NO_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.cache
def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU computes bf16 matrix products natively, and what says so: the CPU's flags, and on x86 that
    oneDNN, which computes them, is not limited below AVX-512 BF16 (``ONEDNN_MAX_CPU_ISA=AVX2`` makes a bf16 CPU
    emulate them at about 1 GFLOP/s, as an AVX2-only CPU does; ``ATEN_CPU_CAPABILITY=avx2`` does not: measured
    198 GFLOP/s bf16 against 84 float32 on one thread of this project's Xeon)."""
    override = os.environ.get("JEPA_CPU_BF16")
    if override in ("0", "1"):
        return override == "1", f"JEPA_CPU_BF16={override}"
    flags = cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    native = [f for f in _X86_BF16_FLAGS if f in flags]
    if native:
        limit = next((f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
                      if os.environ.get(k, "").upper() in _ONEDNN_NO_BF16), None)  # fmt: skip
        if limit is not None:
            return False, f"CPU has {' and '.join(native)} but {limit}: bf16 is emulated"
    if platform.machine() in ("aarch64", "arm64") and "bf16" in flags:
        native.append("bf16")
    if native:
        return True, f"CPU ({capability}) has {' and '.join(native)}"
    return False, f"CPU ({capability}) has no native bf16 (no AVX-512 BF16 / AMX): bf16 is emulated"


def resolve_dtype(requested: str, device: torch.device | str, what: str = "meta.dtype") -> torch.dtype:
    """The dtype to autocast to on ``device`` for ``requested`` (``auto``, ``float32``, ``bfloat16``, ``float16``);
    logs the choice and its reason (``what`` names the key it came from)."""
    device = torch.device(device)
    if requested not in (*DTYPES, "auto"):
        raise ValueError(f"{what}: expected auto, {', '.join(DTYPES)}; got {requested!r}")
    if device.type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        why = f"{torch.cuda.get_device_name(device) if torch.cuda.is_available() else 'cuda'}"
        why += " supports bf16" if supported else " has no bf16"
    elif device.type == "cpu":
        supported, why = cpu_bf16_support()
    else:
        supported, why = False, f"{device.type}: bf16 autocast not assumed"
    if requested == "auto":
        dtype = torch.bfloat16 if supported else torch.float32
        logger.info("%s: auto -> %s on %s (%s)", what, str(dtype).removeprefix("torch."), device, why)
        return dtype
    dtype = DTYPES[requested]
    if dtype == torch.bfloat16 and device.type == "cpu" and not supported:
        logger.warning(
            "%s: bfloat16 on %s: %s; expect matrix products about 50x slower than float32 (use auto or float32)",
            what, device, why,
        )  # fmt: skip
    return dtype
