"""Deterministic, resumable sampling: a per-epoch permutation and a per-sample seed for augmentations.

Every sample is drawn with a seed that depends only on (run seed, epoch, dataset index), and its augmentations
run under that seed. Batches, augmentations and masks therefore do not depend on the number of DataLoader
workers or on where a run was interrupted: resuming mid-epoch reproduces the uninterrupted run exactly.
"""

import hashlib
import random
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


def mix_seed(*values: int) -> int:
    """A seed in ``[0, 2**63)`` from signed 64-bit integers: their BLAKE2b hash, which (unlike ``hash()``) is the
    same in every process, platform and Python version."""
    try:
        data = b"".join(int(v).to_bytes(8, "little", signed=True) for v in values)
    except OverflowError:
        raise ValueError(f"seeds are mixed from signed 64-bit integers, got {values}") from None
    # 63 bits keep the seed a non-negative int64, which torch and numpy both accept.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & (2**63 - 1)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` for one epoch of this rank's share of the data.

    The order is a permutation seeded by ``(seed, epoch)`` (or the identity without ``shuffle``), split across
    ``world_size`` ranks (each gets ``len // world_size`` samples). :meth:`set_epoch` selects the epoch and the
    number of this rank's samples already consumed, so a resumed run continues mid-epoch.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if length < world_size:
            raise ValueError(f"a data set of {length} samples cannot be split over {world_size} ranks")
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return self.length // self.world_size - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        share = self.length // self.world_size
        mine = order[self.rank : share * self.world_size : self.world_size][self.start :]
        for index in mine.tolist():
            yield index, mix_seed(self.seed, self.epoch, index)


class SeededDataset(Dataset):
    """Wraps a dataset whose samples end with their int index; ``dataset[(index, seed)]`` loads sample ``index``
    with the torch and ``random`` generators seeded by ``seed`` (restored afterwards), and returns the sample
    with its trailing index replaced by ``seed`` (mask collators derive their masks from it)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple:
        index, seed = key
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                sample = self.dataset[index]
            finally:
                random.setstate(state)
        return (*sample[:-1], seed)
