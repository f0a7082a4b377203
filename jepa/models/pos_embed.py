"""Fixed sine-cosine position tables (1D, 2D, 3D) and their resampling to other token grids.

Tables are computed in float64 and returned as float32, which reproduces the official NumPy tables.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

Grid = tuple[int, int, int]


def sincos_1d(embed_dim: int, pos: Tensor) -> Tensor:
    """``[M]`` positions -> ``[M, embed_dim]``: sines of all frequencies, then cosines."""
    if embed_dim % 2 != 0:
        raise ValueError(f"a sine-cosine embedding needs an even width, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _grid_coords(grid: Grid) -> tuple[Tensor, Tensor, Tensor]:
    t, h, w = grid
    tt, hh, ww = torch.meshgrid(
        torch.arange(t, dtype=torch.float64),
        torch.arange(h, dtype=torch.float64),
        torch.arange(w, dtype=torch.float64),
        indexing="ij",
    )
    return tt, hh, ww


def sincos_2d(embed_dim: int, grid_hw: tuple[int, int]) -> Tensor:
    """Table ``[H * W, D]`` in row-major token order; half the channels encode the row, half the column."""
    _, hh, ww = _grid_coords((1, *grid_hw))
    return torch.cat([sincos_1d(embed_dim // 2, hh), sincos_1d(embed_dim // 2, ww)], dim=1).float()


def sincos_3d(embed_dim: int, grid: Grid, uniform_power: bool = False) -> Tensor:
    """Table ``[T * H * W, D]`` for tubelet tokens in (t, h, w) row-major order.

    Without ``uniform_power`` time takes half the channels and height and width a quarter each (V-JEPA's default);
    with it the three axes share ``2 * ceil(D / 6)`` channels each and the table is cut to ``D``.
    """
    tt, hh, ww = _grid_coords(grid)
    if uniform_power:
        dim_t = dim_h = dim_w = int(math.ceil(embed_dim / 6) * 2)
    else:
        dim_t, dim_h, dim_w = embed_dim // 2, embed_dim // 4, embed_dim // 4
    table = torch.cat([sincos_1d(dim_t, tt), sincos_1d(dim_h, hh), sincos_1d(dim_w, ww)], dim=1)
    return table[:, :embed_dim].float()


def sincos_table(embed_dim: int, grid: Grid, video: bool, uniform_power: bool = False) -> Tensor:
    """The table a model of this modality uses: 3D for video models, 2D (``grid[0] == 1``) for image models."""
    if video:
        return sincos_3d(embed_dim, grid, uniform_power)
    if grid[0] != 1:
        raise ValueError(f"an image position table has one time step, got grid {grid}")
    return sincos_2d(embed_dim, grid[1:])


def interpolate_pos_embed(pos_embed: Tensor, src: Grid, dst: Grid, video: bool) -> Tensor:
    """Resample a position table ``[1, T*H*W, D]`` from grid ``src`` to grid ``dst`` (any aspect ratio).

    Image tables are resampled bicubically over (H, W), video tables trilinearly over (T, H, W), as in the
    official models; the same grid returns the table unchanged.
    """
    if tuple(src) == tuple(dst):
        return pos_embed
    dim = pos_embed.shape[-1]
    if video:
        grid = pos_embed.reshape(1, *src, dim).permute(0, 4, 1, 2, 3)
        out_size, mode = tuple(dst), "trilinear"
    else:
        grid = pos_embed.reshape(1, *src[1:], dim).permute(0, 3, 1, 2)
        out_size, mode = tuple(dst[1:]), "bicubic"
    in_size = grid.shape[2:]
    # The official code passes scale factors rather than sizes; doing the same keeps the sampling positions
    # bit-identical. A factor that floors to the wrong size (e.g. 7/3) falls back to the explicit size.
    scale = tuple(o / i for o, i in zip(out_size, in_size))
    if all(math.floor(i * s) == o for i, s, o in zip(in_size, scale, out_size)):
        out = F.interpolate(grid, scale_factor=scale, mode=mode)
    else:
        out = F.interpolate(grid, size=out_size, mode=mode)
    return out.flatten(2).transpose(1, 2)
