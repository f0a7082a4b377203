"""Mask utilities (``apply_masks``, ``repeat_interleave_batch``) and how the encoder uses them."""

import pytest
import torch
from conftest import EMBED_DIM, NUM_HEADS, make_encoder, make_input, num_tokens, random_mask

from jepa.masks import apply_masks, repeat_interleave_batch
from jepa.models.rope import Rope3D

# ----------------------------------------------------------------------------------------------------------------
# apply_masks


def test_apply_masks_gathers_indexed_tokens():
    x = torch.randn(3, 10, 4)
    m = torch.tensor([[9, 0, 4], [1, 1, 2], [7, 3, 8]])  # unsorted, with a repeated index
    out = apply_masks(x, m)
    assert out.shape == (3, 3, 4)
    for b in range(3):
        for k in range(3):
            assert torch.equal(out[b, k], x[b, m[b, k]])


def test_apply_masks_list_stacks_along_batch():
    x = torch.randn(2, 10, 4)
    masks = [torch.tensor([[0, 1], [2, 3]]), torch.tensor([[9, 8], [7, 6]]), torch.tensor([[5, 5], [0, 9]])]
    out = apply_masks(x, masks)
    assert out.shape == (6, 2, 4)
    for i, m in enumerate(masks):
        for b in range(2):
            for k in range(2):
                assert torch.equal(out[i * 2 + b, k], x[b, m[b, k]])


def test_apply_masks_tensor_equals_singleton_list():
    x = torch.randn(2, 6, 3)
    m = torch.tensor([[5, 0], [3, 1]])
    assert torch.equal(apply_masks(x, m), apply_masks(x, [m]))


@pytest.mark.parametrize(
    "masks",
    [[], torch.tensor([0, 1]), torch.zeros(3, 2, dtype=torch.long)],
    ids=["empty-list", "1d-mask", "wrong-batch"],
)
def test_apply_masks_rejects_bad_masks(masks):
    with pytest.raises(ValueError):
        apply_masks(torch.randn(2, 6, 3), masks)


# ----------------------------------------------------------------------------------------------------------------
# repeat_interleave_batch


def ref_repeat_interleave_batch(x: torch.Tensor, B: int, repeat: int) -> torch.Tensor:
    """From the definition: concatenate, for each chunk x[i*B:(i+1)*B], ``repeat`` consecutive copies of it."""
    pieces = []
    for i in range(x.shape[0] // B):
        chunk = x[i * B : (i + 1) * B]
        for _ in range(repeat):
            pieces.append(chunk)
    return torch.cat(pieces, dim=0)


@pytest.mark.parametrize("B,chunks,repeat", [(2, 3, 2), (3, 1, 4), (1, 4, 3), (2, 2, 1)])
def test_repeat_interleave_batch_matches_definition(B, chunks, repeat):
    x = torch.randn(chunks * B, 5, 3)
    out = repeat_interleave_batch(x, B, repeat)
    assert out.shape == (chunks * repeat * B, 5, 3)
    assert torch.equal(out, ref_repeat_interleave_batch(x, B, repeat))


def test_repeat_interleave_batch_on_index_masks():
    # masks are 2D LongTensors: the same layout must hold
    x = torch.arange(12).reshape(4, 3)  # 2 chunks of B=2
    out = repeat_interleave_batch(x, 2, 2)
    assert out[:, 0].tolist() == [0, 3, 0, 3, 6, 9, 6, 9]


def test_repeat_interleave_batch_rejects_non_multiple():
    with pytest.raises(ValueError):
        repeat_interleave_batch(torch.randn(5, 2), 2, 2)


# ----------------------------------------------------------------------------------------------------------------
# the encoder keeps exactly the indexed tokens


def test_depth0_encoder_with_masks_is_norm_of_gathered_tokens(num_frames):
    enc = make_encoder(num_frames, depth=0).eval()
    x = make_input(num_frames)
    n = num_tokens(num_frames)
    m = random_mask(2, n, 5)
    with torch.no_grad():
        tokens = enc.patch_embed(x) + enc.pos_embed
        want = torch.stack([enc.norm(tokens[b, m[b]]) for b in range(2)])
        torch.testing.assert_close(enc(x, masks=m), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n_masks", [1, 2])
def test_encoder_with_masks_equals_blocks_on_gathered_tokens(num_frames, n_masks):
    enc = make_encoder(num_frames).eval()
    x = make_input(num_frames)
    n = num_tokens(num_frames)
    masks = [random_mask(2, n, 6) for _ in range(n_masks)]
    with torch.no_grad():
        out = enc(x, masks=masks if n_masks > 1 else masks[0])
        assert out.shape == (n_masks * 2, 6, EMBED_DIM)
        tokens, _ = enc.prepare_tokens(x)
        for i, m in enumerate(masks):
            gathered = torch.stack([tokens[b, m[b]] for b in range(2)])
            torch.testing.assert_close(out[2 * i : 2 * i + 2], enc.run_blocks(gathered, None), atol=1e-6, rtol=0)
            # also equal to the same mask passed alone
            torch.testing.assert_close(out[2 * i : 2 * i + 2], enc(x, masks=m), atol=1e-6, rtol=0)


def test_rope_encoder_with_masks_rotates_by_kept_positions(num_frames):
    enc = make_encoder(num_frames, use_rope=True).eval()
    x = make_input(num_frames)
    n = num_tokens(num_frames)
    masks = [random_mask(2, n, 6), random_mask(2, n, 6)]
    with torch.no_grad():
        out = enc(x, masks=masks)
        tokens, grid = enc.prepare_tokens(x)
        for i, m in enumerate(masks):
            gathered = torch.stack([tokens[b, m[b]] for b in range(2)])
            rope = Rope3D.from_ids(m, grid[1:], EMBED_DIM // NUM_HEADS)
            torch.testing.assert_close(out[2 * i : 2 * i + 2], enc.run_blocks(gathered, rope), atol=1e-6, rtol=0)


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_full_permutation_mask_permutes_outputs(num_frames, use_rope):
    # Positions travel with the tokens, so keeping every token in another order only reorders the output.
    enc = make_encoder(num_frames, use_rope=use_rope).eval()
    x = make_input(num_frames)
    n = num_tokens(num_frames)
    perm = torch.stack([torch.randperm(n), torch.randperm(n)])
    with torch.no_grad():
        full = enc(x)
        out = enc(x, masks=perm)
    want = torch.stack([full[b, perm[b]] for b in range(2)])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_masked_tokens_do_not_influence_kept_ones(num_frames):
    enc = make_encoder(num_frames).eval()
    n = num_tokens(num_frames)
    x = make_input(num_frames)
    keep = torch.arange(0, n, 2)[None].repeat(2, 1)  # even tokens: the odd ones are dropped
    y = x.clone()
    # change only the pixels of token 1 (first frame/tubelet, patch row 0, column 1)
    if num_frames > 1:
        y[:, :, :2, :8, 8:16] += 5.0
    else:
        y[:, :, :8, 8:16] += 5.0
    with torch.no_grad():
        assert not torch.allclose(enc(x), enc(y))
        torch.testing.assert_close(enc(x, masks=keep), enc(y, masks=keep), atol=0, rtol=0)
