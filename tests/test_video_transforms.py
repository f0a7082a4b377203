"""Tests of the video transforms: shapes, one random choice per clip, determinism, evaluation views."""

import random

import numpy as np
import pytest
import torch

from jepa.video.transforms import IMAGENET_NORMALIZATION, VideoEvalTransform, VideoTrainTransform, images_as_clips

CROP = 32


def _clip(frames: int = 4, height: int = 40, width: int = 56, static: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if static:
        return torch.randint(0, 256, (1, height, width, 3), dtype=torch.uint8, generator=g).expand(frames, -1, -1, -1)
    return torch.randint(0, 256, (frames, height, width, 3), dtype=torch.uint8, generator=g)


def _seeded(transform, clip, seed: int):
    torch.manual_seed(seed)
    random.seed(seed)
    return transform(clip)


ALL_ON = dict(auto_augment=True, reprob=1.0, horizontal_flip=True)


@pytest.mark.parametrize("kwargs", [{}, ALL_ON, dict(ALL_ON, motion_shift=True)], ids=["plain", "aug", "aug-shift"])
def test_train_transform_shapes_and_determinism(kwargs):
    transform = VideoTrainTransform(crop_size=CROP, **kwargs)
    clip = _clip()
    out = _seeded(transform, clip, 1)
    assert out.shape == (3, 4, CROP, CROP) and out.dtype == torch.float32
    assert torch.equal(out, _seeded(transform, clip.numpy(), 1))  # numpy in, same result
    assert not torch.equal(out, _seeded(transform, clip, 2))


@pytest.mark.parametrize("kwargs", [{}, ALL_ON, dict(ALL_ON, auto_augment="rand-m9-n3-mstd0.5-inc1-tweights")])
def test_train_transform_treats_frames_alike(kwargs):
    # A clip of identical frames stays a clip of identical frames: one box, one flip, one op sequence, one erasure.
    transform = VideoTrainTransform(crop_size=CROP, **kwargs)
    clip = _clip(static=True)
    for seed in range(6):
        out = _seeded(transform, clip, seed)
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, out.shape[1]))


def test_train_transform_augments_are_active():
    clip = _clip(static=True)
    plain = VideoTrainTransform(crop_size=CROP, horizontal_flip=False)
    erased = VideoTrainTransform(crop_size=CROP, horizontal_flip=False, reprob=1.0)
    # Same seed, same crop: erasing changes a box of pixels (to noise) and leaves the rest alone.
    a, b = _seeded(plain, clip, 0), _seeded(erased, clip, 0)
    changed = (a != b).any(dim=0).any(dim=0)
    assert 0 < int(changed.sum()) < CROP * CROP
    # RandAugment with 4 ops at magnitude 7 changes the frames in most draws.
    auto = VideoTrainTransform(crop_size=CROP, horizontal_flip=False, auto_augment=True)
    assert sum(not torch.equal(_seeded(plain, clip, s), _seeded(auto, clip, s)) for s in range(4)) >= 2


def test_motion_shift_moves_the_box():
    clip = _clip(frames=6, static=True)
    out = _seeded(VideoTrainTransform(crop_size=CROP, motion_shift=True, horizontal_flip=False), clip, 0)
    assert not torch.equal(out[:, 0], out[:, -1])


def test_full_crop_is_the_resized_clip():
    # Scale and aspect ratio pinned to the whole frame: the crop is the frame itself, normalised.
    clip = _clip(height=CROP, width=CROP)
    transform = VideoTrainTransform(
        crop_size=CROP, random_resize_scale=(1.0, 1.0), random_resize_aspect_ratio=(1.0, 1.0), horizontal_flip=False
    )
    mean, std = (torch.tensor(v).view(3, 1, 1, 1) for v in IMAGENET_NORMALIZATION)
    expected = (clip.permute(3, 0, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(_seeded(transform, clip, 0), expected)


def test_eval_views():
    clip = _clip(frames=2, height=40, width=56)
    single = VideoEvalTransform(crop_size=CROP, short_side_ratio=1.25)(clip)
    assert isinstance(single, torch.Tensor) and single.shape == (3, 2, CROP, CROP)
    three = VideoEvalTransform(crop_size=CROP, short_side_ratio=1.25, num_views_per_clip=3)
    views = three(clip)
    assert len(views) == 3 and all(v.shape == (3, 2, CROP, CROP) for v in views)
    assert torch.equal(views[1], single)  # the middle view is the centre crop
    # Short side 40 -> 40 x 56 resized frame: views along the width, touching both ends, centred on the height.
    assert three.view_offsets(40, 56) == [(4, 0), (4, 12), (4, 24)]
    assert three.view_offsets(56, 40) == [(0, 4), (12, 4), (24, 4)]
    # Views are plain crops of the resized clip.
    two = VideoEvalTransform(crop_size=CROP, short_side_ratio=1.0, num_views_per_clip=2)
    portrait = two(_clip(height=48, width=32))
    assert len(portrait) == 2 and not torch.equal(portrait[0], portrait[1])
    torch.testing.assert_close(portrait[0][:, :, 16:], portrait[1][:, :, :16])


def test_validation():
    with pytest.raises(ValueError, match="random_resize_scale"):
        VideoTrainTransform(random_resize_scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="reprob"):
        VideoTrainTransform(reprob=2.0)
    with pytest.raises(TypeError, match="crop_size"):
        VideoEvalTransform(crop_size=(32, 32))
    with pytest.raises(ValueError, match="short_side_ratio"):
        VideoEvalTransform(short_side_ratio=0.5)
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        VideoEvalTransform(crop_size=CROP)(torch.zeros(4, 3, 40, 40, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        VideoEvalTransform(crop_size=CROP)(np.zeros((4, 40, 40, 3), dtype=np.float32))


def test_images_as_clips():
    x = torch.randn(2, 3, 8, 8)
    clips = images_as_clips(x, 4)
    assert clips.shape == (2, 3, 4, 8, 8)
    assert all(torch.equal(clips[:, :, t], x) for t in range(4))
    with pytest.raises(ValueError):
        images_as_clips(x[0], 4)
