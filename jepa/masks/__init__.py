"""Mask utilities shared by every mask generator (images and video)."""

from jepa.masks.utils import apply_masks, repeat_interleave_batch

__all__ = ["apply_masks", "repeat_interleave_batch"]
