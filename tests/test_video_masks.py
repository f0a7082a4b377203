"""Contract tests of the V-JEPA mask collators: multiblock 3D and random tubes."""

import math
import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from jepa.config.pretrain import VideoMaskConfig
from jepa.masks import masks_to_grid
from jepa.video.masks import MultiblockMaskCollator3D, TubeMaskCollator, video_mask_config

# The paper's pair of mask configs (V-JEPA pretrain YAML): 8 short-range blocks and 2 long-range ones.
PAPER_MASKS = [
    dict(aspect_ratio=[0.75, 1.5], num_blocks=8, spatial_scale=[0.15, 0.15], temporal_scale=[1.0, 1.0],
         max_temporal_keep=1.0, max_keep=None),
    dict(aspect_ratio=[0.75, 1.5], num_blocks=2, spatial_scale=[0.7, 0.7], temporal_scale=[1.0, 1.0],
         max_temporal_keep=1.0, max_keep=None),
]  # fmt: skip
SMALL = dict(aspect_ratio=(0.5, 2.0), num_blocks=2, spatial_scale=(0.1, 0.3), temporal_scale=(0.5, 1.0))

# (configs, collator kwargs): the paper grid 8x14x14, a small 2x8x8 grid, a non-square grid and several configs.
CASES = [
    pytest.param(PAPER_MASKS, dict(crop_size=224, num_frames=16), id="paper-8x14x14"),
    pytest.param([SMALL], dict(crop_size=64, num_frames=4, patch_size=8), id="small-2x8x8"),
    pytest.param(
        [SMALL, dict(SMALL, num_blocks=1, spatial_scale=(0.4, 0.6), temporal_scale=(0.2, 0.4))],
        dict(crop_size=(48, 80), num_frames=8, patch_size=8),
        id="two-cfgs-4x6x10",
    ),
]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(indices) -> list[tuple]:
    return [(torch.full((3, 2, 4, 4), float(i)), i % 3, i) for i in indices]


def _check_rows(mask: torch.Tensor, batch: int, n_tokens: int) -> None:
    assert mask.dtype == torch.long and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= 1
    assert int(mask.min()) >= 0 and int(mask.max()) < n_tokens
    assert (mask[:, 1:] > mask[:, :-1]).all()  # sorted and unique per row


@pytest.mark.parametrize("cfgs, kwargs", CASES)
def test_multiblock_outputs(cfgs, kwargs):
    collator = MultiblockMaskCollator3D(cfgs, **kwargs)
    n = math.prod(collator.grid_size)
    collated, enc, pred = collator(_batch(range(5)))
    assert collated[0].shape == (5, 3, 2, 4, 4) and collated[-1].tolist() == list(range(5))
    assert len(enc) == len(pred) == len(cfgs)
    for e, p in zip(enc, pred):
        _check_rows(e, 5, n)
        _check_rows(p, 5, n)
        for b in range(5):  # truncation keeps the rows disjoint
            assert not set(e[b].tolist()) & set(p[b].tolist())


@pytest.mark.parametrize("cfgs, kwargs", CASES)
def test_multiblock_untruncated_masks_partition_the_grid(cfgs, kwargs):
    collator = MultiblockMaskCollator3D(cfgs, **kwargs)
    T, H, W = collator.grid_size
    specs = [video_mask_config(c) for c in cfgs]
    for seed in range(4):
        sets = collator.sample_blocks(4, _gen(seed))
        assert len(sets) == len(cfgs)
        for spec, mask_set in zip(specs, sets):
            t, h, w = mask_set.size.thw
            lo, hi = spec.spatial_scale
            # Block sizes follow the drawn scale (each side rounded) and lie in the configured range.
            assert lo <= mask_set.size.spatial_scale <= hi
            assert spec.aspect_ratio[0] <= mask_set.size.aspect_ratio <= spec.aspect_ratio[1]
            area = mask_set.size.spatial_scale * H * W
            assert h == min(max(round(math.sqrt(area * mask_set.size.aspect_ratio)), 1), H)
            assert w == min(max(round(math.sqrt(area / mask_set.size.aspect_ratio)), 1), W)
            t_lo, t_hi = (math.floor(s * T + 0.5) for s in spec.temporal_scale)
            assert max(1, t_lo) <= t <= min(T, t_hi)
            for e, p in zip(mask_set.enc, mask_set.pred):
                ge, gp = masks_to_grid(e, (T, H, W)), masks_to_grid(p, (T, H, W))
                assert not (ge & gp).any()
                assert (ge | gp).all()  # max_temporal_keep = 1 and no max_keep: context + target = grid
                # The target is a union of num_blocks blocks of (t, h, w): at least one, at most num_blocks of them.
                assert t * h * w <= int(gp.sum()) <= spec.num_blocks * t * h * w


def test_every_cell_can_be_a_target():
    cfg = dict(aspect_ratio=(1.0, 1.0), num_blocks=1, spatial_scale=(0.25, 0.25), temporal_scale=(0.5, 0.5))
    collator = MultiblockMaskCollator3D([cfg], crop_size=64, num_frames=8, patch_size=8)  # 4x8x8, blocks 2x4x4
    T, H, W = collator.grid_size
    seen = torch.zeros(T, H, W, dtype=torch.bool)
    g = _gen(0)
    for _ in range(30):
        for p in collator.sample_blocks(8, g)[0].pred:
            seen |= masks_to_grid(p, (T, H, W))
    assert seen.all()  # including the last time step, row and column


def test_max_temporal_keep_and_max_keep():
    cfg = dict(SMALL, max_temporal_keep=0.5, num_blocks=1)
    collator = MultiblockMaskCollator3D([cfg, dict(SMALL, max_keep=5)], crop_size=64, num_frames=8, patch_size=8)
    T, H, W = collator.grid_size
    assert collator.max_context_duration(collator.specs[0]) == 2
    _, enc, pred = collator(_batch(range(4)))
    assert int(enc[0].max()) < 2 * H * W  # context only in the first 2 of 4 time steps
    assert enc[1].shape == (4, 5)
    sets = collator.sample_blocks(3, _gen(1))
    for e, p in zip(sets[0].enc, sets[0].pred):
        assert int(e.max()) < 2 * H * W
        # The target is the union of blocks alone: later time steps outside the blocks are in neither mask.
        assert not set(e.tolist()) & set(p.tolist())
    # Even a small fraction keeps one time step.
    tiny = MultiblockMaskCollator3D([dict(SMALL, max_temporal_keep=0.01)], crop_size=64, num_frames=8, patch_size=8)
    assert tiny.max_context_duration(tiny.specs[0]) == 1


def test_determinism_and_seeds():
    collator = MultiblockMaskCollator3D(PAPER_MASKS, seed=3)
    _, e1, p1 = collator(_batch([4, 7, 9]))
    _, e2, p2 = pickle.loads(pickle.dumps(collator))(_batch([4, 7, 9]))
    assert all(torch.equal(a, b) for a, b in zip(e1 + p1, e2 + p2))
    _, e3, _ = collator(_batch([4, 7, 10]))
    _, e4, _ = MultiblockMaskCollator3D(PAPER_MASKS, seed=4)(_batch([4, 7, 9]))
    assert not torch.equal(e1[0], e3[0]) or not torch.equal(e1[1], e3[1])
    assert not torch.equal(e1[0], e4[0]) or not torch.equal(e1[1], e4[1])


def test_accepts_config_dataclasses():
    cfgs = [VideoMaskConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()}) for c in PAPER_MASKS]
    from_dataclass = MultiblockMaskCollator3D(cfgs)(_batch([0, 1]))
    from_yaml = MultiblockMaskCollator3D(PAPER_MASKS)(_batch([0, 1]))
    assert all(torch.equal(a, b) for a, b in zip(from_dataclass[1] + from_dataclass[2], from_yaml[1] + from_yaml[2]))


def test_empty_context_is_redrawn_or_refused():
    # 3x3 blocks on a 4x4 grid, 4 of them: they cover the grid in about 9% of draws, which must be redrawn.
    cfg = dict(aspect_ratio=(1.0, 1.0), num_blocks=4, spatial_scale=(0.5625, 0.5625), temporal_scale=(1.0, 1.0))
    collator = MultiblockMaskCollator3D([cfg], crop_size=32, num_frames=2, patch_size=8)
    redraws = 0
    for seed in range(10):
        mask_set = collator.sample_blocks(8, _gen(seed))[0]
        redraws += mask_set.redraws
        assert all(e.numel() >= 1 for e in mask_set.enc)
    assert redraws > 0
    full = dict(cfg, spatial_scale=(0.95, 1.0), num_blocks=3)
    with pytest.raises(RuntimeError, match="left no context"):
        MultiblockMaskCollator3D([full], crop_size=32, num_frames=2, patch_size=8)(_batch([0]))


@pytest.mark.parametrize(
    "cfgs, kwargs, match",
    [
        ([], {}, "non-empty"),
        (SMALL, {}, "non-empty"),
        ([dict(SMALL, spatial_scale=(0.0, 0.5))], {}, "spatial_scale"),
        ([dict(SMALL, temporal_scale=(0.6, 0.5))], {}, "min <= max"),
        ([dict(SMALL, aspect_ratio=(0.0, 1.0))], {}, "aspect_ratio"),
        ([dict(SMALL, num_blocks=0)], {}, "num_blocks"),
        ([dict(SMALL, max_temporal_keep=1.5)], {}, "max_temporal_keep"),
        ([dict(SMALL, max_keep=0)], {}, "max_keep"),
        ([dict(SMALL, num_block=2)], {}, "unknown mask config keys"),
        ([{k: v for k, v in SMALL.items() if k != "num_blocks"}], {}, "lacks"),
        ([SMALL], dict(num_frames=15), "multiple of tubelet_size"),
        ([SMALL], dict(crop_size=8), "smaller than one patch"),
    ],
)
def test_multiblock_validation(cfgs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiblockMaskCollator3D(cfgs, **kwargs)


def test_tube_masks():
    collator = TubeMaskCollator(0.75, crop_size=64, num_frames=8, patch_size=8)
    T, H, W = collator.grid_size
    _, enc, pred = collator(_batch(range(3)))
    assert len(enc) == len(pred) == 1
    assert pred[0].shape == (3, T * 48) and enc[0].shape == (3, T * 16)
    for e, p in zip(enc[0], pred[0]):
        _check_rows(e[None], 1, T * H * W)
        _check_rows(p[None], 1, T * H * W)
        ge, gp = masks_to_grid(e, (T, H, W)), masks_to_grid(p, (T, H, W))
        assert not (ge & gp).any() and (ge | gp).all()
        assert (gp == gp[0]).all()  # tubes: the same spatial positions at every time step
    again = collator(_batch(range(3)))
    assert torch.equal(enc[0], again[1][0]) and torch.equal(pred[0], again[2][0])
    for ratio in (0.0, 1.0, 0.001):
        with pytest.raises(ValueError, match="at least"):
            TubeMaskCollator(ratio, crop_size=64, num_frames=8, patch_size=8)


class _Clips(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple:
        return torch.full((3, 4, 8, 8), float(i)), i


@pytest.mark.parametrize("collator", [
    MultiblockMaskCollator3D([SMALL, dict(SMALL, num_blocks=1)], crop_size=64, num_frames=4, patch_size=8),
    TubeMaskCollator(0.5, crop_size=64, num_frames=4, patch_size=8),
], ids=["multiblock", "tube"])  # fmt: skip
def test_masks_in_dataloader_workers(collator):
    kwargs = dict(batch_size=4, collate_fn=collator, shuffle=False)
    in_workers = list(DataLoader(_Clips(), num_workers=2, **kwargs))
    in_process = list(DataLoader(_Clips(), num_workers=0, **kwargs))
    assert len(in_workers) == 2
    for (x1, e1, p1), (x2, e2, p2) in zip(in_workers, in_process):
        assert torch.equal(x1[0], x2[0])
        assert all(torch.equal(a, b) for a, b in zip(e1 + p1, e2 + p2))
