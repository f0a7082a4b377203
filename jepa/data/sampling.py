"""Deterministic, resumable sampling: a per-epoch permutation and a per-sample seed for augmentations.

Every sample is drawn with a seed that depends only on (run seed, epoch, dataset index), and its augmentations
run under that seed. Batches, augmentations and masks therefore do not depend on the number of DataLoader
workers or on where a run was interrupted: resuming mid-epoch reproduces the uninterrupted run exactly.
"""

import hashlib
import random
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class MapDataset(Protocol):
    """A map-style data set of known length: ``len(dataset)`` and ``dataset[index]`` (torch's ``Dataset`` type
    declares no ``__len__``). :class:`jepa.data.RobustDataset` and its subclasses are such data sets."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> object: ...


def mix_seed(*values: int) -> int:
    """A seed in ``[0, 2**63)`` from signed 64-bit integers: their BLAKE2b hash, which (unlike ``hash()``) is the
    same in every process, platform and Python version."""
    try:
        data = b"".join(int(v).to_bytes(8, "little", signed=True) for v in values)
    except OverflowError:
        raise ValueError(f"seeds are mixed from signed 64-bit integers, got {values}") from None
    # 63 bits keep the seed a non-negative int64, which torch and numpy both accept.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & (2**63 - 1)


class _EpochDraws(Sampler[tuple[int, int]]):
    """What both samplers share: ``length`` draws per epoch split across ranks (each gets ``length // world_size``,
    every ``world_size``-th draw), and :meth:`set_epoch` choosing the epoch and how many of this rank's draws were
    already consumed (a resumed run continues mid-epoch)."""

    def __init__(self, length: int, seed: int, rank: int, world_size: int) -> None:
        if length < world_size:
            raise ValueError(f"{length} samples per epoch cannot be split over {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return self.length // self.world_size - self.start

    def _mine(self, draws: torch.Tensor) -> torch.Tensor:
        """This rank's not yet consumed share of an epoch's ``draws`` (one per position)."""
        share = self.length // self.world_size
        return draws[self.rank : share * self.world_size : self.world_size][self.start :]


class EpochSampler(_EpochDraws):
    """Yields ``(index, sample_seed)`` for one epoch of this rank's share of the data.

    The order is a permutation seeded by ``(seed, epoch)`` (or the identity without ``shuffle``), split across
    ``world_size`` ranks (each gets ``len // world_size`` samples). :meth:`set_epoch` selects the epoch and the
    number of this rank's samples already consumed, so a resumed run continues mid-epoch.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(length, seed, rank, world_size)
        self.shuffle = shuffle

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        for index in self._mine(order).tolist():
            yield index, mix_seed(self.seed, self.epoch, index)


class SeededDataset(Dataset):
    """Wraps a dataset whose samples end with their int index; ``dataset[(index, seed)]`` loads sample ``index``
    with the torch and ``random`` generators seeded by ``seed`` (restored afterwards), and returns the sample
    with its trailing index replaced by ``seed`` (mask collators derive their masks from it)."""

    def __init__(self, dataset: MapDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[object, ...]:
        index, seed = key
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                sample = self.dataset[index]
            finally:
                random.setstate(state)
        if not isinstance(sample, Sequence):  # e.g. the marker of an on_error="skip" data set
            raise TypeError(f"sample {index} is a {type(sample).__name__}, expected a tuple ending with its index")
        return (*sample[:-1], seed)


class WeightedEpochSampler(_EpochDraws):
    """Yields ``(index, sample_seed)``: ``length`` indices drawn with replacement in proportion to ``weights``.

    The draws of an epoch come from a generator seeded by ``mix_seed(seed, epoch)``, and the ``p``-th draw of the
    epoch gets the sample seed ``mix_seed(seed, epoch, p)`` (not the index's, which repeats: two draws of the same
    video get different clips and augmentations). Ranks take every ``world_size``-th draw (each gets
    ``length // world_size``); :meth:`set_epoch` selects the epoch and how many of this rank's draws were already
    consumed, like :class:`EpochSampler`, whose interface this follows.

    Args:
        weights: ``[N]`` non-negative sampling weights (for example :attr:`VideoDataset.sample_weights`), not
            necessarily normalised.
        seed: the run's seed.
        length: draws per epoch, over all ranks; the number of weights when None.
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray | torch.Tensor,
        seed: int,
        length: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.dim() != 1 or len(w) == 0:
            raise ValueError(f"weights must be a non-empty 1D sequence, got shape {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be finite, >= 0 and not all 0")
        super().__init__(len(w) if length is None else length, seed, rank, world_size)
        self.cdf = torch.cumsum(w, 0)
        self.last_positive = int(torch.nonzero(w > 0)[-1])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        share = self.length // self.world_size
        u = torch.rand(share * self.world_size, generator=g, dtype=torch.float64) * self.cdf[-1]
        # Inverse-CDF sampling (torch.multinomial stops at 2**24 categories); right=True skips zero weights.
        drawn = torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.last_positive)
        positions = self._mine(torch.arange(len(drawn)))
        for p in positions.tolist():
            yield int(drawn[p]), mix_seed(self.seed, self.epoch, p)
