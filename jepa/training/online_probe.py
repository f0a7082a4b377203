"""A cheap online k-NN probe during pretraining (``meta.eval_freq``), so a run's learning curve is a number.

Every ``meta.eval_freq`` epochs (and at the last one) rank 0 encodes a fixed subset of a labelled train split and
of a held-out labelled split with the target encoder, mean-pools the tokens, standardises them with the train
split's per-channel mean and std, and scores a k-nearest-neighbour classifier (cosine similarity, majority vote of
``k`` neighbours, ties to the nearest): ``knn_acc`` on the held-out split, logged and appended to
``<folder>/<write_tag>_online_probe.csv``. The encoder at initialisation is scored once at the start
(``epoch 0``), the baseline the curve should leave.

Where the splits come from: images: the data set's ``train`` and ``val`` splits (an ImageFolder's ``train/`` and
``val/``, a built-in set's split); video: ``moving_digits`` generates a val split; a ``VideoDataset`` run probes its
training CSVs' labels against ``data.val_datasets``. Without a labelled held-out split the probe is off (logged
once): a probe scored on the data it was fitted on measures nothing.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from jepa.config.pretrain import PretrainConfig
from jepa.data.robust import DropSkipped, split_skipped

logger = logging.getLogger(__name__)


@dataclass
class ProbeSplits:
    train: Any
    val: Any


def probe_splits(cfg: PretrainConfig) -> ProbeSplits | None:
    """The labelled splits the online probe reads, or None (with the reason logged) when there is no held-out one."""
    d = cfg.data
    if not cfg.video_data:
        from jepa.image.datasets import make_image_dataset
        from jepa.image.transforms import make_eval_transforms

        transform = make_eval_transforms(crop_size=d.crop_size, resize_ratio=1.0)
        kw = dict(root_path=d.root_path, image_folder=d.image_folder, transform=transform, image_size=d.crop_size)
        try:
            val = make_image_dataset(d.dataset_type, split="val", seed=cfg.meta.seed, on_error="skip", **kw)
        except (FileNotFoundError, ValueError) as e:
            logger.info("online probe off: no labelled val split (%s)", e)
            return None
        train = make_image_dataset(d.dataset_type, split="train", seed=cfg.meta.seed, on_error="skip", **kw)
        return ProbeSplits(train, val)
    from jepa.training.builders import video_annotation_files
    from jepa.video.datasets import VideoDataset
    from jepa.video.transforms import VideoEvalTransform

    if d.dataset_type.lower() == "moving_digits":
        train_csvs, val_csvs = video_annotation_files(cfg, "train"), video_annotation_files(cfg, "val")
    elif d.val_datasets:
        train_csvs, val_csvs = list(d.datasets), list(d.val_datasets)
    else:
        logger.info("online probe off: a VideoDataset run needs data.val_datasets (labelled held-out CSVs)")
        return None
    transform = VideoEvalTransform(crop_size=d.crop_size, short_side_ratio=1.0)

    def clips(csvs: list[str]) -> VideoDataset:
        return VideoDataset(
            csvs, frames_per_clip=d.num_frames, frame_step=d.frame_step or 1, fps=d.fps, duration=d.clip_duration,
            random_clip_sampling=False, transform=transform, decoder=d.decoder, on_error="skip",
        )  # fmt: skip

    return ProbeSplits(clips(train_csvs), clips(val_csvs))


def _subset(dataset: Any, limit: int) -> Any:
    """At most ``limit`` samples spread evenly over ``dataset`` (a fixed choice: every probe sees the same)."""
    n = len(dataset)
    if n <= limit:
        return dataset
    return Subset(dataset, torch.linspace(0, n - 1, limit).round().long().tolist())


@torch.no_grad()
def pooled_features(encoder: nn.Module, dataset: Any, device: torch.device, batch_size: int = 128):
    """Mean-pooled encoder tokens ``[N, D]`` (float32, on the CPU) and labels ``[N]``; unreadable samples skipped."""
    # Its own generator: the probe must not consume the global RNG (drop path), or resume would stop being exact.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=DropSkipped(),
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    feats, labels = [], []
    for batch in loader:
        batch, _ = split_skipped(batch)
        if batch is None:
            continue
        feats.append(encoder(batch[0].to(device)).mean(dim=1).float().cpu())
        labels.append(torch.as_tensor(batch[1]))
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, k: int = 20) -> float:
    """Accuracy of a cosine k-NN classifier: each val sample takes the most frequent label of its ``k`` most similar
    train samples (ties go to the label of the most similar neighbour among the tied ones)."""
    a, b = F.normalize(train_x, dim=1), F.normalize(val_x, dim=1)
    k = min(k, len(train_y))
    sim, idx = (b @ a.T).topk(k, dim=1)  # neighbours in order of similarity
    votes = train_y[idx]  # [V, k]
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    counts = F.one_hot(votes, num_classes).sum(dim=1).float()  # [V, C]
    # Break ties towards the nearest: a tiny bonus that decreases with the neighbour's rank.
    bonus = torch.zeros_like(counts).scatter_reduce_(
        1, votes, (1.0 - torch.arange(k, dtype=torch.float32) / k).expand_as(votes) * 1e-3, reduce="amax"
    )
    pred = (counts + bonus).argmax(dim=1)
    return float((pred == val_y).float().mean())


class OnlineProbe:
    """Scores the target encoder with :func:`knn_accuracy` on fixed subsets of :func:`probe_splits`."""

    COLUMNS = ["epoch", "step", "knn_acc", "train_samples", "val_samples"]

    def __init__(self, splits: ProbeSplits, every: int, device: torch.device, train_samples: int = 2000,
                 val_samples: int = 1000, k: int = 20) -> None:  # fmt: skip
        self.train, self.val = _subset(splits.train, train_samples), _subset(splits.val, val_samples)
        self.every, self.device, self.k = every, device, k

    def due(self, epoch: int, last_epoch: int) -> bool:
        return epoch == 0 or epoch % self.every == 0 or epoch == last_epoch

    def score(self, encoder: nn.Module) -> dict[str, float]:
        was_training = encoder.training
        encoder.eval()
        try:
            tx, ty = pooled_features(encoder, self.train, self.device)
            vx, vy = pooled_features(encoder, self.val, self.device)
        finally:
            encoder.train(was_training)
        # Centred on the train mean and scaled per channel: pooled ViT features share a large common component
        # (position table, final norm) that would otherwise dominate every cosine similarity.
        mean, std = tx.mean(dim=0), tx.std(dim=0).clamp_min(1e-6)
        tx, vx = (tx - mean) / std, (vx - mean) / std
        return {"knn_acc": knn_accuracy(tx, ty, vx, vy, self.k), "train_samples": len(ty), "val_samples": len(vy)}


def make_online_probe(cfg: PretrainConfig, device: torch.device) -> OnlineProbe | None:
    """The probe ``meta.eval_freq`` asks for, or None (off, or no labelled held-out split)."""
    if cfg.meta.eval_freq is None:
        return None
    splits = probe_splits(cfg)
    return None if splits is None else OnlineProbe(splits, cfg.meta.eval_freq, device)


def probe_log_path(folder: Path, tag: str) -> Path:
    return folder / f"{tag}_online_probe.csv"
