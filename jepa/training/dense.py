"""V-JEPA 2.1's dense term: the context loss, its distance weights and the schedule of its weight.

With dense prediction the predictor also predicts the target encoder's features at the *context* positions
(``predictor_proj_context``); the context loss regresses those predictions with the prediction loss's
``|z - h| ** p / p``, optionally weighting each context token by ``1 / sqrt(d)``, ``d`` its Euclidean distance on
the ``(t, h, w)`` token grid to the nearest token being predicted (tokens far from the masked region are easy to
copy and count less). Its weight ``lambda`` is 0 until a start step, ramps linearly to its value at an end step and
is then held, separately for images and video (the official ``Lambda_LinearWarmupHold``).
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from jepa.masks import repeat_interleave_batch
from jepa.models.pos_embed import Grid

# The official offset divides distances by grid_size // 16: 16 tokens is its reference grid (256 px at patch 16).
REFERENCE_GRID = 16


def token_coordinates(ids: Tensor, grid: Grid) -> Tensor:
    """Grid coordinates ``(t, h, w)`` ``[..., K, 3]`` (float32) of token indices ``ids`` ``[..., K]`` on a token
    grid ``(T, H, W)`` whose tokens are numbered in ``(t, h, w)`` row-major order."""
    _, height, width = grid
    t, rest = ids.div(height * width, rounding_mode="floor"), ids.remainder(height * width)
    h, w = rest.div(width, rounding_mode="floor"), rest.remainder(width)
    return torch.stack([t, h, w], dim=-1).float()


@torch.no_grad()
def context_distances(
    masks_ctxt: Sequence[Tensor], masks_tgt: Sequence[Tensor], grid: Grid, offset: bool = False
) -> Tensor:
    """``sqrt(d)`` per context token: ``d`` the Euclidean distance on the token grid ``grid`` ``(T, H, W)`` (images
    ``(1, H, W)``) to the nearest token of the target mask the prediction was made for; with ``offset`` ``d`` is
    first divided by ``H // 16`` (the official ``offset_context_loss``). The context loss divides by it.

    Args:
        masks_ctxt: ``M_c`` LongTensors ``[B, K_c]``, the context tokens (the predictor's ``masks_ctxt``).
        masks_tgt: ``M_t`` LongTensors ``[B, K_t]``, the predicted tokens.

    Returns:
        ``[M_t * M_c * B, K_c]``, rows in the predictor's order for its context predictions (for target mask 0
        every context chunk, then target mask 1, ...). One ``cdist`` over every pair of tokens at once (no loop
        over tokens): ``M_t * M_c * B * K_c * K_t`` float32 distances are held for a moment.

    Raises:
        ValueError: ``offset`` on a grid lower than 16 tokens (the official divisor ``H // 16`` would be 0); a
            context token that is also a target (``d == 0``, an infinite weight). On CPU this is checked at once;
            on an accelerator it is an asynchronous device assertion, so the step keeps free of host syncs.
    """
    divisor = grid[1] // REFERENCE_GRID
    if offset and divisor == 0:
        raise ValueError(
            f"offset_context_loss divides distances by grid height // {REFERENCE_GRID} (the official reference grid), "
            f"but this group's token grid {tuple(grid)} is lower than {REFERENCE_GRID} tokens"
        )
    masks_ctxt, masks_tgt = list(masks_ctxt), list(masks_tgt)
    batch = masks_ctxt[0].shape[0]
    ctxt = torch.cat(masks_ctxt, dim=0).repeat(len(masks_tgt), 1)
    tgt = repeat_interleave_batch(torch.cat(masks_tgt, dim=0), batch, repeat=len(masks_ctxt))
    # The direct (not matrix-product) evaluation: exact on integer grid coordinates, whatever TF32 setting, so a
    # distance of 0 is exactly 0.
    exact = "donot_use_mm_for_euclid_dist"
    d = torch.cdist(token_coordinates(ctxt, grid), token_coordinates(tgt, grid), compute_mode=exact).amin(dim=-1)
    positive = (d > 0).all()
    message = "context and target masks overlap: a context token at distance 0 from a target would weigh 1 / 0"
    if d.device.type == "cpu":
        if not positive:
            raise ValueError(message)
    else:
        torch._assert_async(positive, message)
    if offset:
        d = d / divisor
    return d.sqrt()


def context_loss(z: Tensor, h: Tensor, loss_exp: float = 1.0, distances: Tensor | None = None) -> Tensor:
    """``mean(|z - h| ** loss_exp / w) / loss_exp`` over context predictions ``z`` and targets ``h``
    ``[R, K_c, D]``; ``w`` ``[R, K_c]`` the :func:`context_distances` of each token, or 1 for every token."""
    err = (z - h).abs().pow(loss_exp)
    if distances is not None:
        err = err * distances.reciprocal().unsqueeze(-1)
    return err.mean() / loss_exp


def context_lambda_at(step: int, value: float, start: int, end: int) -> float:
    """The context loss's weight at ``step``: 0 before ``start``, ``value * (step - start) / (end - start)`` on
    ``[start, end)``, ``value`` from ``end`` on (the official ``Lambda_LinearWarmupHold``); a function of the step
    alone, so a resumed run needs no replay."""
    if end <= start:
        raise ValueError(f"lambda_end ({end}) must be greater than lambda_start ({start})")
    if step < start:
        return 0.0
    if step >= end:
        return float(value)
    return float(value) * (step - start) / (end - start)
