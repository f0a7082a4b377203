"""What image and video transforms share: the normalisation constants and argument checks."""

from collections.abc import Sequence

Normalization = tuple[Sequence[float], Sequence[float]]

IMAGENET_NORMALIZATION: Normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def check_crop_size(crop_size: int) -> None:
    """Square crops only: non-square ones would need the ``(h, w)`` plumbing of the models and masks."""
    if isinstance(crop_size, bool) or not isinstance(crop_size, int):
        raise TypeError(f"crop_size must be an int (square crops only), got {crop_size!r}")
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
