"""The anticipation eval's data: EK100 (or the built-in anticipation digits) segments, classes, clips and loaders.

Training clips get the official training augmentation (random resized crop with aspect ratio in [3/4, 4/3], a
horizontal flip with probability 0.5, optional RandAugment / motion shift / erasing); validation clips the
official evaluation transform (short side resized to 256/224 of the crop, centre crop). An unreadable training
clip is replaced by a random other one; an unreadable validation clip is skipped and listed, so that the metrics
count each readable action once (see :class:`jepa.data.RobustDataset`).
"""

import logging
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader

from evals.loaders import train_loader, val_loader
from jepa.config.anticipation import AnticipationConfig
from jepa.video.epickitchens import ActionClasses, AnticipationClips, read_ek100_csv
from jepa.video.transforms import VideoEvalTransform, VideoTrainTransform

logger = logging.getLogger(__name__)

TRAIN_ASPECT_RATIO = (3 / 4, 4 / 3)  # the official anticipation transform's


def split_files(cfg: AnticipationConfig, split: Literal["train", "val"]) -> tuple[Path, Path, int]:
    """``(base_path, annotation CSV, file_format)`` of ``split``; the built-in set is generated on first use."""
    d = cfg.data
    if d.is_builtin:
        from jepa.video.anticipation_digits import standard_anticipation_digits

        base, csv = standard_anticipation_digits(d.root_path, size=cfg.resolution, split=split)
        return base, csv, 1
    listed = d.dataset_train if split == "train" else d.dataset_val
    assert d.base_path is not None and listed is not None  # required by the config for EK100
    return Path(d.base_path), Path(listed), d.file_format


def make_datasets(cfg: AnticipationConfig) -> tuple[AnticipationClips, AnticipationClips, ActionClasses]:
    """The training and validation clips and the classes (those of the training segments)."""
    d, seed = cfg.data, cfg.pretrain.seed
    train_base, train_csv, train_format = split_files(cfg, "train")
    val_base, val_csv, val_format = split_files(cfg, "val")
    train_segments = read_ek100_csv(train_csv)
    classes = ActionClasses.from_training(train_segments)
    val_all = read_ek100_csv(val_csv)
    val_segments = classes.keep(val_all)
    if len(val_segments) < len(val_all):
        logger.info("%s: %d of %d validation segments are of actions never seen in training: not scored (as "
                    "officially)", val_csv, len(val_all) - len(val_segments), len(val_all))  # fmt: skip
    if not val_segments:
        raise ValueError(f"{val_csv}: no validation segment is of an action seen in training ({train_csv})")

    def clips(split: Literal["train", "val"], segments, base: Path, file_format: int, transform) -> AnticipationClips:
        return AnticipationClips(
            segments, classes, base_path=base, file_format=file_format, frames_per_clip=d.frames_per_clip,
            fps=d.frames_per_second, anticipation_time=d.anticipation_times(split),
            anticipation_point=d.anticipation_points(split), transform=transform, decoder=d.decoder,
            on_error="random" if split == "train" else "skip", seed=seed,
        )  # fmt: skip

    train = clips("train", train_segments, train_base, train_format, VideoTrainTransform(
        crop_size=cfg.resolution, random_resize_scale=d.random_resize_scale,
        random_resize_aspect_ratio=TRAIN_ASPECT_RATIO, horizontal_flip=True, motion_shift=d.motion_shift,
        auto_augment=d.auto_augment, reprob=d.reprob,
    ))  # fmt: skip
    val = clips("val", val_segments, val_base, val_format,
                VideoEvalTransform(crop_size=cfg.resolution, short_side_ratio=256 / 224))  # fmt: skip
    return train, val, classes


def make_loaders(
    cfg: AnticipationConfig, train: AnticipationClips, val: AnticipationClips, rank: int, world_size: int
) -> tuple[DataLoader, DataLoader]:
    """Shuffled, per-sample seeded training batches and exact per-rank validation shards (see
    :mod:`evals.loaders`); a batch is ``(clips [B, C, T, H, W], labels [B, 3], anticipation times [B], seeds or
    indices [B])``."""
    o, d = cfg.optimization, cfg.data
    pin = d.pin_memory and torch.cuda.is_available()
    return (
        train_loader(train, batch_size=o.batch_size, seed=cfg.pretrain.seed, rank=rank, world_size=world_size,
                     num_workers=d.num_workers, pin_memory=pin),
        val_loader(val, batch_size=o.batch_size, rank=rank, world_size=world_size, num_workers=d.num_workers,
                   pin_memory=pin),
    )  # fmt: skip
