"""The I-JEPA multiblock masks on a 2D token grid.

Per batch, one target block size and one context block size are drawn; per sample, ``npred`` target blocks and
``nenc`` context blocks are placed at random, and (unless ``allow_overlap``) the target cells are cut out of each
context block, so the encoder never sees what the predictor must predict. Two departures from the official code,
both bugs there:

* the scale and the aspect ratio of a block are two independent draws (the official code reused one random number
  for both, so large target blocks were always tall and small ones always wide);
* a block's top-left corner ranges over every position at which the block fits, the last one included (the
  official code excluded it, so no block ever touched the last row or column of the grid).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from jepa.masks.blocks import as_pair, as_range, block_hw, log_uniform, randint, uniform
from jepa.masks.collate import MaskCollator, truncate_to_min

# Bounds on the retries that rejection sampling needs; reaching one means the configuration leaves too little room.
_SIZE_TRIES = 100  # per-batch block sizes with at least ``min_keep`` cells
_CONTEXT_TRIES = 20  # context positions keeping ``min_keep`` cells, for one placement of the targets
_TARGET_TRIES = 20  # placements of a sample's targets before giving up


@dataclass(frozen=True)
class BlockSizes:
    """The block sizes of one batch, shared by all its samples.

    Attributes:
        pred_scale: drawn fraction of the grid a target block covers (before rounding).
        aspect_ratio: drawn height / width of the target blocks (before rounding).
        pred_hw: ``(h, w)`` of every target block, in tokens.
        enc_scale: drawn fraction of the grid a context block covers (before rounding and target removal).
        enc_hw: ``(h, w)`` of every context block, in tokens, before the target cells are removed.
    """

    pred_scale: float
    aspect_ratio: float
    pred_hw: tuple[int, int]
    enc_scale: float
    enc_hw: tuple[int, int]


@dataclass(frozen=True)
class MultiblockMasks:
    """The untruncated masks of one batch.

    Attributes:
        sizes: the batch's block sizes.
        enc: ``enc[b][i]`` is context mask ``i`` of sample ``b``: LongTensor ``[K]`` of flat row-major indices
            (``r * W + c``) in ascending order, target cells already removed unless ``allow_overlap``.
        pred: ``pred[b][j]`` is target mask ``j`` of sample ``b``: the ``h * w`` indices of a full block, ascending.
    """

    sizes: BlockSizes
    enc: list[list[Tensor]]
    pred: list[list[Tensor]]


class MultiblockMaskCollator2D(MaskCollator):
    """I-JEPA's multiblock masks as a DataLoader ``collate_fn``.

    Called on a batch of samples ``(..., index)``, returns ``(collated, masks_enc, masks_pred)``: ``masks_enc`` is a
    list of ``nenc`` LongTensors ``[B, Ke]`` and ``masks_pred`` a list of ``npred`` LongTensors ``[B, Kp]``, each row
    the ascending flat row-major indices (``r * W + c``) of the tokens in one block of one sample, truncated to the
    shortest row of the batch (see :func:`jepa.masks.collate.truncate_to_min`). The keywords are the official
    config's ``mask`` keys.
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        enc_mask_scale: tuple[float, float] = (0.2, 0.8),
        pred_mask_scale: tuple[float, float] = (0.2, 0.8),
        aspect_ratio: tuple[float, float] = (0.3, 3.0),
        nenc: int = 1,
        npred: int = 2,
        min_keep: int = 4,
        allow_overlap: bool = False,
        seed: int = 0,
    ) -> None:
        """
        Args:
            input_size: image size in pixels, ``int`` or ``(height, width)``.
            patch_size: patch size in pixels; the token grid is ``input_size // patch_size`` per side.
            enc_mask_scale: range of the fraction of the grid one context block covers (before target removal).
            pred_mask_scale: range of the fraction of the grid one target block covers.
            aspect_ratio: range of the target blocks' height / width, drawn log-uniformly so that ``a`` and ``1/a``
                are equally likely; context blocks are square.
            nenc: context blocks per sample.
            npred: target blocks per sample.
            min_keep: fewest tokens a block may keep (a context block after the targets are removed).
            allow_overlap: keep target cells in the context blocks.
            seed: base seed; the masks of a batch depend only on it and the batch's dataset indices.
        """
        super().__init__(seed=seed)
        self.input_size = as_pair(input_size, "input_size")
        self.patch_size = int(patch_size)
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if min(self.input_size) < self.patch_size:
            raise ValueError(f"input_size {self.input_size} is smaller than one patch of {self.patch_size}")
        self.height = self.input_size[0] // self.patch_size
        self.width = self.input_size[1] // self.patch_size

        self.enc_mask_scale = as_range(enc_mask_scale, "enc_mask_scale")
        self.pred_mask_scale = as_range(pred_mask_scale, "pred_mask_scale")
        for name, (lo, hi) in (("enc_mask_scale", self.enc_mask_scale), ("pred_mask_scale", self.pred_mask_scale)):
            if not (0.0 < lo and hi <= 1.0):
                raise ValueError(f"{name} must lie in (0, 1], got ({lo}, {hi})")
        self.aspect_ratio = as_range(aspect_ratio, "aspect_ratio")
        if self.aspect_ratio[0] <= 0.0:
            raise ValueError(f"aspect_ratio must be > 0, got {self.aspect_ratio}")

        if nenc < 1 or npred < 1:
            raise ValueError(f"nenc and npred must be >= 1, got nenc={nenc}, npred={npred}")
        self.nenc = int(nenc)
        self.npred = int(npred)
        if not 1 <= min_keep <= self.height * self.width:
            raise ValueError(f"min_keep must lie in [1, {self.height * self.width}] (the grid size), got {min_keep}")
        self.min_keep = int(min_keep)
        self.allow_overlap = bool(allow_overlap)

    @property
    def grid_size(self) -> tuple[int, int]:
        """The token grid ``(H, W)``."""
        return self.height, self.width

    def block_hw(self, scale: float, aspect_ratio: float) -> tuple[int, int]:
        """The ``(h, w)`` of a block covering ``scale`` of the grid with height / width ``aspect_ratio``.

        ``h = round(sqrt(scale * H * W * aspect_ratio))`` and ``w = round(sqrt(scale * H * W / aspect_ratio))``
        (halves round up), clipped to ``[1, H]`` and ``[1, W]``.
        """
        return block_hw(scale, aspect_ratio, self.height, self.width)

    def sample_block_sizes(self, generator: torch.Generator) -> BlockSizes:
        """Draw the target and context block sizes of one batch.

        Scale and aspect ratio are independent draws: ``scale ~ U(pred_mask_scale)``, ``log a ~ U(log
        aspect_ratio)``; the context scale ``~ U(enc_mask_scale)`` with a square block. A size of fewer than
        ``min_keep`` cells can hold ``min_keep`` tokens at no position, so it is redrawn (a no-op unless the grid is
        tiny or the scales very small).
        """
        for _ in range(_SIZE_TRIES):
            pred_scale = uniform(generator, *self.pred_mask_scale)
            aspect = log_uniform(generator, *self.aspect_ratio)
            pred_hw = self.block_hw(pred_scale, aspect)
            if pred_hw[0] * pred_hw[1] >= self.min_keep:
                break
        else:
            raise RuntimeError(self._no_room("no target block size", pred_hw))
        for _ in range(_SIZE_TRIES):
            enc_scale = uniform(generator, *self.enc_mask_scale)
            enc_hw = self.block_hw(enc_scale, 1.0)
            if enc_hw[0] * enc_hw[1] >= self.min_keep:
                break
        else:
            raise RuntimeError(self._no_room("no context block size", enc_hw))
        return BlockSizes(pred_scale, aspect, pred_hw, enc_scale, enc_hw)

    def sample_blocks(self, batch_size: int, generator: torch.Generator) -> MultiblockMasks:
        """Draw the untruncated masks of one batch (what :meth:`sample_masks` truncates), for tests and inspection.

        Args:
            batch_size: number of samples ``B``.
            generator: the batch's random generator.
        """
        sizes = self.sample_block_sizes(generator)
        enc, pred = [], []
        for _ in range(batch_size):
            e, p = self._sample_one(sizes, generator)
            enc.append(e)
            pred.append(p)
        return MultiblockMasks(sizes, enc, pred)

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """Draw the masks of one batch: ``nenc`` context and ``npred`` target LongTensors ``[B, K]``."""
        blocks = self.sample_blocks(batch_size, generator)
        masks_enc = [truncate_to_min([e[i] for e in blocks.enc]) for i in range(self.nenc)]
        masks_pred = [truncate_to_min([p[j] for p in blocks.pred]) for j in range(self.npred)]
        return masks_enc, masks_pred

    def _place(self, hw: tuple[int, int], generator: torch.Generator) -> Tensor:
        """A block of size ``hw`` at a uniform position where it fits, as a flat BoolTensor ``[H * W]``."""
        h, w = hw
        # Upper bounds inclusive (H - h and W - w are valid tops and lefts), so blocks reach the last row and column.
        top = randint(generator, self.height - h + 1)
        left = randint(generator, self.width - w + 1)
        block = torch.zeros(self.height, self.width, dtype=torch.bool)
        block[top : top + h, left : left + w] = True
        return block.flatten()

    def _sample_one(self, sizes: BlockSizes, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """Context and target masks of one sample: ``nenc`` and ``npred`` ascending LongTensors ``[K]``."""
        for _ in range(_TARGET_TRIES):
            # A target block always fits whole, and sample_block_sizes guarantees it has >= min_keep cells.
            targets = [self._place(sizes.pred_hw, generator) for _ in range(self.npred)]
            covered = torch.stack(targets).any(dim=0)
            contexts = []
            for _ in range(self.nenc):
                for _ in range(_CONTEXT_TRIES):
                    block = self._place(sizes.enc_hw, generator)
                    if not self.allow_overlap:
                        block &= ~covered
                    if int(block.sum()) >= self.min_keep:
                        contexts.append(block)
                        break
                else:
                    break  # these targets leave no room: place them anew
            if len(contexts) == self.nenc:
                # nonzero lists indices in ascending order, i.e. row-major order on the grid.
                return [c.nonzero().flatten() for c in contexts], [t.nonzero().flatten() for t in targets]
        raise RuntimeError(
            self._no_room(
                f"no context block of {sizes.enc_hw} keeps {self.min_keep} tokens beside {self.npred} target blocks "
                f"of {sizes.pred_hw} after {_TARGET_TRIES} target placements",
                None,
            )
        )

    def _no_room(self, what: str, last_hw: tuple[int, int] | None) -> str:
        last = f" (last drawn {last_hw})" if last_hw is not None else ""
        return (
            f"{what}{last} on the {self.height}x{self.width} token grid with min_keep={self.min_keep}, "
            f"enc_mask_scale={self.enc_mask_scale}, pred_mask_scale={self.pred_mask_scale}, "
            f"aspect_ratio={self.aspect_ratio}, npred={self.npred}: widen the scales or lower min_keep"
        )
