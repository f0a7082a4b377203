"""Pieces every block-mask generator (2D and 3D) shares: argument checks, seeded draws, block sizes."""

import math
from collections.abc import Sequence

import torch


def as_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``224`` or ``(h, w)`` -> ``(h, w)``."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
    return int(value[0]), int(value[1])


def uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    """A uniform float in ``[lo, hi)`` from ``generator``."""
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def randint(generator: torch.Generator, high: int) -> int:
    """A uniform int in ``[0, high)`` from ``generator``."""
    return int(torch.randint(high, (), generator=generator))


def log_uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    """A draw whose log is uniform in ``[log lo, log hi)``: an aspect ratio ``a`` is as likely as ``1 / a``."""
    return math.exp(uniform(generator, math.log(lo), math.log(hi)))


def block_hw(scale: float, aspect_ratio: float, height: int, width: int) -> tuple[int, int]:
    """The ``(h, w)`` of a block covering ``scale`` of a ``height x width`` grid with height / width
    ``aspect_ratio``: ``h = round(sqrt(scale * H * W * aspect_ratio))``, ``w = round(sqrt(scale * H * W /
    aspect_ratio))`` (halves round up), clipped to ``[1, H]`` and ``[1, W]``."""
    area = scale * height * width
    h = math.floor(math.sqrt(area * aspect_ratio) + 0.5)
    w = math.floor(math.sqrt(area / aspect_ratio) + 0.5)
    return min(max(h, 1), height), min(max(w, 1), width)
