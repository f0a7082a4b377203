"""Data loaders of the evals: shuffled, seeded, per-rank training shares and exact per-rank validation shards."""

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Subset

from jepa.data import DropSkipped
from jepa.data.sampling import EpochSampler, MapDataset, SeededDataset


def train_loader(
    dataset: MapDataset,
    *,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    num_workers: int,
    pin_memory: bool,
    collate_fn: Callable | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """Every rank gets ``len // world_size`` samples of a per-epoch permutation; each sample's augmentation is
    seeded from ``(seed, epoch, index)``, so a resumed epoch sees the same crops. Ranks get equal batch counts.
    ``drop_last`` drops each epoch's last, smaller batch (mixed batches must be of even size)."""
    sampler = EpochSampler(len(dataset), seed, shuffle=True, rank=rank, world_size=world_size)
    return DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(seed),
    )


def val_loader(
    dataset: MapDataset,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    num_workers: int,
    pin_memory: bool,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """Rank ``r`` evaluates samples ``r, r + world_size, ...``: every sample exactly once over all ranks (no
    padding with repeats, which would bias the metrics). Batches are :class:`jepa.data.PartialBatch`: a data set
    built with ``on_error="skip"`` marks its unreadable samples, which are dropped from their batch and listed
    with it, so that the metrics count exactly the readable samples."""
    return DataLoader(
        Subset(dataset, range(rank, len(dataset), world_size)),  # type: ignore[arg-type]  # any map-style set
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        collate_fn=DropSkipped(collate_fn),
    )


def make_loaders(
    cfg, train: MapDataset | None, val: MapDataset, rank: int, world_size: int, collate_fn: Callable | None = None
) -> tuple[DataLoader | None, DataLoader]:
    """The training and validation loaders of an eval config (see :func:`train_loader`, :func:`val_loader`); no
    training loader without a training set (``val_only``). With Mixup / CutMix the last, smaller training batch of
    an epoch is dropped (timm mixes even batches only)."""
    common = dict(
        batch_size=cfg.optimization.batch_size, rank=rank, world_size=world_size, num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_mem and torch.cuda.is_available(), collate_fn=collate_fn,
    )  # fmt: skip
    if train is None:
        return None, val_loader(val, **common)
    train_batches = train_loader(train, seed=cfg.pretrain.seed, drop_last=cfg.optimization.mixes, **common)
    return train_batches, val_loader(val, **common)
