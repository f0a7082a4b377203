"""Position encodings: sine-cosine tables (1D/2D/3D) against a NumPy re-derivation, their resampling, and the 3D
RoPE against a loop-by-loop implementation of the formula in ``jepa/models/rope.py``'s docstring."""

import math

import numpy as np
import pytest
import torch
from conftest import EMBED_DIM, IMG, NUM_HEADS, make_encoder, make_input, num_tokens

from jepa.models.pos_embed import interpolate_pos_embed, sincos_1d, sincos_2d, sincos_3d
from jepa.models.rope import Rope3D, rope_axis_dim, split_positions

# ----------------------------------------------------------------------------------------------------------------
# NumPy references, written from the formulas (not from the library code)


def ref_1d(dim: int, pos: float) -> np.ndarray:
    """omega_j = 1 / 10000^(j / (D/2)) for j < D/2; [sin(pos * omega), cos(pos * omega)]."""
    half = dim // 2
    omega = np.array([1.0 / 10000 ** (j / (dim / 2)) for j in range(half)], dtype=np.float64)
    return np.concatenate([np.sin(pos * omega), np.cos(pos * omega)])


def ref_2d(dim: int, h: int, w: int) -> np.ndarray:
    rows = []
    for i in range(h):  # row-major over (h, w)
        for j in range(w):
            rows.append(np.concatenate([ref_1d(dim // 2, i), ref_1d(dim // 2, j)]))
    return np.stack(rows)


def ref_3d(dim: int, t: int, h: int, w: int, uniform_power: bool) -> np.ndarray:
    if uniform_power:
        dt = dh = dw = 2 * math.ceil(dim / 6)
    else:
        dt, dh, dw = dim // 2, dim // 4, dim // 4
    rows = []
    for a in range(t):  # row-major over (t, h, w)
        for i in range(h):
            for j in range(w):
                rows.append(np.concatenate([ref_1d(dt, a), ref_1d(dh, i), ref_1d(dw, j)])[:dim])
    return np.stack(rows)


# ----------------------------------------------------------------------------------------------------------------
# sine-cosine tables


@pytest.mark.parametrize("dim", [8, 48, 64])
def test_sincos_1d_matches_formula(dim):
    pos = torch.tensor([0.0, 1.0, 2.5, 7.0, 13.0])
    got = sincos_1d(dim, pos).numpy()
    want = np.stack([ref_1d(dim, p) for p in pos.tolist()])
    assert got.shape == (5, dim)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_sincos_1d_rejects_odd_width():
    with pytest.raises(ValueError):
        sincos_1d(7, torch.arange(3.0))


@pytest.mark.parametrize("dim,hw", [(48, (4, 4)), (48, (3, 5)), (64, (2, 7))])
def test_sincos_2d_matches_formula(dim, hw):
    got = sincos_2d(dim, hw)
    assert got.dtype == torch.float32
    assert got.shape == (hw[0] * hw[1], dim)
    np.testing.assert_allclose(got.numpy(), ref_2d(dim, *hw), atol=1e-6, rtol=0)


@pytest.mark.parametrize("uniform_power", [False, True], ids=["halves", "uniform"])
@pytest.mark.parametrize("dim,grid", [(48, (2, 3, 4)), (40, (3, 2, 2)), (64, (2, 4, 4))])
def test_sincos_3d_matches_formula(dim, grid, uniform_power):
    got = sincos_3d(dim, grid, uniform_power=uniform_power)
    assert got.dtype == torch.float32
    assert got.shape == (math.prod(grid), dim)
    np.testing.assert_allclose(got.numpy(), ref_3d(dim, *grid, uniform_power), atol=1e-6, rtol=0)


def test_sincos_3d_uniform_power_truncates_to_width():
    # 2 * ceil(40 / 6) = 14 channels per axis: 42 channels built, cut to 40 -> the last w channels are dropped.
    table = sincos_3d(40, (2, 2, 2), uniform_power=True)
    assert table.shape == (8, 40)
    w_part = torch.from_numpy(np.stack([ref_1d(14, j) for _ in range(4) for j in range(2)])).float()
    torch.testing.assert_close(table[:, 28:40], w_part[:, :12], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# resampling


@pytest.mark.parametrize("video", [False, True])
def test_interpolate_pos_embed_is_identity_on_same_grid(video):
    grid = (2, 4, 4) if video else (1, 4, 4)
    table = torch.randn(1, math.prod(grid), 16)
    out = interpolate_pos_embed(table, grid, grid, video)
    assert torch.equal(out, table)


def test_interpolate_2d_keeps_rows_when_only_width_changes():
    # (4, 4) -> (4, 6): the height channels (first D/2) are constant along the width, so bicubic resampling along
    # the width must leave them equal to the height encoding of each row; tokens stay row-major.
    dim = 32
    table = sincos_2d(dim, (4, 4)).unsqueeze(0)
    out = interpolate_pos_embed(table, (1, 4, 4), (1, 4, 6), video=False)
    assert out.shape == (1, 24, dim)
    want_h = torch.from_numpy(np.stack([ref_1d(dim // 2, i) for i in range(4) for _ in range(6)])).float()
    torch.testing.assert_close(out[0, :, : dim // 2], want_h, atol=1e-5, rtol=0)


def test_interpolate_3d_keeps_time_channels_when_only_space_changes():
    dim = 32
    table = sincos_3d(dim, (2, 4, 4)).unsqueeze(0)
    out = interpolate_pos_embed(table, (2, 4, 4), (2, 6, 6), video=True)
    assert out.shape == (1, 72, dim)
    want_t = torch.from_numpy(np.stack([ref_1d(dim // 2, t) for t in range(2) for _ in range(36)])).float()
    torch.testing.assert_close(out[0, :, : dim // 2], want_t, atol=1e-5, rtol=0)


def test_encoder_pos_embed_is_the_sincos_table(num_frames):
    enc = make_encoder(num_frames)
    if num_frames == 1:
        want = ref_2d(EMBED_DIM, 4, 4)
    else:
        want = ref_3d(EMBED_DIM, 2, 4, 4, uniform_power=False)
    assert enc.pos_embed.shape == (1, num_tokens(num_frames), EMBED_DIM)
    assert not enc.pos_embed.requires_grad
    np.testing.assert_allclose(enc.pos_embed[0].detach().numpy(), want, atol=1e-6, rtol=0)


def test_encoder_adds_pos_embed_unchanged_at_construction_size(num_frames):
    enc = make_encoder(num_frames)
    x = make_input(num_frames)
    tokens, grid = enc.prepare_tokens(x)
    assert grid == ((2 if num_frames > 1 else 1), 4, 4)
    torch.testing.assert_close(tokens - enc.patch_embed(x), enc.pos_embed.expand(2, -1, -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("hw", [(48, 48), (48, 32), (32, 48)], ids=["48x48", "48x32", "32x48"])
def test_encoder_at_other_resolution(num_frames, hw):
    enc = make_encoder(num_frames).eval()
    x = make_input(num_frames, img_size=hw)
    tokens, grid = enc.prepare_tokens(x)
    t = 2 if num_frames > 1 else 1
    assert grid == (t, hw[0] // 8, hw[1] // 8)
    n = num_tokens(num_frames, hw)
    assert tokens.shape == (2, n, EMBED_DIM)
    pos = (tokens - enc.patch_embed(x))[0]
    # The position part is shared by the batch and the height channels only depend on the row.
    torch.testing.assert_close(pos, (tokens - enc.patch_embed(x))[1], atol=1e-6, rtol=0)
    if num_frames == 1 and hw[0] == IMG:  # height unchanged: its channels are exact
        want_h = torch.from_numpy(np.stack([ref_1d(EMBED_DIM // 2, i) for i in range(4) for _ in range(hw[1] // 8)]))
        torch.testing.assert_close(pos[:, : EMBED_DIM // 2], want_h.float(), atol=1e-5, rtol=0)
    if num_frames == 1 and hw[1] == IMG:  # width unchanged: its channels are exact
        want_w = torch.from_numpy(np.stack([ref_1d(EMBED_DIM // 2, j) for _ in range(hw[0] // 8) for j in range(4)]))
        torch.testing.assert_close(pos[:, EMBED_DIM // 2 :], want_w.float(), atol=1e-5, rtol=0)
    if num_frames > 1:  # time unchanged: the time channels are exact
        want_t = torch.from_numpy(np.stack([ref_1d(EMBED_DIM // 2, a) for a in range(2) for _ in range(n // 2)]))
        torch.testing.assert_close(pos[:, : EMBED_DIM // 2], want_t.float(), atol=1e-5, rtol=0)
    out = enc(x)
    assert out.shape == (2, n, EMBED_DIM)
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------------------------
# RoPE


def ref_rope(x: np.ndarray, positions: list[tuple[int, int, int]], head_dim: int) -> np.ndarray:
    """``x`` [N, head_dim], ``positions`` [(t, h, w)] * N -> rotated copy, with explicit loops."""
    d = 2 * ((head_dim // 3) // 2)
    out = x.astype(np.float64).copy()
    for n, pos in enumerate(positions):
        for axis in range(3):  # t, h, w
            p = pos[axis]
            angles = [p * 10000 ** (-j / (d / 2)) for j in range(d // 2)]
            c = [math.cos(a) for a in angles] * 2  # two concatenated copies
            s = [math.sin(a) for a in angles] * 2
            base = axis * d
            for i in range(d // 2):
                x0, x1 = float(x[n, base + 2 * i]), float(x[n, base + 2 * i + 1])
                out[n, base + 2 * i] = x0 * c[2 * i] - x1 * s[2 * i]
                out[n, base + 2 * i + 1] = x1 * c[2 * i + 1] + x0 * s[2 * i + 1]
    return out


def test_rope_axis_dim():
    assert [rope_axis_dim(h) for h in (6, 8, 12, 16, 64, 128)] == [2, 2, 4, 4, 20, 42]


def test_split_positions_non_square():
    H, W, T = 2, 3, 3
    ids = torch.arange(T * H * W)
    t, h, w = split_positions(ids, (H, W))
    for i in range(T * H * W):
        assert (t[i].item(), h[i].item(), w[i].item()) == (i // (H * W), (i % (H * W)) // W, i % W)


@pytest.mark.parametrize("head_dim", [8, 12, 16, 20])
def test_rope_matches_docstring_formula(head_dim):
    H, W = 2, 3
    ids = torch.tensor([0, 5, 7, 11, 3, 16, 9])  # unsorted positions over 3 frames of a 2x3 grid
    x = torch.randn(2, 2, len(ids), head_dim)  # [B, heads, N, head_dim]
    got = Rope3D.from_ids(ids, (H, W), head_dim).rotate(x)
    assert got.shape == x.shape
    positions = [(i // (H * W), (i % (H * W)) // W, i % W) for i in ids.tolist()]
    for b in range(2):
        for h in range(2):
            want = ref_rope(x[b, h].numpy(), positions, head_dim)
            np.testing.assert_allclose(got[b, h].numpy(), want, atol=1e-5, rtol=0)
    # channels past the three rotated parts pass through unchanged
    r = 3 * rope_axis_dim(head_dim)
    assert torch.equal(got[..., r:], x[..., r:])


def test_rope_per_sample_ids_equal_shared_ids():
    head_dim = 16
    ids = torch.stack([torch.tensor([0, 4, 9, 13]), torch.tensor([15, 2, 6, 1])])
    x = torch.randn(2, 3, 4, head_dim)
    got = Rope3D.from_ids(ids, (2, 4), head_dim).rotate(x)
    for b in range(2):
        want = Rope3D.from_ids(ids[b], (2, 4), head_dim).rotate(x[b : b + 1])
        torch.testing.assert_close(got[b : b + 1], want, atol=0, rtol=0)


def test_rope_rejects_too_narrow_heads():
    with pytest.raises(ValueError):
        Rope3D.from_ids(torch.arange(4), (2, 2), head_dim=5)


def test_rope_encoder_has_no_pos_embed(num_frames):
    enc = make_encoder(num_frames, use_rope=True)
    assert enc.pos_embed is None
    assert not any("pos_embed" in k for k in enc.state_dict())
    sincos = make_encoder(num_frames)
    assert "pos_embed" in sincos.state_dict()


def test_rope_encoder_equals_blocks_with_rope_on_token_grid(num_frames):
    enc = make_encoder(num_frames, use_rope=True).eval()
    x = make_input(num_frames)
    tokens, grid = enc.prepare_tokens(x)
    torch.testing.assert_close(tokens, enc.patch_embed(x), atol=0, rtol=0)  # no additive positions
    rope = Rope3D.from_ids(torch.arange(tokens.shape[1]), grid[1:], EMBED_DIM // NUM_HEADS)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc.run_blocks(tokens, rope), atol=1e-6, rtol=0)


@pytest.mark.parametrize("handle_nonsquare", [True, False])
def test_rope_encoder_non_square_input_grid(handle_nonsquare):
    # A 32x32 model on a 32x48 input (grid 4x6): positions are decoded on the input grid by default, and on the
    # square construction grid (4x4), as the released code does, with handle_nonsquare_inputs=False.
    enc = make_encoder(1, use_rope=True, handle_nonsquare_inputs=handle_nonsquare).eval()
    x = make_input(1, img_size=(32, 48))
    grid_hw = (4, 6) if handle_nonsquare else (4, 4)
    rope = Rope3D.from_ids(torch.arange(24), grid_hw, EMBED_DIM // NUM_HEADS)
    with torch.no_grad():
        out = enc(x)
        torch.testing.assert_close(out, enc.run_blocks(enc.patch_embed(x), rope), atol=1e-6, rtol=0)
        other = Rope3D.from_ids(torch.arange(24), (4, 4) if handle_nonsquare else (4, 6), EMBED_DIM // NUM_HEADS)
        assert not torch.allclose(out, enc.run_blocks(enc.patch_embed(x), other), atol=1e-4)
