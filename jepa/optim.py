"""AdamW parameter groups: biases and 1-D parameters (norms) are excluded from weight decay."""

from collections.abc import Iterable

import torch
from torch import nn


def param_groups(modules: Iterable[nn.Module]) -> list[dict]:
    """The official AdamW groups: for each module its decayed weights, then for each module its ``WD_exclude``
    parameters (names containing ``bias``, or 1-D tensors such as norm weights) with weight decay 0.

    The layout (group order and membership, frozen tensors such as ``pos_embed`` included, as the official code
    does; AdamW skips them since they get no gradient) matches the official optimizers, so the ``opt`` state of
    an official checkpoint loads into ours and ours into theirs.
    """
    modules = list(modules)
    decay = [
        {"params": [p for n, p in m.named_parameters() if "bias" not in n and p.dim() != 1], "WD_exclude": False}
        for m in modules
    ]
    no_decay = [
        {"params": [p for n, p in m.named_parameters() if "bias" in n or p.dim() == 1], "WD_exclude": True,
         "weight_decay": 0.0}
        for m in modules
    ]  # fmt: skip
    return decay + no_decay


def make_adamw(modules: Iterable[nn.Module], betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; uses the fused/foreach kernels PyTorch picks for the device."""
    return torch.optim.AdamW(param_groups(modules), betas=betas)


def set_hyperparams(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Set the LR on every group and the weight decay on the groups that are not ``WD_exclude``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group.get("WD_exclude", False):
            group["weight_decay"] = weight_decay
