"""Prediction losses, V-JEPA's spread regulariser and the collapse signals logged during training."""

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def prediction_loss(z: Tensor, h: Tensor, loss_type: str, loss_exp: float = 1.0) -> Tensor:
    """Mean loss between predictions ``z`` and targets ``h`` (same shape).

    ``smooth_l1`` (I-JEPA, beta 1), ``l2`` (mean squared error), ``l1``: ``mean(|z - h| ** loss_exp) / loss_exp``
    (V-JEPA; ``loss_exp = 1`` is the plain L1).
    """
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(z, h)
    if loss_type == "l2":
        return F.mse_loss(z, h)
    if loss_type == "l1":
        return (z - h).abs().pow(loss_exp).mean() / loss_exp
    raise ValueError(f"unknown loss_type {loss_type!r}; expected smooth_l1, l2 or l1")


def spread_regulariser(preds: Sequence[Tensor], eps: float = 1e-4) -> Tensor:
    """V-JEPA's hinge ``mean(relu(1 - std))`` on the predictions' standard deviation across tokens.

    ``preds``: one ``[B, K, D]`` tensor per mask config; their per-sample, per-channel std over the ``K`` tokens
    is averaged over configs before the hinge.
    """
    std = functools.reduce(torch.add, [torch.sqrt(z.float().var(dim=1) + eps) for z in preds]) / len(preds)
    return F.relu(1.0 - std).mean()


@torch.no_grad()
def collapse_stats(features: Tensor) -> dict[str, float]:
    """Signals of representation collapse from per-sample features ``[B, D]`` (e.g. mean-pooled tokens).

    ``feat_std``: std across the batch, averaged over channels (near 0 when every input maps to the same point).
    ``eff_rank``: exp of the entropy of the normalised singular values of the centred features (1 when all
    variance lies along one direction, up to min(B, D) when spread evenly).
    """
    f = features.float()
    std = f.std(dim=0).mean().item() if f.shape[0] > 1 else 0.0
    s = torch.linalg.svdvals(f - f.mean(dim=0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return {"feat_std": std, "eff_rank": float(entropy.exp())}
