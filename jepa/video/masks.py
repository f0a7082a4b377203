"""The V-JEPA masks on a 3D token grid: multiblock 3D masks and random tubes.

A clip of ``num_frames`` frames cropped to ``crop_size`` is cut into tubelets of ``tubelet_size`` frames by
``patch_size`` x ``patch_size`` pixels: the token grid ``(T, H, W) = (num_frames // tubelet_size, crop_h //
patch_size, crop_w // patch_size)``. A token's flat index is row-major over ``(t, h, w)``: ``t * H * W + h * W + w``.

Multiblock 3D (:class:`MultiblockMaskCollator3D`): a batch carries one *mask set* per mask config (a
:class:`jepa.config.pretrain.VideoMaskConfig`). Per batch and config, one block size ``(t, h, w)`` is drawn; per
sample, ``num_blocks`` blocks of that size are placed at random. The context (what the encoder sees) is everything
outside the blocks within the first ``max(1, int(max_temporal_keep * T))`` time steps, and the target (what the
predictor predicts) is its complement: the blocks plus every later time step, as in the official code. Both are
truncated to the batch's shortest row; with ``full_complement`` the target is then everything outside the truncated
context (V-JEPA 2's option). Departures from the official code:

* the scale and the aspect ratio of a block are independent draws and the aspect ratio is log-uniform, so ``a`` and
  ``1 / a`` are equally likely (the official code drew it uniformly); ``h = round(sqrt(s * H * W * a))`` from the
  drawn scale itself, not from the floor of the block's area;
* the temporal extent is ``round(temporal_scale * T)`` clipped to ``[1, T]`` (the official code used the floor);
* a sample whose context comes out empty is redrawn a bounded number of times, then a clear error is raised (the
  official code looped forever);

Clips of several lengths in one batch (V-JEPA 2's ``dataset_fpcs``, :class:`MultiLengthMaskCollator`): the samples
are grouped by length and each group gets its own multiblock masks, drawn on its own token grid.

Random tubes (:class:`TubeMaskCollator`): per sample, a random subset of the spatial positions is masked at every
time step; the masked tubes are the target and the rest the context.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor

from jepa.config.pretrain import VideoMaskConfig
from jepa.config.strict import from_dict
from jepa.masks.blocks import as_pair, block_hw, log_uniform, randint, uniform
from jepa.masks.collate import MaskCollator, truncate_to_min

# How often one sample's blocks are redrawn when they leave no context; reaching it means the configuration almost
# always covers the whole kept time span (for example spatial_scale near 1 with several blocks).
_CONTEXT_TRIES = 50

_OPTIONAL_KEYS = ("max_temporal_keep", "max_keep", "full_complement")


def video_token_grid(
    crop_size: int | Sequence[int], num_frames: int, patch_size: int, tubelet_size: int
) -> tuple[int, int, int]:
    """The token grid ``(T, H, W)`` of clips of ``num_frames`` frames cropped to ``crop_size`` (int or ``(h, w)``)."""
    crop_h, crop_w = as_pair(crop_size, "crop_size")
    if patch_size < 1 or tubelet_size < 1:
        raise ValueError(f"patch_size and tubelet_size must be >= 1, got {patch_size} and {tubelet_size}")
    if min(crop_h, crop_w) < patch_size:
        raise ValueError(f"crop_size {(crop_h, crop_w)} is smaller than one patch of {patch_size}")
    if num_frames < tubelet_size or num_frames % tubelet_size:
        raise ValueError(f"num_frames must be a positive multiple of tubelet_size {tubelet_size}, got {num_frames}")
    return num_frames // tubelet_size, crop_h // patch_size, crop_w // patch_size


def video_mask_config(cfg: VideoMaskConfig | Mapping[str, Any]) -> VideoMaskConfig:
    """One mask spec: a :class:`VideoMaskConfig` as it is, or an entry of the official YAML ``mask`` list read and
    checked as a config file's is. Such an entry names every key but ``max_temporal_keep`` and ``max_keep``."""
    if isinstance(cfg, VideoMaskConfig):
        return cfg
    if not isinstance(cfg, Mapping):
        raise TypeError(f"a mask config must be a VideoMaskConfig or a mapping, got {type(cfg).__name__}")
    keys = [f.name for f in fields(VideoMaskConfig)]
    unknown = sorted(set(cfg) - set(keys))
    if unknown:
        raise ValueError(f"unknown mask config keys {unknown}; valid keys: {', '.join(keys)}")
    missing = [k for k in keys if k not in cfg and k not in _OPTIONAL_KEYS]
    if missing:
        raise ValueError(f"mask config {dict(cfg)!r} lacks the keys {missing}")
    return from_dict(VideoMaskConfig, cfg)


@dataclass(frozen=True)
class BlockSize3D:
    """The block size of one mask config in one batch, shared by all its samples.

    Attributes:
        spatial_scale: drawn fraction of the ``H x W`` plane (before rounding).
        temporal_scale: drawn fraction of the ``T`` time steps (before rounding).
        aspect_ratio: drawn height / width (before rounding).
        thw: ``(t, h, w)`` of every block, in tokens.
    """

    spatial_scale: float
    temporal_scale: float
    aspect_ratio: float
    thw: tuple[int, int, int]


@dataclass(frozen=True)
class MaskSet3D:
    """The untruncated masks of one mask config for one batch.

    Attributes:
        size: the batch's block size.
        enc: ``enc[b]`` is the context of sample ``b``: LongTensor ``[K]`` of flat ``(t, h, w)`` row-major indices in
            ascending order (``max_keep`` not applied yet).
        pred: ``pred[b]`` is the target of sample ``b``: the ascending indices of the union of its blocks.
        redraws: how many times a sample's blocks were redrawn because they left no context.
    """

    size: BlockSize3D
    enc: list[Tensor]
    pred: list[Tensor]
    redraws: int


class MultiblockMaskCollator3D(MaskCollator):
    """V-JEPA's multiblock 3D masks as a DataLoader ``collate_fn``, one mask set per mask config.

    Called on a batch of samples ``(..., index)``, returns ``(collated, masks_enc, masks_pred)`` where ``masks_enc``
    and ``masks_pred`` hold one LongTensor ``[B, K]`` per mask config, in config order (the trainer pairs entry ``i``
    of both lists; :meth:`jepa.config.PretrainConfig.mask_token_index` gives its predictor mask token). Each row
    holds the ascending flat ``(t, h, w)`` row-major indices of one sample's context (or target) tokens, truncated
    to the shortest row of the batch (see
    :func:`jepa.masks.collate.truncate_to_min`); contexts are also capped at the config's ``max_keep``.
    """

    def __init__(
        self,
        cfgs_mask: Sequence[VideoMaskConfig | Mapping[str, Any]],
        crop_size: int | tuple[int, int] = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        seed: int = 0,
    ) -> None:
        """
        Args:
            cfgs_mask: the mask specs: :class:`VideoMaskConfig` objects (a config's ``mask``) or the official YAML
                ``mask`` list (see :func:`video_mask_config`).
            crop_size: clip crop in pixels, ``int`` or ``(height, width)``.
            num_frames: frames per clip, a multiple of ``tubelet_size``.
            patch_size: spatial patch size in pixels.
            tubelet_size: frames per tubelet.
            seed: base seed; the masks of a batch depend only on it and the batch's dataset indices.
        """
        super().__init__(seed=seed)
        if isinstance(cfgs_mask, Mapping) or not isinstance(cfgs_mask, Sequence) or len(cfgs_mask) == 0:
            raise ValueError(f"cfgs_mask must be a non-empty list of mask configs, got {cfgs_mask!r}")
        self.specs = tuple(video_mask_config(c) for c in cfgs_mask)
        self.duration, self.height, self.width = video_token_grid(crop_size, num_frames, patch_size, tubelet_size)

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """The token grid ``(T, H, W)``."""
        return self.duration, self.height, self.width

    def max_context_duration(self, spec: VideoMaskConfig) -> int:
        """Time steps the context of ``spec`` may use: ``max(1, int(max_temporal_keep * T))``."""
        return max(1, int(spec.max_temporal_keep * self.duration))

    def sample_block_size(self, spec: VideoMaskConfig, generator: torch.Generator) -> BlockSize3D:
        """Draw one block size: ``s ~ U(spatial_scale)``, ``log a ~ U(log aspect_ratio)``, ``ts ~
        U(temporal_scale)``; ``(h, w)`` from :func:`block_hw`, ``t = round(ts * T)`` clipped to ``[1, T]``."""
        spatial = uniform(generator, *spec.spatial_scale)
        temporal = uniform(generator, *spec.temporal_scale)
        aspect = log_uniform(generator, *spec.aspect_ratio)
        h, w = block_hw(spatial, aspect, self.height, self.width)
        t = min(max(math.floor(temporal * self.duration + 0.5), 1), self.duration)
        return BlockSize3D(spatial, temporal, aspect, (t, h, w))

    def sample_mask_set(self, spec: VideoMaskConfig, batch_size: int, generator: torch.Generator) -> MaskSet3D:
        """Draw the untruncated masks of one config for one batch."""
        size = self.sample_block_size(spec, generator)
        keep_steps = self.max_context_duration(spec)
        enc, pred, redraws = [], [], 0
        for _ in range(batch_size):
            for _ in range(_CONTEXT_TRIES):
                target = self._place_blocks(size.thw, spec.num_blocks, generator)
                context = ~target
                context[keep_steps:] = False
                # As in the official code, what the context does not see (blocks, and every time step past the
                # kept ones) is the target: the predictor also forecasts the unseen future frames.
                target = ~context
                if context.any():
                    break
                redraws += 1
            else:
                raise RuntimeError(
                    f"{spec.num_blocks} blocks of {size.thw} tokens left no context on the {self.grid_size} token "
                    f"grid (context limited to the first {keep_steps} time steps) in {_CONTEXT_TRIES} draws for "
                    f"mask config {spec}: lower spatial_scale, temporal_scale or num_blocks"
                )
            # nonzero lists indices in ascending order, i.e. (t, h, w) row-major order.
            enc.append(context.flatten().nonzero().flatten())
            pred.append(target.flatten().nonzero().flatten())
        return MaskSet3D(size, enc, pred, redraws)

    def sample_blocks(self, batch_size: int, generator: torch.Generator) -> list[MaskSet3D]:
        """Draw the untruncated masks of one batch, one :class:`MaskSet3D` per mask config (what
        :meth:`sample_masks` truncates), for tests and inspection."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return [self.sample_mask_set(spec, batch_size, generator) for spec in self.specs]

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """Draw the masks of one batch: per mask config, a context and a target LongTensor ``[B, K]``."""
        masks_enc, masks_pred = [], []
        for spec, mask_set in zip(self.specs, self.sample_blocks(batch_size, generator)):
            enc = truncate_to_min(mask_set.enc)
            if spec.max_keep is not None:
                enc = enc[:, : spec.max_keep]
            masks_enc.append(enc)
            masks_pred.append(self._complement(enc) if spec.full_complement else truncate_to_min(mask_set.pred))
        return masks_enc, masks_pred

    def _complement(self, enc: Tensor) -> Tensor:
        """``[B, N - K]``: per row of ``enc`` ``[B, K]``, the ascending indices of every other token of the grid
        (each row names ``K`` distinct tokens, so the rows of the complement have equal lengths)."""
        outside = torch.ones(enc.shape[0], math.prod(self.grid_size), dtype=torch.bool)
        outside.scatter_(1, enc, False)
        return outside.nonzero()[:, 1].reshape(enc.shape[0], -1)

    def _place_blocks(self, thw: tuple[int, int, int], num_blocks: int, generator: torch.Generator) -> Tensor:
        """The union of ``num_blocks`` blocks of size ``thw`` at uniform positions, as a BoolTensor ``[T, H, W]``."""
        t, h, w = thw
        covered = torch.zeros(self.grid_size, dtype=torch.bool)
        for _ in range(num_blocks):
            # Upper bounds inclusive (T - t, H - h, W - w are valid starts), so blocks reach the last cells.
            start = randint(generator, self.duration - t + 1)
            top = randint(generator, self.height - h + 1)
            left = randint(generator, self.width - w + 1)
            covered[start : start + t, top : top + h, left : left + w] = True
        return covered


class LengthGroup(NamedTuple):
    """The samples of one clip length in a batch, as :class:`MultiLengthMaskCollator` returns them.

    Attributes:
        length_index: the length's position in the collator's :attr:`~MultiLengthMaskCollator.lengths`.
        batch: ``default_collate`` of the group's samples in batch order, e.g. ``(clips [B_g, 3, T_g, H, W],
            labels, seeds)``.
        masks_enc: one context LongTensor ``[B_g, K]`` per mask config, on the group's token grid.
        masks_pred: one target LongTensor ``[B_g, K']`` per mask config.
    """

    length_index: int
    batch: Any
    masks_enc: list[Tensor]
    masks_pred: list[Tensor]


class MultiLengthMaskCollator:
    """V-JEPA 2's collator for batches of clips of several lengths, as a DataLoader ``collate_fn``.

    The samples of a batch (``(clip [3, T, H, W], ..., seed)``) are grouped by their clip's ``T``, keeping batch
    order inside a group, as the official collator does. Each non-empty group, in the order of :attr:`lengths`, is
    collated by the :class:`MultiblockMaskCollator3D` of its length, which draws the group's masks from a generator
    seeded by the group's sample seeds alone: the masks stay a pure function of the samples, and a batch of one
    length gets exactly the masks the single-length collator gives it. Returns a list of :class:`LengthGroup`.
    With several processes, :class:`jepa.runtime.distributed.RankShardCollator` draws each group's masks from the
    same seeds for the whole global batch and keeps one rank's rows.
    """

    def __init__(
        self,
        cfgs_mask: Sequence[VideoMaskConfig | Mapping[str, Any]],
        lengths: Sequence[int],
        crop_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        tubelet_size: int = 2,
        seed: int = 0,
    ) -> None:
        """
        Args:
            cfgs_mask: the mask specs (see :class:`MultiblockMaskCollator3D`).
            lengths: the clip lengths in frames, in group order (repeats count once: the official
                ``dataset_fpcs`` lists one per data set).
            crop_size, patch_size, tubelet_size, seed: as for :class:`MultiblockMaskCollator3D`.
        """
        self.lengths = tuple(dict.fromkeys(int(n) for n in lengths))
        if not self.lengths:
            raise ValueError("lengths lists no clip length")
        self.seed = int(seed)
        self.collators = [
            MultiblockMaskCollator3D(cfgs_mask, crop_size, n, patch_size, tubelet_size, seed) for n in self.lengths
        ]

    def group_positions(self, frames: Sequence[int]) -> list[tuple[int, list[int]]]:
        """How a batch whose samples are clips of ``frames[i]`` frames (batch order) splits into length groups:
        ``(length_index, positions)`` for every length present, in the order of :attr:`lengths`, positions in batch
        order. The one grouping rule, shared by :meth:`__call__` and the several-process path
        (:class:`jepa.runtime.distributed.RankShardDataset`), which groups clips before loading them."""
        positions: dict[int, list[int]] = {}
        for pos, n in enumerate(frames):
            if n not in self.lengths:
                raise ValueError(f"sample {pos} is a clip of {n} frames; this collator takes {list(self.lengths)}")
            positions.setdefault(n, []).append(pos)
        return [(index, positions[n]) for index, n in enumerate(self.lengths) if n in positions]

    def __call__(self, batch: list[tuple]) -> list[LengthGroup]:
        if len(batch) == 0:
            raise ValueError("cannot collate an empty batch")
        frames = []
        for pos, sample in enumerate(batch):
            clip = sample[0] if isinstance(sample, tuple | list) and sample else None
            if not isinstance(clip, Tensor) or clip.dim() != 4:
                raise TypeError(
                    f"{type(self).__name__} needs samples (clip [3, T, H, W], ..., seed); sample {pos} starts with "
                    f"{type(clip).__name__ if not isinstance(clip, Tensor) else tuple(clip.shape)}"
                )
            frames.append(int(clip.shape[1]))
        out = []
        for index, positions in self.group_positions(frames):
            collated, masks_enc, masks_pred = self.collators[index]([batch[p] for p in positions])
            out.append(LengthGroup(index, collated, masks_enc, masks_pred))
        return out


class TubeMaskCollator(MaskCollator):
    """V-JEPA's random-tube masks as a DataLoader ``collate_fn``.

    Per sample, ``round(ratio * H * W)`` spatial positions drawn without replacement are masked at every time step.
    Returns ``(collated, [enc], [pred])``: one context LongTensor ``[B, (H * W - n) * T]`` and one target LongTensor
    ``[B, n * T]`` of ascending flat ``(t, h, w)`` row-major indices (equal lengths by construction).
    """

    def __init__(
        self,
        ratio: float,
        crop_size: int | tuple[int, int] = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        seed: int = 0,
    ) -> None:
        """
        Args:
            ratio: fraction of the spatial positions masked; must mask at least one and keep at least one.
            crop_size: clip crop in pixels, ``int`` or ``(height, width)``.
            num_frames: frames per clip, a multiple of ``tubelet_size``.
            patch_size: spatial patch size in pixels.
            tubelet_size: frames per tubelet.
            seed: base seed; the masks of a batch depend only on it and the batch's dataset indices.
        """
        super().__init__(seed=seed)
        self.duration, self.height, self.width = video_token_grid(crop_size, num_frames, patch_size, tubelet_size)
        self.ratio = float(ratio)
        spatial = self.height * self.width
        self.num_masked = math.floor(self.ratio * spatial + 0.5)
        if not 1 <= self.num_masked <= spatial - 1:
            raise ValueError(
                f"ratio {ratio} masks {self.num_masked} of the {spatial} spatial positions; it must mask at least "
                "one and keep at least one"
            )

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """The token grid ``(T, H, W)``."""
        return self.duration, self.height, self.width

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """Draw the masks of one batch: ``([enc [B, Ke]], [pred [B, Kp]])``."""
        spatial = self.height * self.width
        enc, pred = [], []
        for _ in range(batch_size):
            masked = torch.zeros(spatial, dtype=torch.bool)
            masked[torch.randperm(spatial, generator=generator)[: self.num_masked]] = True
            tubes = masked.expand(self.duration, spatial).flatten()
            enc.append(tubes.logical_not().nonzero().flatten())
            pred.append(tubes.nonzero().flatten())
        return [torch.stack(enc)], [torch.stack(pred)]
