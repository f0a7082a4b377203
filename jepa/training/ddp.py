"""The DDP wrapping both trainers use: the module itself with one process, else a ``DistributedDataParallel``."""

import inspect
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

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
