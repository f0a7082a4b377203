"""3D rotary position embedding in the two channel layouts of the released V-JEPA weights.

Each attention head splits its channels into a time, a height and a width part of ``2 * (head_dim // 6)``
channels each (the rest are left unrotated). Within a part of ``d`` channels the rotation angles are
``pos * 10000 ** (-j / (d / 2))`` for ``j < d / 2`` and the rotated pairs are adjacent channels ``(2i, 2i + 1)``.
The cosines/sines are laid out in one of two ways:

* ``"duplicated"`` (V-JEPA 2): two concatenated copies ``[a_0 .. a_{d/2-1}, a_0 .. a_{d/2-1}]``, so the two
  channels of a pair generally turn by different angles. That is not the textbook RoPE, but the released V-JEPA 2
  weights were trained with it, so it is reproduced exactly here.
* ``"pairwise"`` (V-JEPA 2.1): each angle repeated for its pair ``[a_0, a_0, a_1, a_1, ..]``, so pair ``i`` is a
  plane rotation by ``a_i`` (the textbook RoPE).

``reference_grid`` (V-JEPA 2.1's ``interpolate_rope``) rescales height and width positions to a fixed grid:
``h -> h * (G - 1) / (H - 1)`` for an input of ``H`` rows (likewise for the width), so the first and last rows sit
where they sat at the ``G``-token training grid, whatever the resolution; time positions are left as they are.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

RopeLayout = Literal["duplicated", "pairwise"]
ROPE_LAYOUTS: tuple[str, ...] = ("duplicated", "pairwise")
# interpolate_rope's reference grid per patch size: the 256 px (patch 16) / 252 px (patch 14) training crop.
ROPE_REFERENCE_GRIDS = {14: 252 // 14, 16: 256 // 16}


def rope_axis_dim(head_dim: int) -> int:
    """Channels per axis (time, height, width) for a head of ``head_dim`` channels."""
    return 2 * ((head_dim // 3) // 2)


def rope_reference_grid(patch_size: int) -> int:
    """The grid ``interpolate_rope`` rescales positions to: 16 tokens for patch 16, 18 for patch 14 (the official
    choices; other patch sizes have none)."""
    if patch_size not in ROPE_REFERENCE_GRIDS:
        raise ValueError(
            f"interpolate_rope has a reference grid for patch sizes {sorted(ROPE_REFERENCE_GRIDS)} only, got "
            f"patch_size={patch_size}"
        )
    return ROPE_REFERENCE_GRIDS[patch_size]


def check_rope_layout(layout: str) -> None:
    if layout not in ROPE_LAYOUTS:
        raise ValueError(f"rope_layout must be one of {', '.join(map(repr, ROPE_LAYOUTS))}, got {layout!r}")


def split_positions(ids: Tensor, grid_hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Token indices in (t, h, w) row-major order -> their (t, h, w) coordinates."""
    h, w = grid_hw
    per_frame = h * w
    t_ids = ids // per_frame
    rem = ids - per_frame * t_ids
    h_ids = rem // w
    w_ids = rem - w * h_ids
    return t_ids, h_ids, w_ids


def _rescale(pos: Tensor, size: int, reference: int) -> Tensor:
    # The official order of operations (pos * (G - 1) / (n - 1), in float32). A one-token axis has one position, 0,
    # which stays 0 (the official formula divides by zero there).
    pos = pos.to(torch.float32)
    return pos if size <= 1 else pos * (reference - 1) / (size - 1)


def _angles(pos: Tensor, dim: int, layout: str) -> Tensor:
    # float32 throughout, in the same order of operations as the released code, so angles match bit for bit.
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    freq = pos.to(torch.float32).unsqueeze(-1) * omega
    if layout == "pairwise":
        return freq.repeat_interleave(2, dim=-1)
    return torch.cat([freq, freq], dim=-1)


@dataclass
class Rope3D:
    """Cosines and sines for a set of token positions, ready to rotate queries and keys.

    ``cos`` and ``sin`` are ``[..., N, 3 * axis_dim]`` and broadcast against ``[B, heads, N, head_dim]``.
    """

    cos: Tensor
    sin: Tensor

    @classmethod
    def from_ids(
        cls,
        ids: Tensor,
        grid_hw: tuple[int, int],
        head_dim: int,
        layout: RopeLayout | str = "duplicated",
        reference_grid: int | None = None,
    ) -> "Rope3D":
        """``ids``: token indices ``[N]`` (shared by the batch) or ``[B, N]`` (one row per sample) on a token grid
        of ``grid_hw = (H, W)`` per time step; ``layout`` as in the module docstring; ``reference_grid``: rescale
        height and width positions to a grid of that many tokens (None: the positions as they are)."""
        check_rope_layout(layout)
        dim = rope_axis_dim(head_dim)
        if dim == 0:
            raise ValueError(f"head width {head_dim} is too small for 3D RoPE (needs at least 6 channels)")
        t_pos, h_pos, w_pos = split_positions(ids, grid_hw)
        if reference_grid is not None:
            h_pos, w_pos = _rescale(h_pos, grid_hw[0], reference_grid), _rescale(w_pos, grid_hw[1], reference_grid)
        angles = torch.cat([_angles(p, dim, layout) for p in (t_pos, h_pos, w_pos)], dim=-1)
        if ids.dim() == 2:
            angles = angles.unsqueeze(1)  # broadcast over heads
        return cls(cos=angles.cos(), sin=angles.sin())

    def rotate(self, x: Tensor) -> Tensor:
        """Rotate ``x`` ``[B, heads, N, head_dim]``; channels past the three rotated parts pass through."""
        r = self.cos.shape[-1]
        x_rot, x_pass = x[..., :r], x[..., r:]
        pairs = x_rot.unflatten(-1, (-1, 2))
        swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        out = x_rot * self.cos.to(x.dtype) + swapped * self.sin.to(x.dtype)
        return torch.cat([out, x_pass], dim=-1) if x_pass.shape[-1] else out
