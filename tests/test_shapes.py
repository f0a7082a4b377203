"""The generated textured-shapes data (jepa.data.shapes): layout, determinism, labels that mean what they say."""

import numpy as np
import pytest

from jepa.data.shapes import (
    SHAPES,
    _rng,
    image_shape_mask,
    make_shape_clips,
    make_shape_images,
    render_moving_shape,
    render_shape,
)


def test_images_are_deterministic_and_differ_across_splits_and_indices():
    a = render_shape(3, 32, _rng(0, "train", 5))
    assert a.shape == (32, 32) and a.dtype == np.uint8
    assert np.array_equal(a, render_shape(3, 32, _rng(0, "train", 5)))
    assert not np.array_equal(a, render_shape(3, 32, _rng(0, "val", 5)))
    assert not np.array_equal(a, render_shape(3, 32, _rng(1, "train", 5)))


def test_image_folder_layout_is_balanced(tmp_path):
    from jepa.image.datasets import ImageFolder

    root = make_shape_images(tmp_path / "shapes", num_train=20, num_val=10, size=32)
    train = ImageFolder(root / "train")
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(SHAPES)
    assert len(train) == 20
    counts = np.bincount(np.asarray(train.targets), minlength=len(SHAPES))
    assert (counts == 2).all()
    assert sum(1 for _ in (root / "val").rglob("*.png")) == 10


@pytest.mark.parametrize("direction,axis,sign", [(0, 1, 1), (1, 1, -1), (2, 0, 1), (3, 0, -1)])
def test_a_clip_moves_in_its_direction(direction, axis, sign):
    clip = render_moving_shape(7, direction, 16, 32, _rng(0, "train", 3)).astype(float)
    # The ring is the part that differs from the static background: compare the first and last frames' centroids.
    moving = np.abs(clip - np.median(clip, axis=0)) > 30
    first, last = (np.argwhere(moving[t]).mean(0) for t in (0, 15))
    assert sign * (last[axis] - first[axis]) > 4
    assert abs(last[1 - axis] - first[1 - axis]) < 2


def test_clip_csvs_list_the_same_clips_with_both_labels(tmp_path):
    root = make_shape_clips(tmp_path / "clips", num_train=8, num_val=4, frames=8, size=32)
    shape = [line.split() for line in (root / "train_shape.csv").read_text().splitlines()]
    motion = [line.split() for line in (root / "train_motion.csv").read_text().splitlines()]
    assert [p for p, _ in shape] == [p for p, _ in motion] and len(shape) == 8
    assert [int(y) for _, y in shape] == [k % 10 for k in range(8)]
    from jepa.video.decoding import make_decoder

    frames = make_decoder("pyav").read(shape[0][0], range(8))
    assert frames.shape[:3] == (8, 32, 32)


def _two_levels(img: np.ndarray) -> bool:
    """Nine pixels in ten within 4 noise sigmas (0.03 of 255) of the median of their half: one fill for the shape, one
    for the background (the rest are the shape's anti-aliased edge)."""
    x = img.astype(float).ravel()
    mid = (x.min() + x.max()) / 2
    lo, hi = np.median(x[x < mid]), np.median(x[x >= mid])
    return bool((np.minimum(np.abs(x - lo), np.abs(x - hi)) <= 4 * 0.03 * 255).mean() >= 0.9)


def test_flat_style_keeps_the_shape_and_motion_and_drops_the_textures():
    for k in range(5):
        flat = render_shape(k, 32, _rng(0, "train", k), "flat")
        assert _two_levels(flat)
        # Same shape, same place: the draws before the fills are the textured image's, so the shape's mask splits
        # the flat image into its two levels.
        mask = image_shape_mask(k, 32, _rng(0, "train", k))
        inside, outside = flat[mask > 0.99].astype(float), flat[mask < 0.01].astype(float)
        assert abs(inside.mean() - outside.mean()) > 20
        assert inside.std() < 12 and outside.std() < 12  # the pixel noise alone: 0.03 of 255 is 7.7
    assert not all(_two_levels(render_shape(k, 32, _rng(0, "train", k))) for k in range(5))
    clip = render_moving_shape(7, 0, 16, 32, _rng(0, "train", 3), "flat").astype(float)
    assert all(_two_levels(frame) for frame in clip)
    moving = np.abs(clip - np.median(clip, axis=0)) > 30
    first, last = (np.argwhere(moving[t]).mean(0) for t in (0, 15))
    assert last[1] - first[1] > 4 and abs(last[0] - first[0]) < 2
    with pytest.raises(ValueError, match="style"):
        render_shape(0, 32, _rng(0, "train", 0), "noisy")  # type: ignore[arg-type]
