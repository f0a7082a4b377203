"""Mask utilities shared by every mask generator (images and video)."""

from jepa.masks.collate import MaskCollator, batch_seed, masks_to_grid, truncate_to_min
from jepa.masks.utils import apply_masks, repeat_interleave_batch

__all__ = [
    "MaskCollator",
    "apply_masks",
    "batch_seed",
    "masks_to_grid",
    "repeat_interleave_batch",
    "truncate_to_min",
]
