"""The DDP wrapping both trainers use: the module itself with one process, else a ``DistributedDataParallel``;
FSDP2 sharding instead (``meta.sharding: fsdp``, :func:`shard_fsdp`) for models too large to replicate, with the
full state dicts a checkpoint stores (:func:`full_state_dict`); and :class:`GlobalGroupMean`, which weights a rank's
losses on clips of several lengths so that several ranks train like one process."""

import inspect
from collections.abc import Iterable, Sequence
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


SHARDINGS = ("ddp", "fsdp")
# The attributes of our networks that hold their transformer blocks, each block sharded on its own (FSDP2 gathers
# one block's weights at a time, so a rank holds one full block plus its shard of the rest).
_BLOCK_LISTS = ("blocks", "predictor_blocks")


def shard_fsdp(model: nn.Module, networks: Iterable[str] = ("encoder", "target_encoder", "predictor")) -> nn.Module:
    """Shard ``model`` in place with FSDP2 (``torch.distributed.fsdp.fully_shard``) over the default process group,
    on the device of its parameters; returns it (FSDP2 keeps the module's class and names).

    Each transformer block of each network in ``networks`` (attributes of ``model``: a :class:`JEPA`'s encoder,
    EMA target encoder and predictor) is a unit of its own, then each network (its embeddings, norms, mask tokens),
    then ``model`` when anything is left. Every parameter becomes a ``DTensor`` sharded along dim 0 over the ranks, the
    forward all-gathers one unit at a time and frees it after use (forward and backward), and the backward
    reduce-scatters gradients averaged over the ranks, as DDP averages them: the same training on the global
    batch, with each rank holding ``1 / world`` of the weights, gradients and AdamW state.

    The target encoder is sharded exactly as the encoder is (same structure, same ranks), so the EMA update
    (``JEPA.update_target``'s foreach ops) runs on the local shards with no communication. Build the optimizer
    after sharding (its parameters must be the sharded ones); gradient clipping
    (``torch.nn.utils.clip_grad_norm_``) reduces the norm over the shards. Checkpoints: see
    :func:`full_state_dict`. Raises ``RuntimeError`` without a process group.
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("meta.sharding: fsdp needs a process group (run with several devices or under torchrun)")
    for name in networks:
        network = getattr(model, name)
        for attr in _BLOCK_LISTS:
            for block in getattr(network, attr, ()):
                fully_shard(block)
        fully_shard(network)
        if not any(p.requires_grad for p in network.parameters()):
            # A network that only runs forward (the EMA target) and is a root keeps its own weights gathered after
            # its forward, for a backward that never comes: free them, so that the EMA update meets its shards.
            network.register_forward_hook(_reshard_after_forward)
    # Each network is a root of its own, so that one can run alone (the online probe's target encoder); ``model``
    # is a unit only when it holds parameters of its own.
    inside = {id(p) for name in networks for p in getattr(model, name).parameters()}
    if any(id(p) not in inside for p in model.parameters()):
        fully_shard(model)
    return model


def _reshard_after_forward(module: nn.Module, args: Any, output: Any) -> None:
    module.reshard()  # type: ignore[operator]  # an FSDPModule


def full_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """``module.state_dict()`` with every sharded (``DTensor``) entry gathered into a full CPU tensor, so an FSDP2
    model saves the official checkpoint layout (the same keys and shapes as unsharded). A collective when the
    module is sharded: every rank must call it. An unsharded module gives its ordinary state dict."""
    from torch.distributed.tensor import DTensor

    state = module.state_dict()
    return {k: (v.full_tensor().cpu() if isinstance(v, DTensor) else v) for k, v in state.items()}


def load_full_state_dict(module: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a full (unsharded) state dict into ``module``, sharded with FSDP2 or not, strictly: each rank keeps
    its shard of every sharded entry. Every rank passes the same full ``state``."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    own = module.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if missing or unexpected:
        raise KeyError(f"state dict does not match the module: missing {missing}, unexpected {unexpected}")
    sharded: dict[str, Tensor] = {}
    for k, v in own.items():
        if isinstance(v, DTensor):
            sharded[k] = distribute_tensor(state[k].to(v.device, v.dtype), v.device_mesh, v.placements)
        else:
            sharded[k] = state[k]
    module.load_state_dict(sharded, strict=True)


def full_optimizer_state_dict(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` (the official, index-keyed layout) with every sharded state tensor (AdamW's
    ``exp_avg`` / ``exp_avg_sq`` of an FSDP2 parameter) gathered into a full CPU tensor. A collective when the
    parameters are sharded: every rank must call it."""
    from torch.distributed.tensor import DTensor

    state = optimizer.state_dict()
    state["state"] = {
        i: {k: (v.full_tensor().cpu() if isinstance(v, DTensor) else v) for k, v in entry.items()}
        for i, entry in state["state"].items()
    }
    return state


def load_full_optimizer_state_dict(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a full optimizer state dict (:func:`full_optimizer_state_dict`, or one saved without sharding) into
    ``optimizer``, sharding each state tensor of an FSDP2 parameter as the parameter is sharded. Every rank passes
    the same ``state``."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in state["param_groups"] for i in group["params"]]
    if len(saved_ids) != len(params):
        raise ValueError(f"optimizer state holds {len(saved_ids)} parameters, the optimizer {len(params)}")
    by_id = dict(zip(saved_ids, params, strict=True))
    sharded: dict[int, dict[str, Any]] = {}
    for i, entry in state["state"].items():
        param = by_id[i]
        sharded[i] = {
            k: distribute_tensor(v.to(param.device), param.device_mesh, param.placements)
            if isinstance(param, DTensor) and isinstance(v, Tensor) and v.shape == param.shape
            else v
            for k, v in entry.items()
        }
    optimizer.load_state_dict({**state, "state": sharded})


def is_sharded(module_or_optimizer: nn.Module | torch.optim.Optimizer) -> bool:
    """Whether any parameter of a module (or of an optimizer's groups) is an FSDP2 shard (a ``DTensor``)."""
    from torch.distributed.tensor import DTensor

    if isinstance(module_or_optimizer, torch.optim.Optimizer):
        params: Iterable[Tensor] = (p for g in module_or_optimizer.param_groups for p in g["params"])
    else:
        params = module_or_optimizer.parameters()
    return any(isinstance(p, DTensor) for p in params)


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, or for FSDP2-sharded parameters :func:`load_full_optimizer_state_dict`
    (a checkpoint stores the full state either way)."""
    if is_sharded(optimizer):
        load_full_optimizer_state_dict(optimizer, state)
    else:
        optimizer.load_state_dict(state)


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
        contexts = [o.loss_context for o in outs]
        return JEPAOutput(
            loss=weighted([o.loss for o in outs]),
            loss_pred=weighted([o.loss_pred for o in outs]),
            loss_reg=weighted([o.loss_reg for o in outs]),
            target_pooled=torch.cat([o.target_pooled for o in outs]),
            loss_sigreg=None if any(s is None for s in sigregs) else weighted(cast(list[Tensor], sigregs)),
            position_share=None if any(s is None for s in shares) else weighted(cast(list[Tensor], shares)),
            loss_context=None if any(c is None for c in contexts) else weighted(cast(list[Tensor], contexts)),
        )

    def _slot(self, group: ClipGroup) -> int:
        frames = int(group.x.shape[2]) if group.x.dim() == 5 else None
        if frames not in self.lengths:
            raise ValueError(
                f"GlobalGroupMean takes clips [B, C, T, H, W] of {list(self.lengths)} frames, got a group of shape "
                f"{tuple(group.x.shape)}"
            )
        return self.lengths.index(frames)
