"""LeJEPA's multi-crop views (Balestriero & LeCun, arXiv 2511.08544): ``V`` global and ``L`` local crops of an image
or of a clip.

A sample becomes ``(views, label, index)`` with ``views`` a tuple of ``[V, C, S, S]`` global crops (``S`` the
config's ``data.crop_size``, area scale ``data.crop_scale``) and, when ``L > 0``, ``[L, C, s, s]`` local crops
(``lejepa.local_crop_size``, ``lejepa.local_crop_scale``); for a clip each view is ``[C, T, S, S]``, one crop box
for all its frames (:class:`jepa.video.transforms.VideoTrainTransform`; a moving box with ``data_aug.motion_shift``),
so the views of a clip differ in where they look and how large, never in time. Both kinds share every other
augmentation (images: flip, colour, blur; clips: flip, RandAugment, erasing), as the paper does; only the crop
differs. The randomness is torch's global generator, which :class:`jepa.data.sampling.SeededDataset`
seeds per sample, so a sample's views are a function of ``(index, seed)``.

The collator is a :class:`~jepa.masks.collate.MaskCollator` whose "masks" keep every token of a view (one
``[B, N]`` index tensor per view kind), so that the trainer's loader, its rank sharding and its log see a LeJEPA
batch like any other (:func:`jepa.training.lejepa.multiview_groups` turns it into what the objective takes).
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from jepa.masks.collate import MaskCollator


class MultiViewTransform:
    """A sample (PIL image or uint8 clip) -> ``(global [V, ...],)`` or ``(global, local [L, ...])`` float tensors.

    Args:
        global_crop, local_crop: one random view of a sample each call (the pretraining crop of its modality:
            :func:`jepa.image.transforms.make_pretrain_transforms` for images,
            :class:`jepa.video.transforms.VideoTrainTransform` for clips).
        global_views, local_views: ``V >= 1`` and ``L >= 0`` crops per sample.
    """

    def __init__(
        self, global_crop: Callable[[Any], Tensor], local_crop: Callable[[Any], Tensor], *, global_views: int,
        local_views: int,
    ) -> None:  # fmt: skip
        if global_views < 1 or local_views < 0:
            raise ValueError(f"need global_views >= 1 and local_views >= 0, got {global_views} and {local_views}")
        self.global_views, self.local_views = global_views, local_views
        self.global_crop, self.local_crop = global_crop, local_crop

    def __call__(self, sample: Any) -> tuple[Tensor, ...]:
        views = [torch.stack([self.global_crop(sample) for _ in range(self.global_views)])]
        if self.local_views:
            views.append(torch.stack([self.local_crop(sample) for _ in range(self.local_views)]))
        return tuple(views)


class MultiViewCollator(MaskCollator):
    """Collates multi-view samples; its masks keep all tokens of each view kind: ``(size // patch_size) ** 2``, times
    ``num_frames // tubelet_size`` for clips.

    Args:
        view_sizes: the side in pixels of each view kind, in the order of the samples' views (global first).
        patch_size: the encoder's patch size.
        num_frames, tubelet_size: a clip's frames and the encoder's tubelet (``num_frames=1``: images).
        seed: unused by the masks (they draw nothing), kept for the :class:`MaskCollator` contract.
    """

    def __init__(
        self, view_sizes: Sequence[int], patch_size: int, seed: int = 0, *, num_frames: int = 1, tubelet_size: int = 1
    ) -> None:
        super().__init__(seed)
        for size in view_sizes:
            if size % patch_size:
                raise ValueError(f"view size {size} is not a multiple of patch_size {patch_size}")
        if num_frames > 1 and num_frames % tubelet_size:
            raise ValueError(f"num_frames {num_frames} is not a multiple of tubelet_size {tubelet_size}")
        steps = num_frames // tubelet_size if num_frames > 1 else 1
        self.tokens = [steps * (size // patch_size) ** 2 for size in view_sizes]

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """One ``[B, N_k]`` mask of every token per view kind ``k``, as both the context and the target masks
        (each view is encoded whole, and its pooled embedding is the regressed quantity)."""
        masks = [torch.arange(n).expand(batch_size, n).contiguous() for n in self.tokens]
        return masks, [m.clone() for m in masks]
