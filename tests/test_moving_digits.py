"""Tests of the built-in moving-digit videos: files, labels, motion, splits and regeneration."""

import json

import av
import numpy as np
import pytest

from jepa.image.datasets import BuiltinDigits
from jepa.video.moving_digits import make_moving_digits, render_moving_digit

# (dy, dx) of each motion label: 0 right, 1 left, 2 down, 3 up.
STEPS = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}


def _read_csv(path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        video, label = line.split(" ")
        rows.append((video, int(label)))
    return rows


def _decode_grey(path) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24")[..., 0] for f in container.decode(video=0)])


def _centres(frames: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre ``(y, x)`` of each frame ``[T, H, W]``."""
    w = frames.astype(np.float64)
    ys, xs = np.indices(frames.shape[1:])
    total = w.sum(axis=(1, 2))
    return np.stack([(w * ys).sum(axis=(1, 2)) / total, (w * xs).sum(axis=(1, 2)) / total], axis=1)


@pytest.fixture(scope="module")
def digits_train(tmp_path_factory):
    out = tmp_path_factory.mktemp("moving_digits")
    return out, make_moving_digits(out, num_videos=8, num_frames=8, split="train", source="digits", seed=1)


def test_files_and_labels(digits_train):
    out, digit_csv = digits_train
    assert digit_csv == out / "train_digit.csv"
    digits, motions = _read_csv(digit_csv), _read_csv(out / "train_motion.csv")
    assert len(digits) == len(motions) == 8
    assert [p for p, _ in digits] == [p for p, _ in motions]
    assert all(p.startswith(str(out)) and p.endswith(".mp4") for p, _ in digits)
    assert all(0 <= d <= 9 for _, d in digits)
    assert sorted(m for _, m in motions) == [0, 0, 1, 1, 2, 2, 3, 3]  # balanced directions
    manifest = json.loads((out / "train_manifest.json").read_text())
    assert [v["digit"] for v in manifest["videos"]] == [d for _, d in digits]


def test_digits_move_in_the_labelled_direction(digits_train):
    out, _ = digits_train
    for path, direction in _read_csv(out / "train_motion.csv"):
        frames = _decode_grey(path)
        assert frames.shape == (8, 32, 32)
        assert frames.max() > 200  # the digit survives encoding
        shift = _centres(frames)[-1] - _centres(frames)[0]
        along = np.dot(shift, STEPS[direction])
        assert along > 4.0  # travels at least a quarter of the 32 px canvas ...
        assert abs(shift).sum() - along < 0.5  # ... and only along its direction


def test_decoded_frames_match_the_rendering(digits_train):
    out, _ = digits_train
    manifest = json.loads((out / "train_manifest.json").read_text())
    source = BuiltinDigits("digits", split="all", image_size=16)
    for video in manifest["videos"][:2]:
        image, label = source.load(video["source_index"])
        assert label == video["digit"]
        digit = np.asarray(image)[:, :, 0]
        rendered = render_moving_digit(digit, 32, 8, video["direction"], video["travel"], video["offset"])
        error = np.abs(_decode_grey(video["path"]).astype(int) - rendered.astype(int))
        assert error.mean() < 2.0 and error.max() < 48  # CRF 10 H.264 keeps the digit close to lossless


def test_regeneration_is_skipped_when_the_manifest_matches(digits_train):
    out, digit_csv = digits_train
    manifest = out / "train_manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert make_moving_digits(out, num_videos=8, num_frames=8, split="train", source="digits", seed=1) == digit_csv
    assert manifest.stat().st_mtime_ns == stamp
    # Different parameters: regenerated.
    make_moving_digits(out, num_videos=4, num_frames=8, split="train", source="digits", seed=2)
    assert len(_read_csv(digit_csv)) == 4 and manifest.stat().st_mtime_ns != stamp


def test_deterministic_and_splits_disjoint(tmp_path):
    kwargs = dict(num_videos=8, num_frames=4, size=28, source="mnist5k")
    make_moving_digits(tmp_path / "a", split="train", **kwargs)
    make_moving_digits(tmp_path / "b", split="train", **kwargs)
    make_moving_digits(tmp_path / "a", split="val", **kwargs)

    def videos(folder, split):
        return json.loads((tmp_path / folder / f"{split}_manifest.json").read_text())["videos"]

    a, b = videos("a", "train"), videos("b", "train")
    strip = [{k: v for k, v in x.items() if k != "path"} for x in a]
    assert strip == [{k: v for k, v in x.items() if k != "path"} for x in b]
    assert np.array_equal(_decode_grey(a[0]["path"]), _decode_grey(b[0]["path"]))
    assert not {v["source_index"] for v in a} & {v["source_index"] for v in videos("a", "val")}
    assert _decode_grey(a[0]["path"]).shape == (4, 28, 28)


def test_validation(tmp_path):
    with pytest.raises(ValueError, match="even"):
        make_moving_digits(tmp_path, num_videos=1, size=31, source="digits")
    with pytest.raises(ValueError, match="split"):
        make_moving_digits(tmp_path, num_videos=1, split="test", source="digits")
    with pytest.raises(ValueError, match="whitespace"):
        make_moving_digits(tmp_path / "a b", num_videos=1, source="digits")
