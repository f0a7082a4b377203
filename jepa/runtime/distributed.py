"""Process groups: one process per device, however the processes were started.

Three launchers, one :func:`init_distributed`:

* ``python -m app.main --devices cuda:0 cuda:1`` (or ``cpu cpu``): :func:`spawn` starts one process per device on
  this machine, with a free port on localhost, and initialises the group in each;
* ``torchrun --nproc-per-node G -m app.main ...``: torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR`` and ``MASTER_PORT``, which :func:`init_distributed` reads;
* Slurm through submitit (``python -m app.main_distributed``): inside a submitit task the same variables are
  exported by ``submitit.helpers.TorchDistributedEnvironment`` (rank, hosts and port come from submitit's
  ``JobEnvironment``; nothing here parses ``SLURM_*`` variables).

NCCL on GPUs, gloo on CPUs. A world of one process is not initialised at all (no process group, no DDP); a world
of several that cannot be initialised is an error, never a silent fall back to one process.

The helpers (:func:`get_rank`, :func:`all_reduce_sum`, :func:`barrier`, ...) are no-ops when no group is
initialised, so code written for many processes runs unchanged in one. :class:`ShardedSampler` splits a data set
over ranks without padding (exact evaluation metrics); :class:`RankShardDataset` and :class:`RankShardCollator`
split each global batch of pretraining so that N ranks see exactly the samples, augmentations and masks of one
process's batch.
"""

import contextlib
import logging
import os
import pickle
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

from jepa.data.sampling import SeededDataset, mix_seed

if TYPE_CHECKING:
    from multiprocessing.queues import SimpleQueue

    from jepa.masks.collate import MaskCollator
    from jepa.video.masks import LengthGroup

T = TypeVar("T")

logger = logging.getLogger(__name__)

# What torchrun exports and init_process_group(init_method="env://") reads.
ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """The process group could not be set up; the message names the variable, rank or device at fault."""


class SpawnError(RuntimeError):
    """A process started by :func:`spawn` failed; the message holds its traceback."""


@dataclass(frozen=True)
class World:
    """Where this process stands: its global ``rank`` among ``world_size`` processes, its ``local_rank`` on this
    machine, and the ``device`` it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank; 0 without a process group."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """The number of processes; 1 without a process group."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the process that writes checkpoints, configs and logs."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process; a no-op without a process group."""
    if is_initialized() and get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all processes **in place** and return it (the same object); without a process group
    it is returned unchanged. The tensor must live on the device the backend uses (CUDA for NCCL)."""
    if is_initialized() and get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: Tensor) -> Tensor:
    """Elementwise maximum over all processes, **in place** like :func:`all_reduce_sum`."""
    if is_initialized() and get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate every process's ``tensor`` along dim 0, in rank order (a new tensor; ``tensor`` itself
    without a process group). The first dimension may differ between processes (as with :class:`ShardedSampler`,
    whose shards differ by one sample); the other dimensions must agree."""
    world = get_world_size()
    if world == 1:
        return tensor
    tensor = tensor.contiguous()
    sizes = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s) for s in all_sizes]
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])


def all_gather_objects(obj: T) -> list[T]:
    """Every process's picklable ``obj``, in rank order (``[obj]`` without a process group)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()  # placeholders that all_gather_object replaces
    dist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (for work that writes shared files once, such as
    generating a data set, which the other ranks then only read)."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def shard_indices(length: int, rank: int | None = None, world_size: int | None = None) -> range:
    """Rank ``rank``'s share of ``range(length)``: ``rank, rank + world_size, ...`` (this process's rank and world
    size by default). No index is repeated or dropped, so shards differ in length by at most one."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return range(rank, length, world_size)


class ShardedSampler(Sampler[int]):
    """Rank ``rank`` visits the indices ``rank::world_size`` of ``range(length)``, in order, once each.

    Unlike ``torch.utils.data.DistributedSampler`` it neither pads nor repeats samples to even out the shards, so
    metrics summed over ranks (:func:`all_reduce_sum`) count every sample exactly once: what an exact evaluation
    needs. Shards differ in length by at most one; a rank's shard may be empty when ``length < world_size``.
    """

    def __init__(self, length: int, rank: int | None = None, world_size: int | None = None) -> None:
        self.indices = shard_indices(length, rank, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def launched_externally() -> bool:
    """True under torchrun (or any launcher that sets ``WORLD_SIZE``) and inside a submitit task: the processes
    exist already, one per device, and each should join the group (:func:`init_distributed`) rather than spawn."""
    return "WORLD_SIZE" in os.environ or bool(os.environ.get("SUBMITIT_EXECUTOR"))


def default_device(local_rank: int = 0) -> torch.device:
    """GPU ``local_rank`` (modulo the visible GPUs, for jobs that show each task only its own GPU) or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def pick_devices(requested: list[str] | None) -> list[torch.device]:
    """The requested devices, or all GPUs, or the CPU."""
    if requested:
        devices = [torch.device(d) for d in requested]
        for d in devices:
            if d.type == "cuda" and (not torch.cuda.is_available() or (d.index or 0) >= torch.cuda.device_count()):
                raise ValueError(f"device {d} requested but {torch.cuda.device_count()} GPU(s) are visible")
        return devices
    if torch.cuda.is_available():
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise DistributedError(f"environment variable {name} is not set")
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def _export_submitit_environment() -> None:
    """Inside a submitit task without torch variables yet: export them from submitit's job environment."""
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    logger.info(
        "submitit task: rank %d of %d (local rank %d), master %s:%d",
        env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port,
    )  # fmt: skip


def init_distributed(
    device: torch.device | str | None = None, backend: str | None = None, timeout: timedelta | None = None
) -> World:
    """Join the process group this process was launched into, or stay alone.

    The world comes from ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (set by
    torchrun, by :func:`spawn`, or exported here from submitit's job environment inside a submitit task). With
    none of them the process is alone: world size 1, nothing initialised. Calling it again returns the current
    world.

    Args:
        device: this process's device; by default ``cuda:<LOCAL_RANK>`` (modulo the visible GPUs) or the CPU.
            A CUDA device becomes the current device.
        backend: ``nccl`` on CUDA devices and ``gloo`` on CPUs unless given.
        timeout: for collectives (torch's default when None).

    Raises:
        DistributedError: a variable is missing or malformed, or the group could not be initialised.
    """
    if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR"):
        _export_submitit_environment()
    if is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return World(rank, world_size, local_rank, torch.device(device) if device else default_device(local_rank))
    if "WORLD_SIZE" not in os.environ:
        return World(0, 1, 0, torch.device(device) if device else default_device(0))
    world_size, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not 0 <= rank < world_size:
        raise DistributedError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size})")
    device = torch.device(device) if device else default_device(local_rank)
    if world_size == 1:
        return World(0, 1, local_rank, device)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise DistributedError(f"WORLD_SIZE={world_size} but environment variable {name} is not set")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        # device_id binds NCCL to this GPU (barriers and object collectives included); None: torch's defaults.
        device_id = device if device.type == "cuda" else None
        dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout, device_id=device_id
        )
    except Exception as e:
        raise DistributedError(
            f"rank {rank} of {world_size} could not join the {backend} process group at {where} on {device}: {e}"
        ) from e
    logger.info("rank %d of %d (local %d) on %s, %s via %s", rank, world_size, local_rank, device, backend, where)
    return World(rank, world_size, local_rank, device)


def destroy() -> None:
    """Leave the process group (a no-op without one)."""
    if is_initialized():
        dist.destroy_process_group()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (another process could take it before it is used; rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def spawn(fn: Callable[..., T], devices: Sequence[torch.device | str], *args: object) -> list[T]:
    """Run ``fn(rank, world_size, device, *args)`` in one process per device and return its results by rank.

    With several devices, each process is started with the ``spawn`` method (so ``fn``, ``args`` and the results
    must be picklable: ``fn`` a module-level function), finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` (a free port on localhost) in its environment, and has joined the group
    (:func:`init_distributed`) before ``fn`` runs; processes on the CPU share the CPU's threads between them.
    With one device, ``fn(0, 1, device, *args)`` runs in this process without a process group.

    Raises:
        SpawnError: a process raised or died; the message leads with the traceback of the process that failed first
            (the others, stopped or cut off from it, fail after it), and the other processes are terminated.
    """
    resolved = [torch.device(d) for d in devices]
    if not resolved:
        raise ValueError("spawn needs at least one device")
    if len(resolved) == 1:
        return [fn(0, 1, resolved[0], *args)]
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    messages = ctx.SimpleQueue()
    port = free_port()
    context = mp.start_processes(
        _spawned, args=(fn, resolved, port, messages, args), nprocs=len(resolved), join=False, start_method="spawn"
    )
    results: dict[int, T] = {}
    failures: list[tuple[float, int, str]] = []

    def drain() -> None:
        # Read while waiting: a result larger than the pipe's buffer blocks its sender until it is read.
        while not messages.empty():
            rank, kind, payload = messages.get()
            if kind == "result":
                results[rank] = pickle.loads(payload)
            else:
                failures.append(payload)

    try:
        with _forwarding_signals(context.pids()):
            while not context.join(timeout=0.05):
                drain()
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        drain()
        if not failures:
            raise SpawnError(str(e)) from e
        failures.sort()
        first_rank, first = failures[0][1], failures[0][2]
        others = ", ".join(str(r) for _, r, _ in failures[1:])
        after = f" (then rank(s) {others})" if others else ""
        raise SpawnError(f"rank {first_rank} of {len(resolved)} failed first{after}:\n{first}") from e
    drain()
    missing = sorted(set(range(len(resolved))) - set(results))
    if missing:
        raise SpawnError(f"ranks {missing} ended without returning a result")
    return [results[r] for r in range(len(resolved))]


@contextlib.contextmanager
def _forwarding_signals(pids: list[int]) -> Iterator[None]:
    """Pass SIGTERM / SIGINT / SIGUSR1 sent to this (parent) process on to the spawned ranks, which save and stop
    (each rank sits in its own process group, so a Ctrl-C on the terminal reaches it once, through here)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: object) -> None:
        logger.warning("received %s: passing it on to the %d ranks", signal.Signals(signum).name, len(pids))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signums = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    previous = {signum: signal.signal(signum, forward) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _spawned(
    rank: int,
    fn: Callable[..., object],
    devices: list[torch.device],
    port: int,
    messages: "SimpleQueue[tuple[int, str, object]]",
    args: tuple[object, ...],
) -> None:
    world_size = len(devices)
    os.setpgrp()  # signals for the run reach the ranks through the parent, once (see _forwarding_signals)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    device = devices[rank]
    cpu_procs = sum(d.type == "cpu" for d in devices)
    if device.type == "cpu" and cpu_procs > 1:
        # Every process would otherwise start one thread per core and they would fight over the cores.
        torch.set_num_threads(max(1, torch.get_num_threads() // cpu_procs))
    init_distributed(device)
    try:
        value = fn(rank, world_size, device, *args)
        # Plain pickling copies tensors: torch's multiprocessing pickler would share their memory through this
        # process, which is about to exit.
        messages.put((rank, "result", pickle.dumps(value)))
    except BaseException:
        messages.put((rank, "failure", (time.time(), rank, traceback.format_exc())))
        raise
    finally:
        destroy()


@dataclass
class ShardOfBatch:
    """What one rank loads of a global batch, or of one clip-length group of it: its own ``samples``, rows
    ``first_row::world_size`` of the batch (group), and the sample seeds of the whole batch (group), from which
    :class:`RankShardCollator` draws the masks of all its rows. ``length_index``: the group's place in the
    :class:`jepa.video.masks.MultiLengthMaskCollator`'s lengths (None: a batch of one length)."""

    samples: list[tuple[object, ...]]
    batch_seeds: list[int]
    first_row: int
    length_index: int | None = None


# How often a rank replaces a clip that came back with another length than planned (see RankShardDataset).
_LENGTH_TRIES = 10


class RankShardDataset(torch.utils.data.Dataset):
    """Loads rank ``rank``'s rows (``rank::world_size``) of each global batch of keys.

    Wraps a :class:`jepa.data.sampling.SeededDataset`, whose keys are ``(index, sample_seed)``. Fed by a
    ``BatchSampler`` over the single-process sampler (every rank iterates the same global batches), the DataLoader
    hands the whole key list to :meth:`__getitems__`, which loads only this rank's samples (decoding and
    augmentation are the expensive part) and passes on every seed of the batch, from which
    :class:`RankShardCollator` draws the masks of the whole batch.

    Clips of several lengths (V-JEPA 2's ``dataset_fpcs``): with ``clip_lengths`` (the frames of every index's clip,
    :attr:`jepa.video.datasets.VideoDataset.clip_lengths`, known without decoding) and ``group_positions`` (the
    collator's grouping rule, :meth:`jepa.video.masks.MultiLengthMaskCollator.group_positions`), the global batch is
    grouped by length as one process groups it, and this rank takes rows ``rank::world_size`` of the batch in
    grouped order (the groups one after the other). Every rank thus loads ``len(keys) // world_size`` samples and
    its share of each length (within one sample of the others'; a rank may have none of a small group).
    :meth:`__getitems__` then returns one :class:`ShardOfBatch` per length present in the global batch. A clip that
    comes back with another length than its index's (the data set replaced an unreadable video by a video of
    another length) is replaced by a clip of the planned length, drawn from the sample's seed: the other ranks drew
    that group's masks for this many samples.
    """

    def __init__(
        self,
        dataset: SeededDataset,
        rank: int,
        world_size: int,
        *,
        clip_lengths: Sequence[int] | None = None,
        group_positions: Callable[[Sequence[int]], list[tuple[int, list[int]]]] | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if (clip_lengths is None) != (group_positions is None):
            raise ValueError("clip_lengths and group_positions go together: give both or neither")
        if clip_lengths is not None and len(clip_lengths) != len(dataset):
            raise ValueError(f"{len(clip_lengths)} clip lengths for a data set of {len(dataset)} samples")
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.clip_lengths = clip_lengths
        self.group_positions = group_positions
        self._indices_of_length: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[object, ...]:
        return self.dataset[key]

    def __getitems__(self, keys: list[tuple[int, int]]) -> ShardOfBatch | list[ShardOfBatch]:
        if len(keys) % self.world_size:
            raise ValueError(f"a global batch of {len(keys)} samples does not split over {self.world_size} ranks")
        seeds = [int(seed) for _index, seed in keys]
        if self.clip_lengths is None or self.group_positions is None:
            mine = keys[self.rank :: self.world_size]
            return ShardOfBatch([self.dataset[k] for k in mine], seeds, self.rank)
        frames = [int(self.clip_lengths[index]) for index, _seed in keys]
        shards, offset = [], 0
        for length_index, positions in self.group_positions(frames):
            # Row p of the group is row offset + p of the batch in grouped order.
            first = (self.rank - offset) % self.world_size
            mine = [keys[p] for p in positions[first :: self.world_size]]
            samples = [self._load_clip(k, frames[positions[0]]) for k in mine]
            shards.append(ShardOfBatch(samples, [seeds[p] for p in positions], first, length_index))
            offset += len(positions)
        return shards

    def _load_clip(self, key: tuple[int, int], frames: int) -> tuple[object, ...]:
        """Sample ``key``, a clip of ``frames`` frames: the sample itself, or when the data set returned a clip of
        another length in its place, the first clip of the right length among indices of that length drawn from
        ``mix_seed(seed, index, attempt)`` (loaded with the sample's seed, so its masks are unchanged)."""
        index, seed = key
        sample = self.dataset[key]
        attempt = 0
        while (got := _clip_frames(sample, index)) != frames:
            if attempt == _LENGTH_TRIES:
                raise RuntimeError(
                    f"sample {index}: {_LENGTH_TRIES} clips drawn in its place had another length than {frames} "
                    "frames (too many unreadable videos of that length)"
                )
            if frames not in self._indices_of_length:
                lengths = torch.as_tensor(self.clip_lengths)
                self._indices_of_length[frames] = torch.nonzero(lengths == frames).flatten()
            pool = self._indices_of_length[frames]
            other = int(pool[mix_seed(seed, index, attempt) % len(pool)])
            logger.warning(
                "sample %d came back as a clip of %d frames, not %d (its video was unreadable and the data set put "
                "one of another length in its place); loading sample %d, a clip of %d frames, instead",
                index, got, frames, other, frames,
            )  # fmt: skip
            sample = self.dataset[(other, seed)]
            attempt += 1
        return sample


def _clip_frames(sample: tuple[object, ...], index: int) -> int:
    clip = sample[0] if sample else None
    if not isinstance(clip, Tensor) or clip.dim() != 4:
        raise TypeError(f"sample {index} does not start with a clip [3, T, H, W]: clips of several lengths need one")
    return int(clip.shape[1])


class RankShardCollator:
    """Collates a rank's :class:`ShardOfBatch` with its rows of the masks drawn for the **whole** global batch.

    The wrapped mask collator draws a batch's masks from a generator seeded by the batch's sample seeds, and one
    block size and one truncation length per batch. Drawing them for the global batch and keeping rows
    ``rank::world_size`` gives every rank exactly the masks that a single process would use on that batch, so
    ``world_size`` processes with per-rank batch ``B`` train like one process with batch ``world_size * B``. The
    price: each rank draws the masks of the whole global batch (cheap next to a forward pass at usual scales).

    With a :class:`jepa.video.masks.MultiLengthMaskCollator` (clips of several lengths), the shard is one
    :class:`ShardOfBatch` per length group of the global batch (see :class:`RankShardDataset`); each group's masks
    are drawn for the whole group by that length's collator, as one process draws them, and the rank's rows kept.
    Returns the :class:`jepa.video.masks.LengthGroup` list one process gets, holding only this rank's rows, and
    only the groups this rank has rows of. :class:`jepa.training.ddp.GlobalGroupMean` weights their losses so that
    the ranks' averaged gradients are one process's.
    """

    def __init__(self, collator: object, rank: int, world_size: int) -> None:
        from jepa.masks.collate import MaskCollator
        from jepa.video.masks import MultiLengthMaskCollator

        if not isinstance(collator, MaskCollator | MultiLengthMaskCollator):
            raise TypeError(
                f"RankShardCollator needs a MaskCollator or a MultiLengthMaskCollator, got {type(collator).__name__}"
            )
        self.collator = collator
        self.rank = rank
        self.world_size = world_size

    def __call__(
        self, shard: ShardOfBatch | list[ShardOfBatch]
    ) -> "tuple[Any, list[Tensor], list[Tensor]] | list[LengthGroup]":
        from jepa.masks.collate import MaskCollator
        from jepa.video.masks import LengthGroup

        if isinstance(self.collator, MaskCollator):
            if not isinstance(shard, ShardOfBatch):
                raise TypeError("a single-length collator takes one ShardOfBatch (RankShardDataset without lengths)")
            return self._collate(self.collator, shard)
        if isinstance(shard, ShardOfBatch):
            raise TypeError("a MultiLengthMaskCollator takes a ShardOfBatch per length (RankShardDataset with lengths)")
        groups = []
        for part in shard:
            if part.length_index is None:
                raise TypeError("a MultiLengthMaskCollator takes shards that name their length group")
            if part.samples:  # none: this rank has no clip of that length in this batch
                collated, masks_enc, masks_pred = self._collate(self.collator.collators[part.length_index], part)
                groups.append(LengthGroup(part.length_index, collated, masks_enc, masks_pred))
        return groups

    def _collate(self, collator: "MaskCollator", shard: ShardOfBatch) -> tuple[Any, list[Tensor], list[Tensor]]:
        """The shard's samples and its rows of the masks ``collator`` draws for all of ``shard.batch_seeds``."""
        from torch.utils.data import default_collate

        from jepa.masks.collate import batch_seed

        generator = torch.Generator()
        generator.manual_seed(batch_seed(collator.seed, shard.batch_seeds))
        masks_enc, masks_pred = collator.sample_masks(len(shard.batch_seeds), generator)
        rows = slice(shard.first_row, None, self.world_size)
        return (
            default_collate(shard.samples),
            [m[rows].contiguous() for m in masks_enc],
            [m[rows].contiguous() for m in masks_pred],
        )
