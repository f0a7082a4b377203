"""Contract tests of the I-JEPA multiblock mask collator and the collate helpers shared by every mask generator."""

import math
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from jepa.image.masks import MultiblockMaskCollator2D
from jepa.masks import MaskCollator, batch_seed, masks_to_grid, truncate_to_min

# (input_size, patch_size) -> a square 14x14 grid and a non-square 8x12 grid.
GRIDS = [pytest.param(224, 16, id="14x14"), pytest.param((64, 96), 8, id="8x12")]


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _batch(indices) -> list[tuple]:
    return [(torch.full((3, 4, 4), float(i)), i % 3, i) for i in indices]


def _bbox(mask: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns spanned by the cells of ``mask``."""
    grid = masks_to_grid(mask, grid_hw)
    rows = grid.any(dim=1).nonzero().flatten()
    cols = grid.any(dim=0).nonzero().flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


class _IndexedDataset(Dataset):
    """Tiny in-memory dataset of ``(image, label, index)``."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> tuple:
        return torch.full((3, 4, 4), float(i)), i % 3, i


def test_batch_seed_is_deterministic_and_depends_on_every_input():
    s = batch_seed(0, [1, 2, 3])
    assert s == batch_seed(0, [1, 2, 3])
    assert 0 <= s < 2**63
    assert len({s, batch_seed(1, [1, 2, 3]), batch_seed(0, [1, 2, 4]), batch_seed(0, [3, 2, 1])}) == 4
    assert batch_seed(0, [1, 2]) != batch_seed(0, [1, 2, 0])
    with pytest.raises(ValueError, match="64-bit"):
        batch_seed(2**64, [0])


def test_truncate_to_min_keeps_the_first_entries():
    out = truncate_to_min([torch.tensor([1, 5, 9]), torch.tensor([0, 2]), torch.tensor([3, 4, 7, 8])])
    assert out.dtype == torch.long
    assert out.tolist() == [[1, 5], [0, 2], [3, 4]]
    with pytest.raises(ValueError):
        truncate_to_min([])
    with pytest.raises(ValueError, match="1D"):
        truncate_to_min([torch.zeros(2, 2, dtype=torch.long)])


def test_masks_to_grid_is_row_major():
    grid = masks_to_grid(torch.tensor([0, 5, 11]), (3, 4))
    assert grid.dtype == torch.bool and grid.shape == (3, 4)
    assert grid.nonzero().tolist() == [[0, 0], [1, 1], [2, 3]]
    with pytest.raises(ValueError, match="0, 12"):
        masks_to_grid(torch.tensor([12]), (3, 4))


@pytest.mark.parametrize("bad", [torch.zeros(3), (torch.zeros(3), 1.0), (torch.zeros(3), True)])
def test_collator_needs_an_int_index_last(bad):
    with pytest.raises(TypeError, match="dataset index"):
        MultiblockMaskCollator2D()([bad])


def test_base_class_is_abstract():
    with pytest.raises(TypeError):
        MaskCollator()


@pytest.mark.parametrize("input_size, patch_size", GRIDS)
@pytest.mark.parametrize("nenc, npred", [(1, 2), (2, 4)])
def test_shapes_ranges_and_sorted_unique_rows(input_size, patch_size, nenc, npred):
    collator = MultiblockMaskCollator2D(input_size=input_size, patch_size=patch_size, nenc=nenc, npred=npred)
    h, w = collator.grid_size
    (images, labels, indices), masks_enc, masks_pred = collator(_batch(range(6)))
    assert images.shape == (6, 3, 4, 4) and indices.tolist() == list(range(6))
    assert len(masks_enc) == nenc and len(masks_pred) == npred
    for m in masks_enc + masks_pred:
        assert m.dtype == torch.long and m.dim() == 2 and m.shape[0] == 6 and m.shape[1] >= collator.min_keep
        assert int(m.min()) >= 0 and int(m.max()) < h * w
        assert bool((m[:, 1:] > m[:, :-1]).all())  # strictly ascending: sorted and unique


def test_truncation_keeps_the_sorted_prefix_of_every_sample():
    collator = MultiblockMaskCollator2D(nenc=2, npred=3)
    blocks = collator.sample_blocks(5, _gen(3))
    masks_enc, masks_pred = collator.sample_masks(5, _gen(3))
    for out, per_sample in [(masks_enc, blocks.enc), (masks_pred, blocks.pred)]:
        for i, m in enumerate(out):
            lengths = [s[i].numel() for s in per_sample]
            assert m.shape[1] == min(lengths)
            for b in range(5):
                assert torch.equal(m[b], per_sample[b][i][: m.shape[1]])


@pytest.mark.parametrize("input_size, patch_size", GRIDS)
def test_context_and_targets_are_disjoint(input_size, patch_size):
    collator = MultiblockMaskCollator2D(input_size=input_size, patch_size=patch_size, nenc=2, npred=4)
    for seed in range(20):
        blocks = collator.sample_blocks(4, _gen(seed))
        for enc, pred in zip(blocks.enc, blocks.pred, strict=True):
            targets = set(torch.cat(pred).tolist())
            for ctx in enc:
                assert ctx.numel() >= collator.min_keep
                assert targets.isdisjoint(ctx.tolist())
    _, masks_enc, masks_pred = collator(_batch(range(8)))
    for b in range(8):
        targets = set(torch.cat([m[b] for m in masks_pred]).tolist())
        assert all(targets.isdisjoint(m[b].tolist()) for m in masks_enc)


def test_overlap_occurs_when_allowed():
    collator = MultiblockMaskCollator2D(allow_overlap=True)
    hw = collator.grid_size
    overlaps = 0
    for seed in range(20):
        blocks = collator.sample_blocks(4, _gen(seed))
        enc_h, enc_w = blocks.sizes.enc_hw
        for enc, pred in zip(blocks.enc, blocks.pred, strict=True):
            # Nothing is cut: the context is the whole block.
            assert enc[0].numel() == enc_h * enc_w and _bbox(enc[0], hw) == (enc_h, enc_w)
            overlaps += not set(torch.cat(pred).tolist()).isdisjoint(enc[0].tolist())
    assert overlaps > 0


def _area_tolerance(h: int, w: int) -> float:
    # |round(x) * round(y) - x * y| <= (x + y) / 2 + 1/4 with x <= h + 1/2 and y <= w + 1/2.
    return 0.5 * (h + w + 1) + 0.25


@pytest.mark.parametrize("input_size, patch_size", GRIDS)
def test_block_sizes_follow_the_scales_and_are_shared_by_the_batch(input_size, patch_size):
    collator = MultiblockMaskCollator2D(
        input_size=input_size, patch_size=patch_size, enc_mask_scale=(0.85, 1.0), pred_mask_scale=(0.1, 0.25)
    )
    H, W = collator.grid_size
    for seed in range(30):
        blocks = collator.sample_blocks(4, _gen(seed))
        s = blocks.sizes
        lo, hi = collator.pred_mask_scale
        assert lo <= s.pred_scale <= hi and 0.3 <= s.aspect_ratio <= 3.0
        h, w = s.pred_hw
        area = s.pred_scale * H * W
        expected = (
            math.floor(math.sqrt(area * s.aspect_ratio) + 0.5),
            math.floor(math.sqrt(area / s.aspect_ratio) + 0.5),
        )
        assert (h, w) == (min(max(expected[0], 1), H), min(max(expected[1], 1), W))
        assert h * w <= hi * H * W + _area_tolerance(h, w)
        if (h, w) == expected:  # unclipped, so the area only moved by rounding
            assert h * w >= lo * H * W - _area_tolerance(h, w)
        enc_h, enc_w = s.enc_hw
        lo, hi = collator.enc_mask_scale
        assert lo <= s.enc_scale <= hi
        assert enc_h * enc_w <= hi * H * W + _area_tolerance(enc_h, enc_w)
        if enc_h < H and enc_w < W:
            assert enc_h == enc_w  # square context blocks
            assert enc_h * enc_w >= lo * H * W - _area_tolerance(enc_h, enc_w)
        for enc, pred in zip(blocks.enc, blocks.pred, strict=True):
            for t in pred:  # every target of every sample is a full h x w block
                assert t.numel() == h * w and _bbox(t, (H, W)) == (h, w)
            for ctx in enc:  # a context is an enc_h x enc_w block less the targets
                bh, bw = _bbox(ctx, (H, W))
                assert ctx.numel() <= enc_h * enc_w and bh <= enc_h and bw <= enc_w


@pytest.mark.parametrize("input_size, patch_size", GRIDS)
def test_targets_reach_every_cell_including_the_last_row_and_column(input_size, patch_size):
    collator = MultiblockMaskCollator2D(
        input_size=input_size, patch_size=patch_size, pred_mask_scale=(0.05, 0.15), npred=4
    )
    hw = collator.grid_size
    covered = torch.zeros(hw, dtype=torch.bool)
    for seed in range(60):
        for pred in collator.sample_blocks(8, _gen(seed)).pred:
            for t in pred:
                covered |= masks_to_grid(t, hw)
    assert bool(covered[-1].all()) and bool(covered[:, -1].all())
    assert bool(covered.all())


def test_same_seed_and_indices_give_the_same_masks():
    a = MultiblockMaskCollator2D(seed=7)
    b = MultiblockMaskCollator2D(seed=7)
    _, enc_a, pred_a = a(_batch([3, 1, 4, 1, 5]))
    _, enc_b, pred_b = b(_batch([3, 1, 4, 1, 5]))
    assert all(torch.equal(x, y) for x, y in zip(enc_a + pred_a, enc_b + pred_b, strict=True))

    def differs(x_masks, y_masks):
        return any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(x_masks, y_masks, strict=True))

    _, enc_c, pred_c = a(_batch([3, 1, 4, 1, 6]))
    assert differs(enc_a + pred_a, enc_c + pred_c)
    _, enc_d, pred_d = MultiblockMaskCollator2D(seed=8)(_batch([3, 1, 4, 1, 5]))
    assert differs(enc_a + pred_a, enc_d + pred_d)


def test_collator_survives_pickling():
    collator = MultiblockMaskCollator2D(input_size=(64, 96), patch_size=8, seed=3)
    clone = pickle.loads(pickle.dumps(collator))
    assert vars(clone) == vars(collator)
    _, enc_a, pred_a = collator(_batch(range(4)))
    _, enc_b, pred_b = clone(_batch(range(4)))
    assert all(torch.equal(x, y) for x, y in zip(enc_a + pred_a, enc_b + pred_b, strict=True))


def test_dataloader_workers_give_the_in_process_masks():
    dataset = _IndexedDataset()
    collator = MultiblockMaskCollator2D(input_size=64, patch_size=8, seed=11)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, generator=_gen(0), num_workers=2, collate_fn=collator)
    batches = list(loader)
    assert len(batches) == 4
    for (images, _labels, indices), masks_enc, masks_pred in batches:
        (ref_images, _, _), ref_enc, ref_pred = collator([dataset[i] for i in indices.tolist()])
        assert torch.equal(images, ref_images)
        assert all(torch.equal(x, y) for x, y in zip(masks_enc + masks_pred, ref_enc + ref_pred, strict=True))


def test_scale_and_aspect_ratio_are_independent_draws():
    collator = MultiblockMaskCollator2D(pred_mask_scale=(0.1, 0.9), aspect_ratio=(0.3, 3.0))
    g = _gen(0)
    draws = [collator.sample_block_sizes(g) for _ in range(2000)]
    x = torch.tensor([[d.pred_scale, math.log(d.aspect_ratio)] for d in draws], dtype=torch.float64)
    r = torch.corrcoef(x.T)[0, 1]
    assert abs(float(r)) < 0.1


def test_aspect_ratio_is_log_uniform():
    collator = MultiblockMaskCollator2D(aspect_ratio=(0.5, 2.0))
    g = _gen(1)
    aspects = torch.tensor([collator.sample_block_sizes(g).aspect_ratio for _ in range(4000)])
    assert bool(((aspects >= 0.5) & (aspects <= 2.0)).all())
    # A uniform draw on (0.5, 2) would give a > 1 two times in three.
    assert abs(float((aspects > 1).double().mean()) - 0.5) < 0.04


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(enc_mask_scale=(0.0, 0.5)),
        dict(enc_mask_scale=(0.5, 1.2)),
        dict(pred_mask_scale=(0.8, 0.2)),
        dict(pred_mask_scale=(0.2,)),
        dict(aspect_ratio=(0.0, 1.0)),
        dict(aspect_ratio=(2.0, 1.0)),
        dict(nenc=0),
        dict(npred=0),
        dict(min_keep=0),
        dict(input_size=32, patch_size=8, min_keep=17),
        dict(input_size=4, patch_size=8),
        dict(patch_size=0),
        dict(input_size=(224, 224, 3)),
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        MultiblockMaskCollator2D(**kwargs)


def test_misspelt_keyword_raises():
    with pytest.raises(TypeError):
        MultiblockMaskCollator2D(pred_mask_scales=(0.1, 0.2))


def test_impossible_configurations_raise_naming_the_scales():
    tiny_targets = MultiblockMaskCollator2D(input_size=32, patch_size=8, pred_mask_scale=(0.01, 0.02))
    with pytest.raises(RuntimeError, match=r"no target block size.*pred_mask_scale=\(0.01, 0.02\)"):
        tiny_targets(_batch(range(2)))
    no_context_left = MultiblockMaskCollator2D(input_size=32, patch_size=8, pred_mask_scale=(1.0, 1.0))
    with pytest.raises(RuntimeError, match=r"no context block.*enc_mask_scale=\(0.2, 0.8\)"):
        no_context_left(_batch(range(2)))
