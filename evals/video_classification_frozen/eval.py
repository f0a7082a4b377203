"""Frozen video classification (Kinetics-400, Something-Something v2, moving digits, ...).

Training samples ``num_segments`` clips per video when ``attend_across_segments`` (else one), one spatial view,
at random positions within equal segments of the video, with the official training augmentation. Validation
samples ``num_segments`` clips at fixed positions (centred in equal segments) and ``num_views_per_segment`` spatial
views per clip: the short side resized to the crop size and square views spaced along the long side (one view: the
centre crop of a 256/224 resize). Predictions are softmaxes averaged over the views (see :mod:`evals.probing`).
"""

from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from evals.loaders import make_loaders
from evals.probing import run_eval
from jepa.config.evals import EvalConfig
from jepa.video.datasets import VideoDataset
from jepa.video.transforms import VideoEvalTransform, VideoTrainTransform


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def collate_clips(samples: list[tuple]) -> tuple[Tensor, Tensor, Tensor]:
    """``(clips, label, index)`` samples -> ``(x [S, V, B, C, T, H, W], labels [B], indices [B])``; a sample's
    ``clips`` is one clip or a list of ``S`` clips, and a clip one view or a list of ``V`` views."""
    per_sample = [torch.stack([torch.stack(_as_list(views)) for views in _as_list(clips)]) for clips, *_ in samples]
    x = torch.stack(per_sample, dim=2)
    labels = torch.tensor([int(s[1]) for s in samples], dtype=torch.int64)
    indices = torch.tensor([int(s[2]) for s in samples], dtype=torch.int64)
    return x, labels, indices


def annotation_files(cfg: EvalConfig, split: Literal["train", "val"]) -> tuple[list[str], int | None]:
    """The split's annotation CSVs and, for the built-in moving digits, the number of classes."""
    d = cfg.data
    if d.dataset_type.lower() == "moving_digits":
        from jepa.video.moving_digits import standard_moving_digits

        frames = d.frames_per_clip * cfg.frame_step * d.num_segments
        digit, motion = standard_moving_digits(d.root_path, num_frames=frames, size=cfg.resolution, split=split)
        return [str(digit if d.label == "digit" else motion)], (10 if d.label == "digit" else 4)
    paths = d.dataset_train if split == "train" else d.dataset_val
    return _as_list(paths), None


def make_datasets(cfg: EvalConfig) -> tuple[VideoDataset | None, VideoDataset, int]:
    """The training split (None with ``val_only``: nothing is trained), the validation split, the classes."""
    d, aug, opt = cfg.data, cfg.data_aug, cfg.optimization
    val_csvs, builtin_classes = annotation_files(cfg, "val")
    dataset = partial(
        VideoDataset,
        frames_per_clip=d.frames_per_clip,
        frame_step=cfg.frame_step,
        duration=cfg.pretrain.clip_duration,
        allow_clip_overlap=False,
        decoder=d.decoder,
        seed=cfg.pretrain.seed,
    )
    # An unreadable training video is replaced by a random one; an unreadable validation video is skipped and
    # listed, so that the metrics count each readable video once (see jepa.data.RobustDataset).
    train = None
    if not cfg.val_only:
        train = dataset(
            annotation_files(cfg, "train")[0],
            num_clips=d.num_segments if opt.attend_across_segments else 1,
            random_clip_sampling=True,
            on_error="random",
            transform=VideoTrainTransform(
                crop_size=cfg.resolution,
                random_resize_scale=aug.random_resize_scale,
                random_resize_aspect_ratio=aug.random_resize_aspect_ratio,
                horizontal_flip=bool(aug.horizontal_flip),
                auto_augment=aug.auto_augment,
                reprob=aug.reprob,
            ),
        )
    views = d.num_views_per_segment
    val = dataset(
        val_csvs,
        num_clips=d.num_segments,
        random_clip_sampling=False,
        on_error="skip",
        transform=VideoEvalTransform(
            crop_size=cfg.resolution, short_side_ratio=1.0 if views > 1 else 256 / 224, num_views_per_clip=views
        ),
    )
    num_classes = builtin_classes or d.num_classes
    if num_classes is None:
        raise ValueError("data.num_classes must be given for annotation-CSV data")
    for name, split in (("dataset_train", train), ("dataset_val", val)):
        if split is None:
            continue
        bad = split.targets[(split.targets < 0) | (split.targets >= num_classes)]
        if len(bad):
            raise ValueError(f"data.{name}: label {int(bad[0])} is outside [0, num_classes={num_classes})")
    return train, val, num_classes


def make_data(cfg: EvalConfig, rank: int, world_size: int):
    train, val, num_classes = make_datasets(cfg)
    return (*make_loaders(cfg, train, val, rank, world_size, collate_clips), num_classes)


def main(cfg: EvalConfig, device: torch.device | str = "cpu", *, rank: int = 0, world_size: int = 1, resume=False):
    """Run the eval; returns the results summary (also written to ``results.json``)."""
    return run_eval(cfg, make_data, device, rank=rank, world_size=world_size, resume=resume)
