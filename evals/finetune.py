"""What fine-tuning (``eval_name: *_finetune``) adds to the probe engine (:class:`evals.probing.ProbeTrainer` with
``finetune``): AdamW groups with layer-wise LR decay over the encoder and its head, timm's Mixup / CutMix of the
training inputs, and the linear head on mean-pooled tokens (the attentive probe is the other head).

Layer-wise LR decay (BEiT's, as MAE and VideoMAE fine-tune): with ``L = depth + 1`` layers, layer ``i`` trains at
``lr * layer_decay ** (L - i)``; layer 0 is the input (patch embedding, position table), layer ``i + 1`` block ``i``,
and layer ``L`` the final norm and the head (at ``lr`` itself). timm's ``lr_scale`` group key carries the factor
(:func:`jepa.training.optim.set_hyperparams` multiplies by it).
"""

from typing import Any

import numpy as np
import torch
from timm.data import Mixup
from torch import Tensor, nn

from jepa.data.sampling import mix_seed
from jepa.training.optim import decays

INPUT_PREFIXES = ("patch_embed", "pos_embed")  # layer 0


def layer_of(name: str, depth: int) -> int:
    """The layer (``0 .. depth + 1``) of encoder parameter ``name`` for layer-wise LR decay (module docstring)."""
    if name.startswith(INPUT_PREFIXES):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_scales(depth: int, layer_decay: float) -> list[float]:
    """The LR factor of each layer ``0 .. depth + 1``: ``layer_decay ** (depth + 1 - i)``."""
    return [layer_decay ** (depth + 1 - i) for i in range(depth + 2)]


def finetune_param_groups(encoder: nn.Module, head: nn.Module, layer_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of an encoder (with ``blocks``) and its head: per layer (input first, the head's last), its
    decayed weights, then its biases and 1-D parameters (``WD_exclude``, no weight decay), each with the layer's
    ``lr_scale``; empty groups are left out. Frozen tensors (the sine-cosine position table) sit in their layer's
    group, as the official optimizers keep them; AdamW skips them (no gradient)."""
    depth = len(encoder.blocks)  # type: ignore[arg-type]  # a VisionTransformer's ModuleList
    scales = layer_scales(depth, layer_decay)
    per_layer: list[list[tuple[str, nn.Parameter]]] = [[] for _ in scales]
    for name, p in encoder.named_parameters():
        per_layer[layer_of(name, depth)].append((name, p))
    per_layer[-1] += list(head.named_parameters())
    groups = []
    for layer, (scale, named) in enumerate(zip(scales, per_layer, strict=True)):
        decayed = [p for n, p in named if decays(n, p.shape)]
        rest = [p for n, p in named if not decays(n, p.shape)]
        if decayed:
            groups.append({"params": decayed, "lr_scale": scale, "layer": layer, "WD_exclude": False})
        if rest:
            groups.append({"params": rest, "lr_scale": scale, "layer": layer, "WD_exclude": True, "weight_decay": 0.0})
    return groups


def make_finetune_optimizer(
    encoder: nn.Module, head: nn.Module, betas: tuple[float, float], layer_decay: float
) -> torch.optim.AdamW:
    """AdamW over :func:`finetune_param_groups`."""
    return torch.optim.AdamW(finetune_param_groups(encoder, head, layer_decay), betas=betas)


class LinearHead(nn.Module):
    """Tokens ``[B, N, D]`` -> logits ``[B, C]``: the tokens' mean, a LayerNorm, a linear layer (MAE's fine-tuning
    head with global pooling). Keys ``norm.*``, ``linear.*``."""

    def __init__(self, *, embed_dim: int, num_classes: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.linear = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x.mean(dim=1)))


class InputMixer:
    """timm's :class:`timm.data.Mixup` (Mixup and/or CutMix, per batch, with label smoothing) on a batch of eval
    inputs: images ``[B, C, H, W]`` or clips ``[S, V, B, C, T, H, W]``, where a CutMix box is cut at the same place
    of every segment, view and frame of a clip (timm's own indexing would cut along time on 5-D video).

    timm draws from NumPy's global generator; each call draws from one seeded with ``(seed, step)`` instead (and
    restores the global state), so the mixing is a function of the step: a resumed run mixes as the uninterrupted
    one did.
    """

    def __init__(
        self, *, mixup: float, cutmix: float, prob: float, switch_prob: float, label_smoothing: float,
        num_classes: int, seed: int,
    ) -> None:  # fmt: skip
        self.mixup = Mixup(
            mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob, mode="batch",
            label_smoothing=label_smoothing, num_classes=num_classes,
        )  # fmt: skip
        self.seed = seed

    def __call__(self, x: Tensor, labels: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """Mixed inputs (a new tensor of ``x``'s layout) and their soft targets ``[B, num_classes]``."""
        if x.dim() == 7:
            batch_first = x.movedim(2, 0)
            shape = batch_first.shape
            flat = batch_first.reshape(shape[0], -1, *shape[-2:])  # a copy: [B, S * V * C * T, H, W]
        elif x.dim() == 4:
            flat = x.clone()
        else:
            raise ValueError(f"expected images [B, C, H, W] or clips [S, V, B, C, T, H, W], got {tuple(x.shape)}")
        state = np.random.get_state()
        np.random.seed(mix_seed(self.seed, step) % 2**32)
        try:
            mixed, targets = self.mixup(flat, labels)
        finally:
            np.random.set_state(state)
        if x.dim() == 7:
            mixed = mixed.reshape(shape).movedim(0, 2)
        return mixed, targets
