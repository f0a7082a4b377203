"""The collate-function side of every mask generator (images and video).

A mask collator is a DataLoader ``collate_fn``: it stacks the samples of a batch and draws the masks for that batch.
The masks are a pure function of ``(seed, dataset indices of the batch)``: the random generator of each batch is
seeded from those alone, so the masks are identical in every worker process, across runs, and after a resume (the
sampler replays the same batches), with no counter shared between processes.
"""

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

from jepa.data.sampling import mix_seed


def batch_seed(base_seed: int, indices: Sequence[int]) -> int:
    """A deterministic 63-bit seed for one batch.

    Args:
        base_seed: the run's mask seed.
        indices: the dataset indices of the samples in the batch, in batch order (the same samples in another order
            give another seed, since the masks are matched to positions in the batch).

    Returns:
        an int in ``[0, 2**63)``, the BLAKE2b hash of the signed 64-bit encodings of ``base_seed`` and ``indices``;
        unlike ``hash()`` it does not depend on the process (``PYTHONHASHSEED``) or the platform.
    """
    return mix_seed(base_seed, *indices)


def truncate_to_min(masks: Sequence[Tensor]) -> Tensor:
    """Cut every sample's index list to the shortest one in the batch and stack them (equal-length truncation).

    Args:
        masks: ``B`` LongTensors ``[K_b]`` of token indices, one per sample, each in ascending order.

    Returns:
        LongTensor ``[B, K]`` with ``K = min_b K_b``: the first ``K`` entries of each list, so each row stays in
        ascending order (for a block mask in row-major order this drops its last cells, i.e. its bottom rows).
    """
    if len(masks) == 0:
        raise ValueError("truncate_to_min needs at least one mask")
    for m in masks:
        if m.dim() != 1:
            raise ValueError(f"each mask must be a 1D index tensor, got shape {tuple(m.shape)}")
    k = min(m.numel() for m in masks)
    return torch.stack([m[:k] for m in masks]).long()


def masks_to_grid(mask_row: Tensor, grid_shape: Sequence[int]) -> Tensor:
    """Paint one sample's token indices onto the token grid, for tests and visualisation.

    Args:
        mask_row: LongTensor ``[K]`` of flat row-major token indices (``r * W + c`` for a 2D grid).
        grid_shape: the token grid, e.g. ``(H, W)`` or ``(T, H, W)``.

    Returns:
        BoolTensor of shape ``grid_shape``, True where a token is named by ``mask_row``.
    """
    n = math.prod(grid_shape)
    if mask_row.dim() != 1:
        raise ValueError(f"mask_row must be a 1D index tensor, got shape {tuple(mask_row.shape)}")
    if mask_row.numel() > 0 and (int(mask_row.min()) < 0 or int(mask_row.max()) >= n):
        raise ValueError(f"mask indices must lie in [0, {n}) for grid {tuple(grid_shape)}")
    grid = torch.zeros(n, dtype=torch.bool)
    grid[mask_row.long()] = True
    return grid.reshape(tuple(grid_shape))


class MaskCollator(ABC):
    """Base ``collate_fn`` for mask generators: collates the samples and draws the batch's masks.

    Every sample of the batch must be a tuple whose last element is its ``int`` dataset index; the index seeds the
    masks (see :func:`batch_seed`) and is kept in the collated batch. Subclasses implement :meth:`sample_masks`.
    Subclasses must stay picklable (plain attributes, no lambdas) so that DataLoader workers can be spawned.
    """

    def __init__(self, seed: int = 0) -> None:
        """
        Args:
            seed: base seed of the masks; combined with the dataset indices of each batch.
        """
        self.seed = int(seed)

    @abstractmethod
    def sample_masks(self, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """Draw the masks of one batch.

        Args:
            batch_size: number of samples ``B``.
            generator: the batch's random generator; all randomness must come from it.

        Returns:
            ``(masks_enc, masks_pred)``: lists of LongTensors ``[B, K]`` of flat token indices, the context masks
            (what the encoder sees) and the target masks (what the predictor predicts).
        """

    def __call__(self, batch: list[tuple]) -> tuple[Any, list[Tensor], list[Tensor]]:
        """Collate ``batch`` and draw its masks.

        Args:
            batch: ``B`` samples, each a tuple ``(..., index)`` with ``index`` the sample's int dataset index.

        Returns:
            ``(collated, masks_enc, masks_pred)``: ``default_collate(batch)`` (nested like the samples, so typed
            ``Any``) and the masks of :meth:`sample_masks`.
        """
        if len(batch) == 0:
            raise ValueError("cannot collate an empty batch")
        indices = []
        for pos, sample in enumerate(batch):
            if not isinstance(sample, tuple | list) or len(sample) == 0:
                raise TypeError(
                    f"{type(self).__name__} needs every sample to be a tuple ending with its int dataset index; "
                    f"sample {pos} is a {type(sample).__name__}"
                )
            idx = sample[-1]
            # bool is an Integral too, but a flag in the last slot means the dataset forgot to return its index.
            if not isinstance(idx, numbers.Integral) or isinstance(idx, bool):
                raise TypeError(
                    f"{type(self).__name__} needs every sample to be a tuple ending with its int dataset index; "
                    f"the last element of sample {pos} is a {type(idx).__name__}"
                )
            indices.append(int(idx))
        collated = default_collate(batch)
        generator = torch.Generator()
        generator.manual_seed(batch_seed(self.seed, indices))
        masks_enc, masks_pred = self.sample_masks(len(batch), generator)
        return collated, masks_enc, masks_pred
