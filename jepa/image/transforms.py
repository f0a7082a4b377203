"""Image transforms for I-JEPA pretraining and frozen evaluation, built from torchvision's ``transforms.v2``.

Both pipelines take a PIL image (or a ``[C, H, W]`` uint8 tensor) and return a normalised float tensor
``[3, crop_size, crop_size]``. Randomness comes from torch's global generator, so ``torch.manual_seed`` (or the
per-worker seeds the DataLoader sets) makes them reproducible.
"""

import torch
from torchvision.transforms import InterpolationMode, v2

from jepa.data.transforms import IMAGENET_NORMALIZATION, Normalization, check_crop_size


def make_pretrain_transforms(
    crop_size: int = 224,
    crop_scale: tuple[float, float] = (0.3, 1.0),
    horizontal_flip: bool = False,
    color_distortion: bool = False,
    color_jitter: float = 1.0,
    gaussian_blur: bool = False,
    normalization: Normalization = IMAGENET_NORMALIZATION,
) -> v2.Compose:
    """The I-JEPA pretraining augmentation: a random resized crop, optionally flips, colour distortion and blur.

    The argument names and defaults are those of the official I-JEPA ``data`` config section. I-JEPA itself trains
    with the crop alone (flip, colour and blur off): the masks, not hand-made augmentations, make the task.

    Args:
        crop_size: side of the square output crop, in pixels.
        crop_scale: range of the crop's area as a fraction of the image's area.
        horizontal_flip: flip left-right with probability 0.5.
        color_distortion: SimCLR colour distortion of strength ``color_jitter``: with probability 0.8 a colour
            jitter of brightness, contrast and saturation ``0.8 * s`` and hue ``0.2 * s``, then grey scale with
            probability 0.2.
        color_jitter: the strength ``s`` above.
        gaussian_blur: with probability 0.5, a Gaussian blur with sigma drawn from ``[0.1, 2.0]`` and a kernel of
            about a tenth of the crop (odd, at least 3).
        normalization: per-channel ``(mean, std)`` applied after scaling to ``[0, 1]``.

    Returns:
        A transform mapping an image to a float tensor ``[3, crop_size, crop_size]``.
    """
    check_crop_size(crop_size)
    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    steps: list[v2.Transform] = [
        # Work on uint8 tensors from the start: torchvision's v2 kernels are fastest there.
        v2.ToImage(),
        v2.RandomResizedCrop(crop_size, scale=crop_scale, antialias=True),
    ]
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if color_distortion:
        s = color_jitter
        steps += [
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
    if gaussian_blur:
        kernel = max(3, int(0.1 * crop_size) // 2 * 2 + 1)
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    steps += _to_normalized_float(normalization)
    return v2.Compose(steps)


def make_eval_transforms(
    crop_size: int = 224,
    resize_ratio: float = 256 / 224,
    normalization: Normalization = IMAGENET_NORMALIZATION,
) -> v2.Compose:
    """The deterministic evaluation transform: resize the short side, then take the central square.

    Args:
        crop_size: side of the square output crop, in pixels.
        resize_ratio: the short side is resized (bicubic) to ``int(crop_size * resize_ratio)`` before the centre
            crop; the ImageNet convention is 256 / 224. Use 1.0 to crop the largest central square.
        normalization: per-channel ``(mean, std)`` applied after scaling to ``[0, 1]``.

    Returns:
        A transform mapping an image to a float tensor ``[3, crop_size, crop_size]``.
    """
    check_crop_size(crop_size)
    resize = int(crop_size * resize_ratio)
    if resize < crop_size:
        raise ValueError(f"resize_ratio must be >= 1 (the resized short side {resize} < crop_size {crop_size})")
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(crop_size),
            *_to_normalized_float(normalization),
        ]
    )


def _to_normalized_float(normalization: Normalization) -> list[v2.Transform]:
    mean, std = normalization
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
