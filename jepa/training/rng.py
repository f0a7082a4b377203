"""The process's random generators (torch, CUDA, Python, NumPy) as checkpoint data, and seeding them.

States are stored as tensors, plain lists and numbers, so that checkpoints load with
``torch.load(weights_only=True)``.
"""

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed torch (every device), Python's ``random`` and NumPy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def rng_state() -> dict[str, Any]:
    """Every generator's state: ``torch``, ``cuda`` (one per device; empty without CUDA), ``python``, ``numpy``."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": _numpy_state(),
    }


def set_rng_state(rng: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (the CUDA states only where CUDA is available)."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(_as_random_state(rng["python"]))
    np.random.set_state(_as_numpy_state(rng["numpy"]))


def restore_rng(ckpt: Mapping[str, Any], rank: int, world_size: int, reseed: int) -> None:
    """This rank's generators as checkpoint ``ckpt`` left them: its entry of ``rng_per_rank`` when the run had as
    many ranks; with one process, ``rng`` (an official file has none, and nothing changes); otherwise (another
    number of ranks) seeded with ``reseed``."""
    per_rank = ckpt.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == world_size:
        set_rng_state(per_rank[rank])
    elif world_size == 1:
        if ckpt.get("rng") is not None:
            set_rng_state(ckpt["rng"])
    else:
        seed_all(reseed)


def _numpy_state() -> dict[str, Any]:
    state = np.random.get_state(legacy=True)
    assert isinstance(state, tuple)  # legacy: ("MT19937", keys, pos, has_gauss, cached), not the dict
    _, keys, pos, has_gauss, cached = state
    return {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _as_numpy_state(saved: Mapping[str, Any]) -> tuple[str, np.ndarray, int, int, float]:
    return "MT19937", np.array(saved["keys"], dtype=np.uint32), saved["pos"], saved["has_gauss"], saved["cached"]


def _as_random_state(state: Any) -> tuple[int, tuple[int, ...], float | None]:
    # A checkpoint stores the tuple Python's random.getstate() returns; after a round trip it may be lists.
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal), gauss
