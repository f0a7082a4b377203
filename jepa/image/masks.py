"""The I-JEPA multiblock masks on a 2D token grid.

The spec is a :class:`jepa.config.pretrain.ImageMaskConfig`. Per batch, one target block size and one context
block size are drawn; per sample, ``num_pred_masks`` target blocks and ``num_enc_masks`` context blocks are placed
at random, and (unless ``allow_overlap``) the target cells are cut out of each context block, so the encoder never
sees what the predictor must predict. Two departures from the official code, both bugs there:

* the scale and the aspect ratio of a block are two independent draws (the official code reused one random number
  for both, so large target blocks were always tall and small ones always wide);
* a block's top-left corner ranges over every position at which the block fits, the last one included (the
  official code excluded it, so no block ever touched the last row or column of the grid).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from jepa.config.pretrain import ImageMaskConfig
from jepa.config.strict import from_dict
from jepa.masks.blocks import as_pair, block_hw, log_uniform, randint, uniform
from jepa.masks.collate import MaskCollator, truncate_to_min

# Bounds on the retries that rejection sampling needs; reaching one means the configuration leaves too little room.
_SIZE_TRIES = 100  # per-batch block sizes with at least ``min_keep`` cells
_CONTEXT_TRIES = 20  # context positions keeping ``min_keep`` cells, for one placement of the targets
_TARGET_TRIES = 20  # placements of a sample's targets before giving up

# The official I-JEPA collator's defaults (src/masks/multiblock.py), kept for keyword construction; a config file's
# mask brings its own (ImageMaskConfig's defaults are the official I-JEPA YAML's).
_OFFICIAL_DEFAULTS = dict(enc_mask_scale=(0.2, 0.8), pred_mask_scale=(0.2, 0.8), aspect_ratio=(0.3, 3.0),
                          num_enc_masks=1, num_pred_masks=2, min_keep=4, allow_overlap=False)  # fmt: skip


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
    list of ``num_enc_masks`` LongTensors ``[B, Ke]`` and ``masks_pred`` a list of ``num_pred_masks`` LongTensors
    ``[B, Kp]``, each row the ascending flat row-major indices (``r * W + c``) of the tokens in one block of one
    sample, truncated to the shortest row of the batch (see :func:`jepa.masks.collate.truncate_to_min`).
    """

    def __init__(
        self,
        mask: ImageMaskConfig | None = None,
        *,
        input_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        seed: int = 0,
        enc_mask_scale: tuple[float, float] | None = None,
        pred_mask_scale: tuple[float, float] | None = None,
        aspect_ratio: tuple[float, float] | None = None,
        nenc: int | None = None,
        npred: int | None = None,
        min_keep: int | None = None,
        allow_overlap: bool | None = None,
    ) -> None:
        """
        Args:
            mask: the validated mask spec (a config's ``mask``); without it, the spec is built from the official
                collator's keywords below.
            input_size: image size in pixels, ``int`` or ``(height, width)``.
            patch_size: patch size in pixels; the token grid is ``input_size // patch_size`` per side.
            seed: base seed; the masks of a batch depend only on it and the batch's dataset indices.
            enc_mask_scale, pred_mask_scale, aspect_ratio, nenc, npred, min_keep, allow_overlap: the official
                collator's keywords (``nenc`` and ``npred`` are ``num_enc_masks`` and ``num_pred_masks``), only
                without ``mask``; None keeps the official collator's default. They are read and checked as a config
                file's ``mask`` mapping is (a bad value raises :class:`~jepa.config.ConfigError`, a ``ValueError``).
        """
        super().__init__(seed=seed)
        keywords = dict(
            enc_mask_scale=enc_mask_scale,
            pred_mask_scale=pred_mask_scale,
            aspect_ratio=aspect_ratio,
            num_enc_masks=nenc,
            num_pred_masks=npred,
            min_keep=min_keep,
            allow_overlap=allow_overlap,
        )
        given = {k: v for k, v in keywords.items() if v is not None}
        if mask is None:
            mask = from_dict(ImageMaskConfig, {**_OFFICIAL_DEFAULTS, **given})
        elif not isinstance(mask, ImageMaskConfig):
            raise TypeError(f"mask must be an ImageMaskConfig, got {type(mask).__name__}")
        elif given:
            raise TypeError(f"give the mask spec as an ImageMaskConfig or as keywords, not both (also got {given})")
        self.mask = mask
        self.input_size = as_pair(input_size, "input_size")
        self.patch_size = int(patch_size)
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        if min(self.input_size) < self.patch_size:
            raise ValueError(f"input_size {self.input_size} is smaller than one patch of {self.patch_size}")
        if mask.patch_size not in (None, self.patch_size):
            raise ValueError(f"mask.patch_size {mask.patch_size} differs from the grid's patch_size {self.patch_size}")
        self.height = self.input_size[0] // self.patch_size
        self.width = self.input_size[1] // self.patch_size
        # The one rule of the spec that needs the grid.
        if mask.min_keep > self.height * self.width:
            raise ValueError(
                f"min_keep: got {mask.min_keep}, expected at most the {self.height * self.width} tokens of the "
                f"{self.height}x{self.width} token grid"
            )

    @property
    def min_keep(self) -> int:
        return self.mask.min_keep

    @property
    def enc_mask_scale(self) -> tuple[float, float]:
        return self.mask.enc_mask_scale

    @property
    def pred_mask_scale(self) -> tuple[float, float]:
        return self.mask.pred_mask_scale

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
            pred_scale = uniform(generator, *self.mask.pred_mask_scale)
            aspect = log_uniform(generator, *self.mask.aspect_ratio)
            pred_hw = self.block_hw(pred_scale, aspect)
            if pred_hw[0] * pred_hw[1] >= self.mask.min_keep:
                break
        else:
            raise RuntimeError(self._no_room("no target block size", pred_hw))
        for _ in range(_SIZE_TRIES):
            enc_scale = uniform(generator, *self.mask.enc_mask_scale)
            enc_hw = self.block_hw(enc_scale, 1.0)
            if enc_hw[0] * enc_hw[1] >= self.mask.min_keep:
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
        """Draw the masks of one batch: ``num_enc_masks`` context and ``num_pred_masks`` target LongTensors
        ``[B, K]``."""
        blocks = self.sample_blocks(batch_size, generator)
        masks_enc = [truncate_to_min([e[i] for e in blocks.enc]) for i in range(self.mask.num_enc_masks)]
        masks_pred = [truncate_to_min([p[j] for p in blocks.pred]) for j in range(self.mask.num_pred_masks)]
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
        """Context and target masks of one sample: ``num_enc_masks`` and ``num_pred_masks`` ascending LongTensors
        ``[K]``."""
        for _ in range(_TARGET_TRIES):
            # A target block always fits whole, and sample_block_sizes guarantees it has >= min_keep cells.
            targets = [self._place(sizes.pred_hw, generator) for _ in range(self.mask.num_pred_masks)]
            covered = torch.stack(targets).any(dim=0)
            contexts = []
            for _ in range(self.mask.num_enc_masks):
                for _ in range(_CONTEXT_TRIES):
                    block = self._place(sizes.enc_hw, generator)
                    if not self.mask.allow_overlap:
                        block &= ~covered
                    if int(block.sum()) >= self.mask.min_keep:
                        contexts.append(block)
                        break
                else:
                    break  # these targets leave no room: place them anew
            if len(contexts) == self.mask.num_enc_masks:
                # nonzero lists indices in ascending order, i.e. row-major order on the grid.
                return [c.nonzero().flatten() for c in contexts], [t.nonzero().flatten() for t in targets]
        raise RuntimeError(
            self._no_room(
                f"no context block of {sizes.enc_hw} keeps {self.mask.min_keep} tokens beside "
                f"{self.mask.num_pred_masks} target blocks of {sizes.pred_hw} after {_TARGET_TRIES} target placements",
                None,
            )
        )

    def _no_room(self, what: str, last_hw: tuple[int, int] | None) -> str:
        last = f" (last drawn {last_hw})" if last_hw is not None else ""
        m = self.mask
        return (
            f"{what}{last} on the {self.height}x{self.width} token grid with min_keep={m.min_keep}, "
            f"enc_mask_scale={m.enc_mask_scale}, pred_mask_scale={m.pred_mask_scale}, "
            f"aspect_ratio={m.aspect_ratio}, num_pred_masks={m.num_pred_masks}: widen the scales or lower min_keep"
        )
