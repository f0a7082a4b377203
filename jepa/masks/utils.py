"""Gathering tokens by index and the batch layout the official code uses for several masks."""

from collections.abc import Sequence

import torch
from torch import Tensor


def apply_masks(x: Tensor, masks: Tensor | Sequence[Tensor]) -> Tensor:
    """Keep the tokens named by each mask and stack the results along the batch.

    Args:
        x: tokens ``[B, N, D]``.
        masks: one LongTensor ``[B, K]`` or a list of ``M`` of them; each row holds the indices (into ``N``) of the
            tokens to keep, in the order they are returned.

    Returns:
        ``[M * B, K, D]``: the tokens kept by mask 0 for the whole batch, then mask 1, ... (the official layout).
    """
    if isinstance(masks, Tensor):
        masks = [masks]
    if len(masks) == 0:
        raise ValueError("apply_masks needs at least one mask")
    kept = []
    for m in masks:
        if m.dim() != 2 or m.shape[0] != x.shape[0]:
            raise ValueError(f"each mask must be [B={x.shape[0]}, K] token indices, got shape {tuple(m.shape)}")
        kept.append(torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.shape[-1])))
    return torch.cat(kept, dim=0)


def repeat_interleave_batch(x: Tensor, B: int, repeat: int) -> Tensor:
    """Repeat each consecutive chunk of ``B`` samples ``repeat`` times, chunk by chunk.

    ``x`` is ``[M * B, ...]`` (``M`` chunks of one batch each, as :func:`apply_masks` returns); the result is
    ``[M * repeat * B, ...]`` ordered ``chunk 0, chunk 0, ..., chunk 1, chunk 1, ...``. This pairs every target
    mask with every context mask in the order the official predictors expect.
    """
    if x.shape[0] % B != 0:
        raise ValueError(f"leading dimension {x.shape[0]} is not a multiple of the batch size {B}")
    chunks = x.shape[0] // B
    x = x.reshape(chunks, 1, B, *x.shape[1:]).expand(chunks, repeat, B, *x.shape[1:])
    return x.reshape(chunks * repeat * B, *x.shape[3:])
