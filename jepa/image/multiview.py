"""LeJEPA's multi-crop views of an image (Balestriero & LeCun, arXiv 2511.08544): ``V`` global and ``L`` local crops.

A sample becomes ``(views, label, index)`` with ``views`` a tuple of ``[V, C, S, S]`` global crops (``S`` the
config's ``data.crop_size``, area scale ``data.crop_scale``) and, when ``L > 0``, ``[L, C, s, s]`` local crops
(``lejepa.local_crop_size``, ``lejepa.local_crop_scale``). Both kinds share every other augmentation (flip, colour,
blur), as the paper does; only the crop differs. The randomness is torch's global generator, which
:class:`jepa.data.sampling.SeededDataset` seeds per sample, so a sample's views are a function of ``(index, seed)``.

The collator is a :class:`~jepa.masks.collate.MaskCollator` whose "masks" keep every token of a view (one
``[B, N]`` index tensor per view kind), so that the trainer's loader, its rank sharding and its log see a LeJEPA
batch like any other (:func:`jepa.training.lejepa.multiview_groups` turns it into what the objective takes).
"""

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from jepa.image.transforms import make_pretrain_transforms
from jepa.masks.collate import MaskCollator


class MultiViewTransform:
    """PIL image -> ``(global [V, C, S, S],)`` or ``(global, local [L, C, s, s])`` float tensors.

    Args:
        global_views, local_views: ``V >= 1`` and ``L >= 0`` crops per image.
        crop_size, crop_scale: side in pixels and area range (fraction of the image) of the global crops.
        local_crop_size, local_crop_scale: the same for the local crops.
        horizontal_flip, color_distortion, color_jitter, gaussian_blur: applied to every crop, see
            :func:`jepa.image.transforms.make_pretrain_transforms`.
    """

    def __init__(
        self,
        *,
        global_views: int,
        local_views: int,
        crop_size: int,
        crop_scale: tuple[float, float],
        local_crop_size: int,
        local_crop_scale: tuple[float, float],
        horizontal_flip: bool = False,
        color_distortion: bool = False,
        color_jitter: float = 0.0,
        gaussian_blur: bool = False,
    ) -> None:
        if global_views < 1 or local_views < 0:
            raise ValueError(f"need global_views >= 1 and local_views >= 0, got {global_views} and {local_views}")
        self.global_views, self.local_views = global_views, local_views

        def crop(size: int, scale: tuple[float, float]) -> v2.Compose:
            return make_pretrain_transforms(
                crop_size=size,
                crop_scale=scale,
                horizontal_flip=horizontal_flip,
                color_distortion=color_distortion,
                color_jitter=color_jitter,
                gaussian_blur=gaussian_blur,
            )

        self.global_crop = crop(crop_size, crop_scale)
        self.local_crop = crop(local_crop_size, local_crop_scale)

    def __call__(self, image: Image.Image) -> tuple[Tensor, ...]:
        views = [torch.stack([self.global_crop(image) for _ in range(self.global_views)])]
        if self.local_views:
            views.append(torch.stack([self.local_crop(image) for _ in range(self.local_views)]))
        return tuple(views)


class MultiViewCollator(MaskCollator):
    """Collates multi-view samples; its masks keep all ``(size // patch_size) ** 2`` tokens of each view kind.

    Args:
        view_sizes: the side in pixels of each view kind, in the order of the samples' views (global first).
        patch_size: the encoder's patch size.
        seed: unused by the masks (they draw nothing), kept for the :class:`MaskCollator` contract.
    """

    def __init__(self, view_sizes: Sequence[int], patch_size: int, seed: int = 0) -> None:
        super().__init__(seed)
        for size in view_sizes:
            if size % patch_size:
                raise ValueError(f"view size {size} is not a multiple of patch_size {patch_size}")
        self.tokens = [(size // patch_size) ** 2 for size in view_sizes]

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """One ``[B, N_k]`` mask of every token per view kind ``k``, as both the context and the target masks
        (each view is encoded whole, and its pooled embedding is the regressed quantity)."""
        masks = [torch.arange(n).expand(batch_size, n).contiguous() for n in self.tokens]
        return masks, [m.clone() for m in masks]
