"""The transformer trunk that the encoder, the predictor and the attentive pooler share.

A trunk is a plain :class:`nn.ModuleList` of :class:`Block` that each model keeps under its official attribute name
(``blocks``, ``predictor_blocks``, ``pooler.blocks``), so state-dict keys carry no extra prefix. These functions
build it (with the stochastic-depth ramp), run it (with optional activation checkpointing, optionally keeping
intermediate outputs) and give it the official initialisation.
"""

from collections.abc import Callable, Collection, Iterable
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from jepa.models.layers import Block, CrossAttentionBlock, init_weights
from jepa.models.rope import Rope3D


def drop_path_ramp(depth: int, drop_path_rate: float) -> list[float]:
    """Stochastic-depth rate of each of ``depth`` blocks: linear from 0 (first block) to ``drop_path_rate`` (last)."""
    return [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]


def build_blocks(depth: int, drop_path_rate: float, make_block: Callable[..., nn.Module]) -> nn.ModuleList:
    """``depth`` blocks ``make_block(drop_path=rate)`` with the rates of :func:`drop_path_ramp`, as a plain
    :class:`nn.ModuleList` for the model to keep under its official attribute name.

    ``make_block`` is typically ``partial(Block, dim, num_heads, ...)``: a block over tokens ``[B, N, dim]``. The
    blocks are built in order (their default initialisation draws from the global RNG in that order).
    """
    return nn.ModuleList(make_block(drop_path=rate) for rate in drop_path_ramp(depth, drop_path_rate))


def run_block(
    block: nn.Module, x: Tensor, rope: Rope3D | None = None, checkpointing: bool = False,
    attn_mask: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """One block over tokens ``[B, N, D]`` -> ``[B, N, D]``; with ``checkpointing`` (and autograd on) its
    activations are recomputed in the backward pass instead of stored (the RNG state is replayed, so stochastic
    depth and dropout draw the same masks). ``attn_mask``: a boolean ``[N, N]`` (``True``: may attend)."""
    if attn_mask is None:  # (the call every encoder and predictor makes, unchanged)
        if checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, rope, use_reentrant=False)
        return block(x, rope)
    if checkpointing and torch.is_grad_enabled():
        return checkpoint(block, x, rope, attn_mask, use_reentrant=False)
    return block(x, rope, attn_mask)


def run_blocks(
    blocks: Iterable[nn.Module], x: Tensor, rope: Rope3D | None = None, checkpointing: bool = False
) -> Tensor:
    """All ``blocks`` in order over tokens ``[B, N, D]`` -> ``[B, N, D]`` (see :func:`run_block`).

    ``rope`` holds the rotary angles of the ``N`` tokens (None: positions are already in ``x``).
    """
    for block in blocks:
        x = run_block(block, x, rope, checkpointing)
    return x


def collect_block_outputs(
    blocks: nn.ModuleList,
    x: Tensor,
    keep: Collection[int],
    rope: Rope3D | None = None,
    checkpointing: bool = False,
    norm: nn.Module | None = None,
) -> list[Tensor]:
    """Outputs ``[B, N, D]`` of the blocks whose 0-based indices are in ``keep``, in block order, each passed
    through ``norm`` when given; blocks after the last kept one are not run. Tokens and ``rope`` as in
    :func:`run_blocks`."""
    outs = []
    for i, block in enumerate(blocks[: max(keep, default=-1) + 1]):
        x = run_block(block, x, rope, checkpointing)
        if i in keep:
            outs.append(x if norm is None else norm(x))
    return outs


@torch.no_grad()
def rescale_residual_branches(blocks: Iterable[nn.Module], first_layer_id: int = 1) -> None:
    """Divide each block's residual output weights by ``sqrt(2 * layer_id)`` (depth-scaled initialisation).

    The weights are ``attn.proj`` (self-attention blocks only; cross-attention applies no projection) and
    ``mlp.fc2``, as the official code does, also for the gated MLP, where ``fc2`` is the gate's second input.
    """
    for layer_id, block in enumerate(blocks, start=first_layer_id):
        if not isinstance(block, (Block, CrossAttentionBlock)):
            raise TypeError(f"cannot rescale a {type(block).__name__}: expected a Block or a CrossAttentionBlock")
        scale = (2.0 * layer_id) ** 0.5
        if isinstance(block, Block):
            block.attn.proj.weight.div_(scale)
        block.mlp.fc2.weight.div_(scale)


def init_trunk(model: nn.Module, blocks: Iterable[nn.Module], std: float) -> None:
    """The official initialisation of a model built around a block stack: :func:`init_weights` over every
    submodule of ``model`` (in registration order), then :func:`rescale_residual_branches` of ``blocks``."""
    model.apply(partial(init_weights, std=std))
    rescale_residual_branches(blocks)
