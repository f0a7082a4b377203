"""AdamW parameter groups: biases and 1-D parameters (norms) are excluded from weight decay."""

from collections.abc import Iterable

import torch
from torch import nn


def param_groups(modules: Iterable[nn.Module]) -> list[dict]:
    """Two groups over the trainable parameters of ``modules``: decayed weights and ``WD_exclude`` ones
    (names containing ``bias`` or 1-D tensors), as the official code splits them. Frozen tensors are left out."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if "bias" in name or p.dim() == 1 else decay).append(p)
    return [
        {"params": decay, "WD_exclude": False},
        {"params": no_decay, "WD_exclude": True, "weight_decay": 0.0},
    ]


def make_adamw(modules: Iterable[nn.Module], betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; uses the fused/foreach kernels PyTorch picks for the device."""
    return torch.optim.AdamW(param_groups(modules), betas=betas)


def set_hyperparams(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set the LR on every group and the weight decay on the groups that are not ``WD_exclude``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group.get("WD_exclude", False):
            group["weight_decay"] = weight_decay
