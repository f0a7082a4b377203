"""Video transforms for V-JEPA pretraining and frozen evaluation.

Clips come in as uint8 ``[T, H, W, 3]`` (a tensor or a numpy array, as decoders return them) and go out as
normalised float tensors ``[3, T, crop_size, crop_size]``. Every random choice is made once per clip, so all frames
of a clip get the same crop, flip, RandAugment ops and erased box: the clip stays a consistent video. Randomness
comes from torch's global generator, and Python's ``random`` for timm's augmentations, the two generators
:class:`jepa.data.sampling.SeededDataset` seeds per sample.
"""

import math
import random
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from jepa.data.transforms import IMAGENET_NORMALIZATION, Normalization, check_crop_size

if TYPE_CHECKING:
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing

# The RandAugment policy of V-JEPA's frozen video evaluation (``auto_augment: true`` in its eval configs).
DEFAULT_RAND_AUGMENT = "rand-m7-n4-mstd0.5-inc1"

Clip = Tensor | np.ndarray


def _frames_tchw(clip: Clip) -> Tensor:
    """A uint8 clip ``[T, H, W, 3]`` as a uint8 tensor ``[T, 3, H, W]`` (a view when possible)."""
    if isinstance(clip, np.ndarray):
        clip = torch.from_numpy(clip)
    if not isinstance(clip, Tensor):
        raise TypeError(f"a clip must be a tensor or numpy array [T, H, W, 3], got {type(clip).__name__}")
    if clip.dim() != 4 or clip.shape[-1] != 3:
        raise ValueError(f"a clip must be [T, H, W, 3], got shape {tuple(clip.shape)}")
    if clip.dtype != torch.uint8:
        raise TypeError(f"a clip must be uint8, got {clip.dtype}")
    return clip.permute(0, 3, 1, 2)


def _normalize(frames: Tensor, normalization: Normalization) -> Tensor:
    """uint8 ``[T, 3, H, W]`` to normalised float ``[3, T, H, W]``."""
    mean, std = normalization
    # Reordered while still uint8 (a quarter of the bytes), then one float tensor normalised in place: the same
    # per-element arithmetic as ``TF.normalize(x / 255)`` (bit for bit), without two float copies.
    x = frames.permute(1, 0, 2, 3).contiguous().float().div_(255.0)
    x.sub_(torch.tensor(mean).view(3, 1, 1, 1)).div_(torch.tensor(std).view(3, 1, 1, 1))
    return x


def _check_normalization(normalization: Normalization) -> Normalization:
    mean, std = normalization
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalization must be ((3 means), (3 positive stds)), got {normalization!r}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


class VideoTrainTransform:
    """The V-JEPA training augmentation of a clip: one random resized crop, flip, RandAugment and erasing per clip.

    Steps, in order: a random resized crop (one box for the whole clip, or with ``motion_shift`` a box that moves),
    bilinear resize to ``crop_size``; a horizontal flip of the whole clip with probability 0.5; RandAugment with the
    same ops and magnitudes on every frame; scaling to ``[0, 1]`` and normalisation; random erasing of the same box
    with the same noise in every frame. The keyword names are those of the official ``data_aug`` config section.

    Args:
        crop_size: side of the square output frames, in pixels.
        random_resize_scale: range of the crop's area as a fraction of the frame's area.
        random_resize_aspect_ratio: range of the crop's width / height (log-uniform, as torchvision draws it).
        horizontal_flip: flip the clip left-right with probability 0.5.
        motion_shift: draw two crop boxes and move the box linearly from the first (at frame 0) to the second (at
            the last frame): each of top, left, height and width is interpolated and truncated to an int per frame,
            as the official ``random_resized_crop_with_shift`` does. This simulates camera motion.
        auto_augment: RandAugment on every frame with the same ops: ``True`` for V-JEPA's policy
            ``"rand-m7-n4-mstd0.5-inc1"``, or a timm RandAugment config string; ``False`` for none.
        reprob: probability of timm's ``RandomErasing`` (mode ``"pixel"``), one box per clip.
        normalization: per-channel ``(mean, std)`` applied after scaling to ``[0, 1]``.

    Call with a uint8 clip ``[T, H, W, 3]``; returns a float tensor ``[3, T, crop_size, crop_size]``.
    """

    rand_augment: "RandAugment | None"
    random_erasing: "RandomErasing | None"

    def __init__(
        self,
        crop_size: int = 224,
        random_resize_scale: tuple[float, float] = (0.3, 1.0),
        random_resize_aspect_ratio: tuple[float, float] = (0.75, 1.35),
        horizontal_flip: bool = True,
        motion_shift: bool = False,
        auto_augment: bool | str = False,
        reprob: float = 0.0,
        normalization: Normalization = IMAGENET_NORMALIZATION,
    ) -> None:
        check_crop_size(crop_size)
        lo, hi = random_resize_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"random_resize_scale must satisfy 0 < min <= max <= 1, got {random_resize_scale}")
        a_lo, a_hi = random_resize_aspect_ratio
        if not 0.0 < a_lo <= a_hi:
            raise ValueError(
                f"random_resize_aspect_ratio must satisfy 0 < min <= max, got {random_resize_aspect_ratio}"
            )
        if not 0.0 <= reprob <= 1.0:
            raise ValueError(f"reprob must lie in [0, 1], got {reprob}")
        self.crop_size = crop_size
        self.scale = [float(lo), float(hi)]
        self.ratio = [float(a_lo), float(a_hi)]
        self.horizontal_flip = bool(horizontal_flip)
        self.motion_shift = bool(motion_shift)
        self.normalization = _check_normalization(normalization)
        self.reprob = float(reprob)

        self.rand_augment = None
        if auto_augment:
            from timm.data.auto_augment import rand_augment_transform

            config = DEFAULT_RAND_AUGMENT if auto_augment is True else str(auto_augment)
            mean = self.normalization[0]
            hparams = dict(
                translate_const=int(crop_size * 0.45),
                img_mean=tuple(min(255, round(255 * m)) for m in mean),
                interpolation=Image.Resampling.BICUBIC,
            )
            self.rand_augment = rand_augment_transform(config, hparams)
        self.random_erasing = None
        if self.reprob > 0:
            from timm.data.random_erasing import RandomErasing

            self.random_erasing = RandomErasing(probability=self.reprob, mode="pixel", device="cpu")

    def __call__(self, clip: Clip) -> Tensor:
        frames = _frames_tchw(clip)
        frames = self._crop(frames)
        if self.horizontal_flip and float(torch.rand(())) < 0.5:
            frames = frames.flip(-1)
        if self.rand_augment is not None:
            frames = self._rand_augment(frames, self.rand_augment)
        x = _normalize(frames, self.normalization)
        if self.random_erasing is not None:
            x = self._erase(x, self.random_erasing)
        return x

    def _crop(self, frames: Tensor) -> Tensor:
        """One random resized crop for all frames (or a moving one); uint8 ``[T, 3, s, s]``."""
        size = [self.crop_size, self.crop_size]
        box = v2.RandomResizedCrop.get_params(frames, self.scale, self.ratio)
        if not self.motion_shift:
            return TF.resized_crop(frames, *box, size=size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        end = v2.RandomResizedCrop.get_params(frames, self.scale, self.ratio)
        num = frames.shape[0]
        # Per frame (top, left, height, width) on the line from `box` to `end`, truncated as the official code does.
        path = torch.stack([torch.linspace(a, b, num) for a, b in zip(box, end)], dim=1).long().tolist()
        out = [
            TF.resized_crop(f, *p, size=size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            for f, p in zip(frames, path)
        ]
        return torch.stack(out)

    def _rand_augment(self, frames: Tensor, ra: "RandAugment") -> Tensor:
        """timm's RandAugment with one op sequence for the whole clip, on uint8 ``[T, 3, s, s]``.

        timm's ``RandAugment.__call__`` draws its ops from numpy's global generator, which our per-sample seeding
        does not cover, so the ops are drawn here from torch's generator (with or without replacement, as timm
        does). Each op draws its application and magnitude from Python's ``random``; the state of ``random`` is set
        to the same value before every frame, so every frame gets the same ops with the same magnitudes, and
        ``random`` ends in the state one frame leaves behind.
        """
        if ra.choice_weights is None:
            picks = torch.randint(len(ra.ops), (ra.num_layers,)).tolist()
        else:
            weights = torch.as_tensor(ra.choice_weights, dtype=torch.float64)
            picks = torch.multinomial(weights, ra.num_layers, replacement=False).tolist()
        ops = [ra.ops[i] for i in picks]
        state = random.getstate()
        out = []
        for frame in frames:
            random.setstate(state)
            image = Image.fromarray(frame.permute(1, 2, 0).numpy())
            for op in ops:
                image = op(image)
            out.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        return torch.stack(out)

    def _erase(self, x: Tensor, random_erasing: "RandomErasing") -> Tensor:
        """timm's RandomErasing with the same box and the same noise in every frame of ``x`` ``[3, T, s, s]``.

        Before each frame, Python's ``random`` (box, probability) and torch's generator (noise) are set to the same
        states, so each call erases the same box with the same values; they end in the states one frame leaves.
        """
        py_state = random.getstate()
        torch_state = torch.get_rng_state()
        for t in range(x.shape[1]):
            random.setstate(py_state)
            torch.set_rng_state(torch_state)
            frame = x[:, t].clone()
            x[:, t] = random_erasing(frame)
        return x


class VideoEvalTransform:
    """The deterministic evaluation transform: resize the short side, then take one or more square views.

    The short side is resized (bilinear, antialiased) to ``int(crop_size * short_side_ratio)``. With one view the
    central square is taken; with ``num_views_per_clip = n > 1`` the views are centred on the short side and spaced
    evenly along the long side, the first touching its start (left or top) and the last its end (right or bottom);
    ``n = 3`` gives left / centre / right for landscape frames.

    Args:
        crop_size: side of the square views, in pixels.
        short_side_ratio: short side after resizing, relative to ``crop_size`` (>= 1).
        num_views_per_clip: spatial views per clip.
        normalization: per-channel ``(mean, std)`` applied after scaling to ``[0, 1]``.

    Call with a uint8 clip ``[T, H, W, 3]``; returns a float tensor ``[3, T, crop_size, crop_size]``, or with
    several views a list of them, in order along the long side.
    """

    def __init__(
        self,
        crop_size: int = 224,
        short_side_ratio: float = 256 / 224,
        num_views_per_clip: int = 1,
        normalization: Normalization = IMAGENET_NORMALIZATION,
    ) -> None:
        check_crop_size(crop_size)
        self.short_side = int(crop_size * short_side_ratio)
        if self.short_side < crop_size:
            raise ValueError(f"short_side_ratio must be >= 1 (short side {self.short_side} < crop_size {crop_size})")
        if num_views_per_clip < 1:
            raise ValueError(f"num_views_per_clip must be >= 1, got {num_views_per_clip}")
        self.crop_size = crop_size
        self.num_views_per_clip = int(num_views_per_clip)
        self.normalization = _check_normalization(normalization)

    def view_offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """The ``(top, left)`` of each view in a frame already resized to ``height x width``."""
        c = self.crop_size
        n = self.num_views_per_clip
        centre_top, centre_left = (height - c) // 2, (width - c) // 2
        if n == 1:
            return [(centre_top, centre_left)]
        along_width = width >= height
        span = (width if along_width else height) - c
        steps = [math.floor(i * span / (n - 1) + 0.5) for i in range(n)]
        return [(centre_top, s) if along_width else (s, centre_left) for s in steps]

    def __call__(self, clip: Clip) -> Tensor | list[Tensor]:
        """The view ``[3, T, crop_size, crop_size]``, or with several views the list of them (see :meth:`views`)."""
        views = self.views(clip)
        return views[0] if self.num_views_per_clip == 1 else views

    def views(self, clip: Clip) -> list[Tensor]:
        """Every view of ``clip`` (uint8 ``[T, H, W, 3]``), each ``[3, T, crop_size, crop_size]``, in order along the
        long side."""
        frames = _frames_tchw(clip)
        frames = TF.resize(frames, [self.short_side], interpolation=InterpolationMode.BILINEAR, antialias=True)
        height, width = frames.shape[-2:]
        c = self.crop_size
        return [
            _normalize(frames[..., top : top + c, left : left + c], self.normalization)
            for top, left in self.view_offsets(height, width)
        ]


def images_as_clips(x: Tensor, num_frames: int) -> Tensor:
    """Repeat images as static clips: ``[B, C, H, W]`` to ``[B, C, num_frames, H, W]`` (a view, no copy), so a
    video encoder can embed images (as V-JEPA's image evaluations do)."""
    if x.dim() != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(x.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return x.unsqueeze(2).expand(-1, -1, num_frames, -1, -1)
