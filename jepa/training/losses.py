"""Prediction losses, the per-level target norm of V-JEPA 2.1, V-JEPA's spread regulariser and the collapse signals
logged during training (V-JEPA 2.1's context loss: :mod:`jepa.training.dense`)."""

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


def layer_norm_levels(h: Tensor, levels: int = 1) -> Tensor:
    """Layer norm without affine over each of the ``levels`` equal chunks of the channels of ``h`` ``[..., L * D]``
    (V-JEPA 2.1's deep-supervised targets: every level normalised on its own, then concatenated); one level is
    the plain layer norm over all channels, as both V-JEPA papers normalise their targets."""
    if levels == 1:
        return F.layer_norm(h, (h.shape[-1],))
    if levels < 1 or h.shape[-1] % levels:
        raise ValueError(f"cannot split {h.shape[-1]} channels into {levels} levels of equal width")
    width = h.shape[-1] // levels
    return F.layer_norm(h.unflatten(-1, (levels, width)), (width,)).flatten(-2)


def spread_regulariser(preds: Sequence[Tensor], eps: float = 1e-4) -> Tensor:
    """V-JEPA's hinge ``mean(relu(1 - std))`` on the predictions' standard deviation across tokens.

    ``preds``: one ``[B, K, D]`` tensor per mask config; their per-sample, per-channel std over the ``K`` tokens
    is averaged over configs before the hinge.
    """
    std = functools.reduce(torch.add, [torch.sqrt(z.float().var(dim=1) + eps) for z in preds]) / len(preds)
    return F.relu(1.0 - std).mean()


@torch.no_grad()
def collapse_stats(features: Tensor, sigreg_directions: int = 64) -> dict[str, float]:
    """Signals of representation collapse from per-sample features ``[B, D]`` (e.g. mean-pooled tokens).

    ``feat_std``: std across the batch, averaged over channels (near 0 when every input maps to the same point).
    ``eff_rank``: exp of the entropy of the normalised singular values of the centred features (1 when all
    variance lies along one direction, up to min(B, D) when spread evenly); ``eff_rank_rel`` the same over the
    width D (dimensional collapse shows as a small share even when ``feat_std`` looks healthy).
    ``sigreg``: the SIGReg statistic (:mod:`jepa.training.sigreg`) of the features centred and scaled to unit mean
    variance, so it measures their shape (about 1 for an isotropic Gaussian cloud, growing with anisotropy), not
    their scale; directions drawn from a fixed seed, so values are comparable across steps.
    """
    from jepa.training.sigreg import SIGReg

    f = features.float()
    std = f.std(dim=0).mean().item() if f.shape[0] > 1 else 0.0
    centred = f - f.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(centred)
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    eff_rank = float(entropy.exp())
    scale = centred.pow(2).mean().sqrt().clamp_min(1e-12)
    sigreg = float(SIGReg(sigreg_directions)(centred / scale, step=0)) if f.shape[0] > 1 else float("nan")
    return {"feat_std": std, "eff_rank": eff_rank, "eff_rank_rel": eff_rank / f.shape[1], "sigreg": sigreg}


@torch.no_grad()
def position_share(tokens: Tensor) -> Tensor:
    """The share of the variance of tokens ``[B, N, D]`` (around their overall mean) that the token's position
    alone explains: ``B * sum_n |mean_b h[b, n] - mean h|^2 / sum_{b, n} |h[b, n] - mean h|^2``, in [0, 1]. Near 1:
    every sample's token at a position is nearly the same (features that encode where, not what)."""
    h = tokens.float()
    overall = h.mean(dim=(0, 1), keepdim=True)
    total = (h - overall).pow(2).sum()
    per_position = h.mean(dim=0, keepdim=True)
    explained = h.shape[0] * (per_position - overall).pow(2).sum()
    return explained / total.clamp_min(1e-12)
