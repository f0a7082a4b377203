"""The JEPA meta-architecture: context encoder, predictor, EMA target encoder, loss and EMA update in one module.

One class serves I-JEPA and V-JEPA. A batch brings ``mask_sets``: a list of ``(masks_enc, masks_pred)`` pairs,
each a list of LongTensors ``[B, K]`` of token indices. I-JEPA has one set with one context mask and several
target masks; V-JEPA has one set per mask config (one context and one target mask each), and set ``i`` uses the
predictor's mask token ``i`` unless told otherwise. V-JEPA 2 batches clips of several lengths as a list of
:class:`ClipGroup` (one per length, each with its own mask sets); the prediction loss is then the mean over every
(group, set) pair of that pair's mean loss, as the official loss does, whatever the groups' sizes.
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa.masks import apply_masks, repeat_interleave_batch
from jepa.training.losses import collapse_stats, prediction_loss, spread_regulariser

MaskSet = tuple[Sequence[Tensor], Sequence[Tensor]]


@dataclass
class JEPAOutput:
    loss: Tensor  # what is backpropagated: prediction loss + reg_coeff * regulariser
    loss_pred: Tensor
    loss_reg: Tensor
    target_pooled: Tensor  # [B, D] mean-pooled target-encoder features (detached), for collapse signals


@dataclass(frozen=True)
class ClipGroup:
    """The clips of one length in a batch and their mask sets.

    Attributes:
        x: clips ``[B_g, C, T_g, H, W]`` (or images ``[B_g, C, H, W]``).
        mask_sets: the group's ``(masks_enc, masks_pred)`` pairs, on its token grid.
        mask_indices: the predictor mask token of each set (taken modulo the predictor's tokens).
    """

    x: Tensor
    mask_sets: Sequence[MaskSet]
    mask_indices: Sequence[int]


class JEPA(nn.Module):
    """Encoder, predictor and an EMA copy of the encoder that produces the regression targets.

    Args:
        loss_type: ``smooth_l1`` | ``l2`` | ``l1`` (see :func:`jepa.training.losses.prediction_loss`).
        loss_exp: exponent of the ``l1`` loss.
        reg_coeff: weight of V-JEPA's spread regulariser on the predictions (0 disables it).
        center_targets: subtract from every target token its mean over the batch at the same grid position, so the
            loss measures only what differs between samples. On small, uniform data (digits) most of a token's
            features are set by its position alone, which the predictor gets for free from the mask token's position.
    """

    def __init__(
        self,
        encoder: nn.Module,
        predictor: nn.Module,
        loss_type: str = "smooth_l1",
        loss_exp: float = 1.0,
        reg_coeff: float = 0.0,
        center_targets: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.loss_type = loss_type
        self.loss_exp = loss_exp
        self.reg_coeff = reg_coeff
        self.center_targets = center_targets

    @torch.no_grad()
    def targets(self, x: Tensor) -> Tensor:
        """Target-encoder tokens ``[B, N, D]``, layer-normed over channels (no affine), as both papers do."""
        h = self.target_encoder(x)
        return F.layer_norm(h, (h.shape[-1],))

    def forward(
        self,
        x: Tensor | Sequence[ClipGroup],
        mask_sets: Sequence[MaskSet] = (),
        mask_indices: Sequence[int] | None = None,
    ) -> JEPAOutput:
        """The losses of one batch.

        Args:
            x: the batch ``[B, ...]``, or a list of :class:`ClipGroup` (clips of several lengths; ``mask_sets`` and
                ``mask_indices`` are then theirs).
            mask_sets: the batch's ``(masks_enc, masks_pred)`` pairs.
            mask_indices: the predictor mask token of each set (default: set ``i`` uses token ``i``).
        """
        if isinstance(x, Tensor):
            indices = range(len(mask_sets)) if mask_indices is None else mask_indices
            groups: Sequence[ClipGroup] = [ClipGroup(x, mask_sets, indices)]
        else:
            groups = x
        if not groups or any(len(g.mask_sets) != len(g.mask_indices) or not g.mask_sets for g in groups):
            raise ValueError("every group needs at least one mask set and one mask token index per set")
        targets = [self._targets(g.x) for g in groups]  # all targets first, as the official step does
        losses, regs = [], []
        for group, (h, _) in zip(groups, targets):
            B = group.x.shape[0]
            preds = []
            for (masks_enc, masks_pred), index in zip(group.mask_sets, group.mask_indices, strict=True):
                target = repeat_interleave_batch(apply_masks(h, masks_pred), B, repeat=len(masks_enc))
                z = self.predictor(self.encoder(group.x, masks_enc), masks_enc, masks_pred, mask_index=index)
                losses.append(prediction_loss(z, target, self.loss_type, self.loss_exp))
                preds.append(z)
            if self.reg_coeff > 0:
                regs.append(spread_regulariser(preds))  # the spread of each group's predictions, on its own grid
        # Summed in order, then divided: the official loss's arithmetic (so a one-length batch is unchanged too).
        loss_pred = cast(Tensor, sum(losses)) / len(losses)
        loss_reg = cast(Tensor, sum(regs)) / len(regs) if regs else loss_pred.new_zeros(())
        pooled = torch.cat([p for _, p in targets]) if len(targets) > 1 else targets[0][1]
        return JEPAOutput(loss_pred + self.reg_coeff * loss_reg, loss_pred, loss_reg, pooled)

    @torch.no_grad()
    def _targets(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The regression targets of ``x`` (:meth:`targets`, centred when ``center_targets``) and the mean-pooled
        raw target features ``[B, D]`` (float32)."""
        h_full = self.target_encoder(x)
        pooled = h_full.mean(dim=1).float()
        h = F.layer_norm(h_full, (h_full.shape[-1],))
        if self.center_targets:
            h = h - h.mean(dim=0, keepdim=True)
        return h, pooled

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """``target <- momentum * target + (1 - momentum) * encoder``, for every parameter, in one foreach pass."""
        tgt: list[Tensor] = list(self.target_encoder.parameters())
        src = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_mul_(tgt, momentum)
        torch._foreach_add_(tgt, src, alpha=1.0 - momentum)

    @staticmethod
    def collapse_stats(out: JEPAOutput) -> dict[str, float]:
        return collapse_stats(out.target_pooled)
