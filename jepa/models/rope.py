"""3D rotary position embedding with the channel layout of the released V-JEPA 2 weights.

Each attention head splits its channels into a time, a height and a width part of ``2 * (head_dim // 6)``
channels each (the rest are left unrotated). Within a part of ``d`` channels the rotation angles are
``pos * 10000 ** (-j / (d / 2))`` for ``j < d / 2`` and the cosines/sines are laid out as two concatenated copies
``[a_0 .. a_{d/2-1}, a_0 .. a_{d/2-1}]``, while the rotated pairs are adjacent channels ``(2i, 2i + 1)``. So the
two channels of a pair generally turn by different angles. That is not the textbook RoPE, but the released
V-JEPA 2 weights were trained with it, so it is reproduced exactly here.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


def rope_axis_dim(head_dim: int) -> int:
    """Channels per axis (time, height, width) for a head of ``head_dim`` channels."""
    return 2 * ((head_dim // 3) // 2)


def split_positions(ids: Tensor, grid_hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Token indices in (t, h, w) row-major order -> their (t, h, w) coordinates."""
    h, w = grid_hw
    per_frame = h * w
    t_ids = ids // per_frame
    rem = ids - per_frame * t_ids
    h_ids = rem // w
    w_ids = rem - w * h_ids
    return t_ids, h_ids, w_ids


def _angles(pos: Tensor, dim: int) -> Tensor:
    # float32 throughout, in the same order of operations as the released code, so angles match bit for bit.
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    freq = pos.to(torch.float32).unsqueeze(-1) * omega
    return torch.cat([freq, freq], dim=-1)


@dataclass
class Rope3D:
    """Cosines and sines for a set of token positions, ready to rotate queries and keys.

    ``cos`` and ``sin`` are ``[..., N, 3 * axis_dim]`` and broadcast against ``[B, heads, N, head_dim]``.
    """

    cos: Tensor
    sin: Tensor

    @classmethod
    def from_ids(cls, ids: Tensor, grid_hw: tuple[int, int], head_dim: int) -> "Rope3D":
        """``ids``: token indices ``[N]`` (shared by the batch) or ``[B, N]`` (one row per sample)."""
        dim = rope_axis_dim(head_dim)
        if dim == 0:
            raise ValueError(f"head width {head_dim} is too small for 3D RoPE (needs at least 6 channels)")
        angles = torch.cat([_angles(p, dim) for p in split_positions(ids, grid_hw)], dim=-1)
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
