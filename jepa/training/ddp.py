"""The DDP wrapping both trainers use: the module itself with one process, else a ``DistributedDataParallel``;
and :class:`GlobalGroupMean`, which weights a rank's losses on clips of several lengths so that several ranks train
like one process."""

import inspect
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from jepa.runtime.distributed import all_reduce_sum, get_world_size
from jepa.training.meta_arch import ClipGroup, JEPAOutput

# DDP's switch for syncing buffers before every forward was renamed in recent torch releases.
_NO_BUFFER_SYNC: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def wrap_ddp(
    module: nn.Module,
    device: torch.device,
    world_size: int,
    *,
    sync_buffers: bool = True,
    static_graph: bool = False,
    find_unused_parameters: bool = False,
) -> nn.Module:
    """``module`` with one process; with several, a DDP wrapper that averages its gradients over the ranks (on
    ``device``'s index for CUDA). ``sync_buffers`` False skips broadcasting buffers before every forward (a model
    without batch norm changes none); ``static_graph`` is DDP's flag for a graph that is the same at every step;
    ``find_unused_parameters`` lets some parameters go without a gradient in a step (V-JEPA 2's spare mask tokens),
    at the cost of a walk over the graph per step."""
    if world_size == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    options = {} if sync_buffers else _NO_BUFFER_SYNC
    return DistributedDataParallel(
        module, device_ids=ids, static_graph=static_graph, find_unused_parameters=find_unused_parameters, **options
    )


class GlobalGroupMean(nn.Module):
    """A :class:`~jepa.training.meta_arch.JEPA` module run on one rank's rows of a batch of clips of several
    lengths, its losses weighted so that the gradients DDP averages over the ranks are one process's on the whole
    global batch.

    One process's loss is the mean over the batch's length groups of each group's loss, itself a mean over the
    group's samples (and mask configs). Rank ``r`` holds ``n_g`` of the ``N_g`` samples of group ``g`` (none, for a
    group smaller than the world), so its loss is ``sum_g (W * n_g / (N_g * G)) * loss_g``, with ``W`` ranks and
    ``G`` groups in the global batch: averaged over the ranks, it is the one-process loss, and so is its gradient.
    This holds for every term that is a mean over samples (the prediction loss and V-JEPA's spread regulariser);
    ``N_g`` and ``G`` come from one all-reduce of the per-length counts (on the module's device, without a host
    sync). Without a process group it is the plain mean over the groups.

    A rank runs the module once per group it holds (each group on its own token grid), so the predictor's mask
    tokens of a length it lacks go without a gradient on that rank: DDP needs ``find_unused_parameters``.

    Args:
        module: the JEPA module; called as ``module([group], step=step)``.
        lengths: the clip lengths in frames, in length-group order (``data.clip_lengths``).
    """

    def __init__(self, module: nn.Module, lengths: Sequence[int]) -> None:
        super().__init__()
        self.module = module
        self.lengths = tuple(int(n) for n in lengths)

    def forward(self, groups: Sequence[ClipGroup], step: int = 0) -> JEPAOutput:
        """The weighted losses of this rank's ``groups`` (clips ``[B_g, C, T_g, H, W]``, at least one group)."""
        if not groups:
            raise ValueError("GlobalGroupMean needs at least one clip group")
        slots = [self._slot(g) for g in groups]
        device = groups[0].x.device
        local = [0.0] * len(self.lengths)
        for slot, group in zip(slots, groups, strict=True):
            local[slot] += group.x.shape[0]
        counts = torch.tensor(local, dtype=torch.float64)
        if device.type == "cuda":  # pinned, so that the copy does not wait for the work queued on the GPU
            counts = counts.pin_memory().to(device, non_blocking=True)
        mine = counts.clone()
        totals = all_reduce_sum(counts)
        world = get_world_size()
        num_groups = (totals > 0).sum()
        weights = (world * mine / (totals.clamp_min(1) * num_groups)).float()
        outs = [self.module([g], step=step) for g in groups]
        w = [weights[slot] for slot in slots]

        def weighted(values: Sequence[Tensor]) -> Tensor:
            return torch.stack([wi * v.float() for wi, v in zip(w, values, strict=True)]).sum()

        sigregs = [o.loss_sigreg for o in outs]
        shares = [o.position_share for o in outs]
        return JEPAOutput(
            loss=weighted([o.loss for o in outs]),
            loss_pred=weighted([o.loss_pred for o in outs]),
            loss_reg=weighted([o.loss_reg for o in outs]),
            target_pooled=torch.cat([o.target_pooled for o in outs]),
            loss_sigreg=None if any(s is None for s in sigregs) else weighted(cast(list[Tensor], sigregs)),
            position_share=None if any(s is None for s in shares) else weighted(cast(list[Tensor], shares)),
        )

    def _slot(self, group: ClipGroup) -> int:
        frames = int(group.x.shape[2]) if group.x.dim() == 5 else None
        if frames not in self.lengths:
            raise ValueError(
                f"GlobalGroupMean takes clips [B, C, T, H, W] of {list(self.lengths)} frames, got a group of shape "
                f"{tuple(group.x.shape)}"
            )
        return self.lengths.index(frames)
