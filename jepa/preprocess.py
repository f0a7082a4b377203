"""The frozen-evaluation preprocessing as one reusable object: raw frames or images in, model-ready tensors out.

Clips go through :class:`jepa.video.transforms.VideoEvalTransform` (bilinear short-side resize, centre crop,
normalisation, as V-JEPA's video evaluations) and images through
:func:`jepa.image.transforms.make_eval_transforms` (bicubic short-side resize, centre crop, normalisation, as
I-JEPA's and V-JEPA's image evaluations)::

    pre = Preprocess(crop_size=224)
    clip = pre(frames)                  # uint8 [T, H, W, 3] -> float [3, T, 224, 224]
    image = pre(PIL.Image.open(path))   # -> float [3, 224, 224]
    batch = pre.batch([frames_a, frames_b])  # [2, 3, T, 224, 224]
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from jepa.data.transforms import IMAGENET_NORMALIZATION, Normalization
from jepa.image.transforms import make_eval_transforms
from jepa.video.transforms import VideoEvalTransform

if TYPE_CHECKING:
    from jepa.models.vision_transformer import VisionTransformer

Raw = Tensor | np.ndarray | Image.Image


class Preprocess:
    """Resize the short side, centre-crop a square and normalise, for clips and for images.

    Args:
        crop_size: side of the square output, in pixels (the encoder's ``img_size`` for its native resolution;
            other sizes work too, the encoder resamples its positions).
        resize_ratio: the short side is first resized to ``int(crop_size * resize_ratio)``; 256 / 224 is the
            ImageNet convention, 1.0 crops the largest central square.
        normalization: per-channel ``(mean, std)`` applied after scaling to ``[0, 1]`` (ImageNet's by default,
            which every released JEPA model was trained with).

    Call with:
        * a clip: uint8 ``[T, H, W, 3]`` numpy array or tensor (what the decoders return) -> ``[3, T, S, S]``;
        * an image: a PIL image (any mode, converted to RGB), or a uint8 ``[H, W, 3]`` array or tensor ->
          ``[3, S, S]``.
    """

    def __init__(
        self,
        crop_size: int = 224,
        resize_ratio: float = 256 / 224,
        normalization: Normalization = IMAGENET_NORMALIZATION,
    ) -> None:
        self.crop_size = crop_size
        self.resize_ratio = resize_ratio
        self.video = VideoEvalTransform(crop_size, short_side_ratio=resize_ratio, normalization=normalization)
        self.image = make_eval_transforms(crop_size, resize_ratio=resize_ratio, normalization=normalization)

    @classmethod
    def for_encoder(
        cls,
        encoder: "VisionTransformer",
        *,
        resize_ratio: float = 256 / 224,
        normalization: Normalization = IMAGENET_NORMALIZATION,
    ) -> "Preprocess":
        """The preprocessing at an encoder's native resolution (its ``img_size``; must be square)."""
        h, w = encoder.img_height, encoder.img_width
        if h != w:
            raise ValueError(f"encoder was built for {h}x{w} inputs; pass Preprocess(crop_size=...) explicitly")
        return cls(crop_size=h, resize_ratio=resize_ratio, normalization=normalization)

    def __call__(self, x: Raw) -> Tensor:
        """One clip ``[T, H, W, 3]`` -> ``[3, T, S, S]``, or one image -> ``[3, S, S]`` (see the class doc)."""
        if isinstance(x, Image.Image):
            return self.image(x.convert("RGB"))
        if not isinstance(x, (Tensor, np.ndarray)):
            raise TypeError(f"expected a PIL image, or a uint8 array/tensor [H, W, 3] or [T, H, W, 3]; got {type(x)}")
        shape = tuple(x.shape)
        if len(shape) not in (3, 4) or shape[-1] != 3:
            raise ValueError(f"expected uint8 [H, W, 3] (image) or [T, H, W, 3] (clip) with RGB last, got {shape}")
        dtype = x.dtype
        if dtype not in (np.uint8, torch.uint8):
            raise TypeError(f"expected uint8 pixels in 0..255, got {dtype}; convert e.g. with (x * 255).astype(uint8)")
        if len(shape) == 4:
            return self.video.views(x)[0]  # one view: built with the default num_views_per_clip=1
        image = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        # transforms.v2 reads a tensor as [C, H, W].
        return self.image(image.permute(2, 0, 1))

    def batch(self, items: Sequence[Raw]) -> Tensor:
        """Several clips -> ``[B, 3, T, S, S]``, or several images -> ``[B, 3, S, S]`` (all of one kind; clips of
        one length)."""
        if len(items) == 0:
            raise ValueError("batch() got no inputs")
        outs = [self(x) for x in items]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) > 1:
            raise ValueError(f"inputs give outputs of different shapes {sorted(shapes)}; batch clips of one length")
        return torch.stack(outs)

    def __repr__(self) -> str:
        return f"Preprocess(crop_size={self.crop_size}, resize_ratio={self.resize_ratio:.4g})"
