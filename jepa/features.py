"""Features of a frozen encoder for downstream use: token grids and pooled vectors.

An encoder returns tokens ``[B, N, D]`` in (t, h, w) row-major order over the input's token grid ``(T, H, W)``
(``encoder.input_grid(x)``; ``T == 1`` for an image, also one given to a video model). The helpers here reshape
them to that grid and pool them into one vector per input (mean) or per learned query (attentive, with a trained
probe).

Example::

    tokens = encoder.forward_features(x)                  # [B, N, D]
    grid = tokens_to_grid(tokens, encoder.input_grid(x))  # [B, T, H, W, D]
    vec = mean_pool(tokens)                               # [B, D]
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from jepa.models.attentive_pooler import AttentiveClassifier, AttentivePooler

POOLINGS = ("mean", "none")


def _check_tokens(tokens: Tensor) -> None:
    if not isinstance(tokens, Tensor) or tokens.dim() != 3:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a tensor [B, N, D], got {shape}")


def tokens_to_grid(tokens: Tensor, grid: Sequence[int]) -> Tensor:
    """Tokens ``[B, N, D]`` -> ``[B, T, H, W, D]`` on the token grid ``grid = (T, H, W)`` (``N == T * H * W``).

    ``grid`` is what ``encoder.input_grid(x)`` returns for the encoded input; a 2D grid ``(H, W)`` is taken as
    ``(1, H, W)``. Tokens kept by a mask are not a full grid and cannot be reshaped.
    """
    _check_tokens(tokens)
    grid = tuple(int(g) for g in grid)
    if len(grid) == 2:
        grid = (1, *grid)
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid must be (T, H, W) or (H, W) of positive sizes, got {grid}")
    b, n, d = tokens.shape
    t, h, w = grid
    if n != t * h * w:
        raise ValueError(f"{n} tokens do not fill the grid {grid} ({t * h * w} tokens)")
    return tokens.reshape(b, t, h, w, d)


def mean_pool(tokens: Tensor, grid: Sequence[int] | None = None, keep_time: bool = False) -> Tensor:
    """Average of the tokens: ``[B, N, D]`` -> ``[B, D]``.

    With ``keep_time`` (needs ``grid = (T, H, W)``) each time step is averaged over space alone: ``[B, T, D]``,
    one vector per tubelet of frames, in temporal order.
    """
    _check_tokens(tokens)
    if not keep_time:
        return tokens.mean(dim=1)
    if grid is None:
        raise ValueError("mean_pool(keep_time=True) needs the token grid (T, H, W): pass encoder.input_grid(x)")
    return tokens_to_grid(tokens, grid).mean(dim=(2, 3))


@torch.no_grad()
def attentive_pool(tokens: Tensor, probe: AttentivePooler | AttentiveClassifier) -> Tensor:
    """Pool tokens ``[B, N, D]`` with the learned queries of a trained attentive probe.

    Args:
        tokens: encoder outputs of the width the probe was trained on.
        probe: an :class:`AttentivePooler`, or an :class:`AttentiveClassifier` (as ``jepa.load_classifier``
            returns), whose pooler is used and whose linear classifier is not.

    Returns:
        ``[B, D]`` for a one-query probe (every classifier), else ``[B, num_queries, D]``. Gradients are not
        tracked: this is for reading features out of frozen models.
    """
    _check_tokens(tokens)
    pooler = probe.pooler if isinstance(probe, AttentiveClassifier) else probe
    if not isinstance(pooler, AttentivePooler):
        raise TypeError(f"probe must be an AttentivePooler or AttentiveClassifier, got {type(probe).__name__}")
    width = pooler.query_tokens.shape[-1]
    if tokens.shape[-1] != width:
        raise ValueError(f"tokens are {tokens.shape[-1]} wide but the probe was built for width {width}")
    pooled = pooler(tokens)
    return pooled.squeeze(1) if pooled.shape[1] == 1 else pooled


def pool(tokens: Tensor, how: str) -> Tensor:
    """``"mean"`` -> :func:`mean_pool` ``[B, D]``; ``"none"`` -> the tokens themselves ``[B, N, D]``."""
    if how == "mean":
        return mean_pool(tokens)
    if how == "none":
        _check_tokens(tokens)
        return tokens
    raise ValueError(f"unknown pooling {how!r}; valid: {', '.join(POOLINGS)}")
