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
from jepa.training.losses import collapse_stats, position_share, prediction_loss, spread_regulariser
from jepa.training.sigreg import SIGReg

MaskSet = tuple[Sequence[Tensor], Sequence[Tensor]]


@dataclass
class JEPAOutput:
    loss: Tensor  # what is backpropagated: prediction loss + reg_coeff * regulariser + sigreg_weight * SIGReg
    loss_pred: Tensor
    loss_reg: Tensor
    target_pooled: Tensor  # [B, D] mean-pooled target-encoder features (detached), for collapse signals
    loss_sigreg: Tensor | None = None  # the SIGReg statistic of the context embeddings (None: not computed)
    # Share of the target tokens' variance that their grid position alone explains (detached, a 0-dim tensor).
    position_share: Tensor | None = None
    # app vjepa_droid (jepa.worldmodel.model): the rollout term; loss_pred is then the teacher-forcing term.
    loss_rollout: Tensor | None = None


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
        sigreg_weight: weight of SIGReg (:class:`jepa.training.sigreg.SIGReg`, LeJEPA) on the context encoder's
            embeddings, mean-pooled per sample (``sigreg_on="pooled"``) or every token (``"tokens"``); 0 disables it.
        sigreg_directions: random directions SIGReg draws per step (a function of ``step`` given to forward).
        target: where the regression targets come from: ``ema`` the EMA target encoder (I-JEPA / V-JEPA);
            ``online_stopgrad`` the online encoder without gradient (the trainer sets the EMA momentum to 0, so
            the target encoder is the online one after every update); ``online`` the online encoder with the
            gradient flowing through the targets too (LeJEPA's "no teacher" setting; needs SIGReg against collapse).
    """

    def __init__(
        self,
        encoder: nn.Module,
        predictor: nn.Module,
        loss_type: str = "smooth_l1",
        loss_exp: float = 1.0,
        reg_coeff: float = 0.0,
        center_targets: bool = False,
        sigreg_weight: float = 0.0,
        sigreg_on: str = "pooled",
        sigreg_directions: int = 256,
        target: str = "ema",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if sigreg_on not in ("pooled", "tokens"):
            raise ValueError(f"sigreg_on must be 'pooled' or 'tokens', got {sigreg_on!r}")
        if target not in ("ema", "online_stopgrad", "online"):
            raise ValueError(f"target must be 'ema', 'online_stopgrad' or 'online', got {target!r}")
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.loss_type = loss_type
        self.loss_exp = loss_exp
        self.reg_coeff = reg_coeff
        self.center_targets = center_targets
        self.sigreg_weight, self.sigreg_on, self.target = sigreg_weight, sigreg_on, target
        self.sigreg = SIGReg(sigreg_directions, seed=seed) if sigreg_weight > 0 else None

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
        step: int = 0,
    ) -> JEPAOutput:
        """The losses of one batch.

        Args:
            x: the batch ``[B, ...]``, or a list of :class:`ClipGroup` (clips of several lengths; ``mask_sets`` and
                ``mask_indices`` are then theirs).
            mask_sets: the batch's ``(masks_enc, masks_pred)`` pairs.
            mask_indices: the predictor mask token of each set (default: set ``i`` uses token ``i``).
            step: the global step (seeds SIGReg's directions, identical on every rank).
        """
        if isinstance(x, Tensor):
            indices = range(len(mask_sets)) if mask_indices is None else mask_indices
            groups: Sequence[ClipGroup] = [ClipGroup(x, mask_sets, indices)]
        else:
            groups = x
        if not groups or any(len(g.mask_sets) != len(g.mask_indices) or not g.mask_sets for g in groups):
            raise ValueError("every group needs at least one mask set and one mask token index per set")
        targets = [self._targets(g.x) for g in groups]  # all targets first, as the official step does
        losses, regs, sigregs = [], [], []
        for group, (h, _, _) in zip(groups, targets):
            B = group.x.shape[0]
            preds = []
            for (masks_enc, masks_pred), index in zip(group.mask_sets, group.mask_indices, strict=True):
                target = repeat_interleave_batch(apply_masks(h, masks_pred), B, repeat=len(masks_enc))
                context = self.encoder(group.x, masks_enc)
                z = self.predictor(context, masks_enc, masks_pred, mask_index=index)
                losses.append(prediction_loss(z, target, self.loss_type, self.loss_exp))
                preds.append(z)
                if self.sigreg is not None:
                    emb = context.mean(dim=1) if self.sigreg_on == "pooled" else context
                    sigregs.append(self.sigreg(emb, step))
            if self.reg_coeff > 0:
                regs.append(spread_regulariser(preds))  # the spread of each group's predictions, on its own grid
        # Summed in order, then divided: the official loss's arithmetic (so a one-length batch is unchanged too).
        loss_pred = cast(Tensor, sum(losses)) / len(losses)
        loss_reg = cast(Tensor, sum(regs)) / len(regs) if regs else loss_pred.new_zeros(())
        loss = loss_pred + self.reg_coeff * loss_reg
        loss_sigreg = None
        if sigregs:
            loss_sigreg = cast(Tensor, sum(sigregs)) / len(sigregs)
            loss = loss + self.sigreg_weight * loss_sigreg
        pooled = torch.cat([p for _, p, _ in targets]) if len(targets) > 1 else targets[0][1]
        share = torch.stack([s for _, _, s in targets]).mean()
        return JEPAOutput(loss, loss_pred, loss_reg, pooled, loss_sigreg, share)

    def _targets(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The regression targets of ``x`` (:meth:`targets`, centred when ``center_targets``), the mean-pooled
        raw target features ``[B, D]`` (float32, detached) and the share of the targets' variance their position
        explains. With ``target="online"`` the targets carry the online encoder's gradient."""
        with torch.set_grad_enabled(self.target == "online" and torch.is_grad_enabled()):
            h_full = (self.encoder if self.target == "online" else self.target_encoder)(x)
            h = F.layer_norm(h_full, (h_full.shape[-1],))
            if self.center_targets:
                h = h - h.mean(dim=0, keepdim=True)
        detached = h_full.detach().float()
        return h, detached.mean(dim=1), position_share(detached)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """``target <- momentum * target + (1 - momentum) * encoder``, for every parameter, in one foreach pass.
        Without an EMA teacher (``target`` other than ``ema``) the momentum is 0: the target encoder mirrors the
        online one (what ``online_stopgrad`` regresses to, and what checkpoints store as ``target_encoder``)."""
        if self.target != "ema":
            momentum = 0.0
        tgt: list[Tensor] = list(self.target_encoder.parameters())
        src = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_mul_(tgt, momentum)
        torch._foreach_add_(tgt, src, alpha=1.0 - momentum)

    @staticmethod
    def collapse_stats(out: JEPAOutput) -> dict[str, float]:
        return collapse_stats(out.target_pooled)
