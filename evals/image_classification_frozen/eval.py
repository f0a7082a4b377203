"""Frozen image classification (ImageNet-1K, Places205, iNaturalist 2021, built-in digits).

Data: ``root_path / image_folder / {train,val} / <class> / <image>`` (the official layout of all three), or the
built-in ``digits`` / ``mnist5k``. Training uses timm's transform (random resized crop, flip, AutoAugment
``original``, random erasing 0.25, bicubic); validation resizes the short side to ``resolution * 256 / 224`` and
takes the centre crop. A video encoder sees each image as a static clip of ``pretrain.frames_per_clip`` frames.
"""

from functools import partial

import torch
from timm.data import create_transform

from evals.loaders import make_loaders
from evals.probing import run_eval
from jepa.config.evals import EvalConfig
from jepa.data.transforms import IMAGENET_NORMALIZATION
from jepa.image.datasets import make_image_dataset
from jepa.image.transforms import make_eval_transforms


def make_train_transform(cfg: EvalConfig):
    aug = cfg.data_aug
    mean, std = IMAGENET_NORMALIZATION
    return create_transform(
        input_size=cfg.resolution,
        is_training=True,
        scale=aug.random_resize_scale,
        ratio=aug.random_resize_aspect_ratio,
        hflip=0.5 if aug.horizontal_flip in (None, True) else 0.0,
        auto_augment="original" if aug.auto_augment else None,
        interpolation="bicubic",
        re_prob=aug.reprob,
        re_mode="pixel",
        re_count=1,
        mean=tuple(mean),
        std=tuple(std),
    )


def make_datasets(cfg: EvalConfig):
    """The training split (None with ``val_only``: nothing is trained), the validation split, the classes."""
    d = cfg.data
    name = d.image_dataset.lower()
    kind = name if name in ("digits", "mnist5k") else "imagefolder"
    dataset = partial(
        make_image_dataset, kind, root_path=d.root_path, image_folder=d.image_folder, image_size=cfg.resolution,
        seed=cfg.pretrain.seed,
    )  # fmt: skip
    # Unreadable training images are replaced by random ones; unreadable validation images are skipped and
    # listed, so that the metrics count each readable image once (see jepa.data.RobustDataset).
    val = dataset(split="val", transform=make_eval_transforms(cfg.resolution), on_error="skip")
    if cfg.val_only:  # nothing is trained: the training split is not read
        return None, val, len(val.classes)
    train = dataset(split="train", transform=make_train_transform(cfg), on_error="random")
    num_classes = len(train.classes)
    if len(val.classes) != num_classes:
        raise ValueError(f"{d.dataset_name}: train has {num_classes} class folders but val has {len(val.classes)}")
    return train, val, num_classes


def make_data(cfg: EvalConfig, rank: int, world_size: int):
    train, val, num_classes = make_datasets(cfg)
    return (*make_loaders(cfg, train, val, rank, world_size), num_classes)


def main(cfg: EvalConfig, device: torch.device | str = "cpu", *, rank: int = 0, world_size: int = 1, resume=False):
    """Run the eval; returns the results summary (also written to ``results.json``)."""
    return run_eval(cfg, make_data, device, rank=rank, world_size=world_size, resume=resume)
