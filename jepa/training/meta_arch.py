"""The JEPA meta-architecture: context encoder, predictor, EMA target encoder, loss and EMA update in one module.

One class serves I-JEPA, V-JEPA, V-JEPA 2 and V-JEPA 2.1. A batch brings ``mask_sets``: a list of
``(masks_enc, masks_pred)`` pairs, each a list of LongTensors ``[B, K]`` of token indices. I-JEPA has one set with
one context mask and several target masks; V-JEPA has one set per mask config (one context and one target mask
each), and set ``i`` uses the predictor's mask token ``i`` unless told otherwise. V-JEPA 2 batches clips of several
lengths as a list of :class:`ClipGroup` (one per length, each with its own mask sets); the prediction loss is then
the mean over every (group, set) pair of that pair's mean loss, as the official loss does, whatever the groups'
sizes. V-JEPA 2.1 adds, as options (all off by default): image groups next to video ones (``ClipGroup.modality``),
deep-supervised targets (``levels``), the dense context loss (``predict_all``, :mod:`jepa.training.dense`) and
targets from a frozen teacher (``teacher``).
"""

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

import torch
from torch import Tensor, nn

from jepa.masks import apply_masks, repeat_interleave_batch
from jepa.models.pos_embed import Grid
from jepa.models.vision_transformer import Modality
from jepa.training.dense import context_distances, context_lambda_at, context_loss
from jepa.training.losses import (
    collapse_stats,
    layer_norm_levels,
    position_share,
    prediction_loss,
    spread_regulariser,
)
from jepa.training.sigreg import SIGReg

MaskSet = tuple[Sequence[Tensor], Sequence[Tensor]]
MODALITIES = ("image", "video")
NO_CONTEXT_LOSS: Mapping[str, float] = MappingProxyType({"image": 0.0, "video": 0.0})


@dataclass
class JEPAOutput:
    # What is backpropagated: prediction loss + reg_coeff * regulariser + sigreg_weight * SIGReg
    # + lambda(step, modality) * context loss.
    loss: Tensor
    loss_pred: Tensor
    loss_reg: Tensor
    target_pooled: Tensor  # [B, D] mean-pooled target-encoder features (detached), for collapse signals
    loss_sigreg: Tensor | None = None  # the SIGReg statistic of the context embeddings (None: not computed)
    # Share of the target tokens' variance that their grid position alone explains (detached, a 0-dim tensor).
    position_share: Tensor | None = None
    # app vjepa_droid (jepa.worldmodel.model): the rollout term; loss_pred is then the teacher-forcing term.
    loss_rollout: Tensor | None = None
    # V-JEPA 2.1's dense term, unweighted (None: predict_all off): the mean over (group, set) pairs of the context loss.
    loss_context: Tensor | None = None


@dataclass(frozen=True)
class ClipGroup:
    """The clips of one length in a batch and their mask sets.

    Attributes:
        x: clips ``[B_g, C, T_g, H, W]`` (or images ``[B_g, C, H, W]``).
        mask_sets: the group's ``(masks_enc, masks_pred)`` pairs, on its token grid.
        mask_indices: the predictor mask token of each set (taken modulo the predictor's tokens).
        modality: ``"image"`` or ``"video"``: what the predictor is told it predicts (its modality embedding) and
            which context-loss weight applies. The encoder picks its tokenizer from the input's frame count.
        weight: the group's share of the loss (its mask sets' mean times ``weight``; the weights of a batch's
            groups sum to 1), or None: every (group, mask set) pair counts the same (as the official loss).
            Images and video in one step (``img_data.mix: accumulate``) weigh ``rank_ratio`` and its rest.
    """

    x: Tensor
    mask_sets: Sequence[MaskSet]
    mask_indices: Sequence[int]
    modality: Modality = "video"
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"ClipGroup.modality must be 'image' or 'video', got {self.modality!r}")
        if self.weight is not None and not 0 < self.weight <= 1:
            raise ValueError(f"ClipGroup.weight must be in (0, 1] or None, got {self.weight!r}")


def _group_weights(groups: Sequence[ClipGroup]) -> bool:
    """Whether the batch's groups carry loss weights (all of them, summing to 1) rather than none."""
    weights = [g.weight for g in groups]
    if all(w is None for w in weights):
        return False
    if any(w is None for w in weights) or abs(sum(cast(float, w) for w in weights) - 1.0) > 1e-6:
        raise ValueError(f"ClipGroup.weight: give every group of a batch a weight, summing to 1, or none: {weights}")
    return True


def _mean(terms: Sequence[Tensor], weights: Sequence[float | None] | None) -> Tensor:
    """``terms`` summed in order and divided by their count, or with ``weights`` their weighted sum."""
    if weights is None:
        return cast(Tensor, sum(terms)) / len(terms)
    return cast(Tensor, sum(cast(float, w) * t for w, t in zip(weights, terms, strict=True)))


class JEPA(nn.Module):
    """Encoder, predictor and an EMA copy of the encoder that produces the regression targets.

    Args:
        loss_type: ``smooth_l1`` | ``l2`` | ``l1`` (see :func:`jepa.training.losses.prediction_loss`).
        loss_exp: exponent of the ``l1`` loss (and of the context loss).
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
        predict_all: V-JEPA 2.1's dense prediction (official ``loss.predict_all``): the predictor (built with
            ``return_all_tokens``) also predicts the targets at the context tokens, and the context loss
            ``|z - h| ** loss_exp / loss_exp`` (whatever ``loss_type``) is added with weight ``lambda``.
        weight_distance_loss: weigh each context token by ``1 / sqrt(d)``, ``d`` its grid distance to the nearest
            predicted token (:func:`jepa.training.dense.context_distances`); ``offset_context_loss`` divides ``d``
            by the token grid's height // 16 first.
        context_lambda: the context loss's weight per modality (official ``lambda_value_img`` /
            ``lambda_value_vid``; a missing modality weighs 0); with ``lambda_progressive`` it is 0 before step
            ``lambda_start``, ramps linearly to that value at ``lambda_end`` and is held (the official schedule),
            else constant.
        levels: the deep-supervised levels the encoder outputs in training mode and the predictor takes and
            predicts (official ``levels_predictor``; the encoder's and predictor's ``n_output_distillation``). Above
            1 the encoders run with ``training=True`` and every level of the targets is layer-normed on its own.
        normalize_predictor: layer-norm the predictions (and the context predictions) level by level, as the
            targets are.
        teacher: a frozen encoder (distillation) whose training-mode output, levels as it has them, replaces the
            EMA target encoder's as the targets. It stays in eval mode without gradient and is not trained; the
            EMA target encoder is still updated (checkpoints keep it). The predictor must output the teacher's
            width (``teacher_embed_dim``). Collapse signals then come from the context encoder's tokens.
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
        predict_all: bool = False,
        weight_distance_loss: bool = False,
        offset_context_loss: bool = False,
        context_lambda: Mapping[str, float] = NO_CONTEXT_LOSS,
        lambda_progressive: bool = True,
        lambda_start: int = 15000,
        lambda_end: int = 30000,
        levels: int = 1,
        normalize_predictor: bool = False,
        teacher: nn.Module | None = None,
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
        _check_dense(predictor, predict_all, weight_distance_loss, offset_context_loss, context_lambda)
        if predict_all and lambda_progressive and lambda_end <= lambda_start:
            raise ValueError(f"lambda_end ({lambda_end}) must be greater than lambda_start ({lambda_start})")
        self.predict_all, self.weight_distance_loss = predict_all, weight_distance_loss
        self.offset_context_loss = offset_context_loss
        self.context_lambda = {m: float(context_lambda.get(m, 0.0)) for m in MODALITIES}
        self.lambda_progressive, self.lambda_start, self.lambda_end = lambda_progressive, lambda_start, lambda_end
        _check_levels(encoder, predictor, levels)
        self.levels, self.normalize_predictor = levels, normalize_predictor
        self.teacher: nn.Module | None = None
        self.target_levels = levels  # the levels of the targets: the encoder's, or the teacher's
        if teacher is not None:
            if target != "ema":
                raise ValueError(f"a teacher supplies the targets: it needs target='ema', got {target!r}")
            self.target_levels = _teacher_levels(teacher)
            _check_teacher_width(teacher, predictor, self.target_levels)
            self.teacher = teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "JEPA":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: no dropout or drop path in its targets, whatever the trainer's mode
        return self

    @torch.no_grad()
    def targets(self, x: Tensor) -> Tensor:
        """Target-encoder tokens ``[B, N, D]``, layer-normed over channels (no affine), as both papers do (with
        ``levels`` > 1: ``[B, N, levels * D]``, each level layer-normed on its own)."""
        return layer_norm_levels(self._levels_out(self.target_encoder, x), self.levels)

    def context_weight(self, step: int, modality: Modality) -> float:
        """``lambda(step, modality)``: the weight of the context loss at ``step`` for groups of ``modality``."""
        value = self.context_lambda[modality]
        if not self.lambda_progressive:
            return value
        return context_lambda_at(step, value, self.lambda_start, self.lambda_end)

    def forward(
        self,
        x: Tensor | Sequence[ClipGroup],
        mask_sets: Sequence[MaskSet] = (),
        mask_indices: Sequence[int] | None = None,
        step: int = 0,
    ) -> JEPAOutput:
        """The losses of one batch.

        Args:
            x: the batch ``[B, ...]``, or a list of :class:`ClipGroup` (clips of several lengths, or images and
                clips; ``mask_sets`` and ``mask_indices`` are then theirs).
            mask_sets: the batch's ``(masks_enc, masks_pred)`` pairs.
            mask_indices: the predictor mask token of each set (default: set ``i`` uses token ``i``).
            step: the global step (seeds SIGReg's directions, identical on every rank; sets ``lambda``).
        """
        if isinstance(x, Tensor):
            indices = range(len(mask_sets)) if mask_indices is None else mask_indices
            groups: Sequence[ClipGroup] = [ClipGroup(x, mask_sets, indices, self._tokenized_as(x))]
        else:
            groups = x
        if not groups or any(len(g.mask_sets) != len(g.mask_indices) or not g.mask_sets for g in groups):
            raise ValueError("every group needs at least one mask set and one mask token index per set")
        for g in groups:
            self._check_modality(g)
        weighted = _group_weights(groups)
        targets = [self._targets(g.x) for g in groups]  # all targets first, as the official step does
        losses, regs, sigregs, ctx_losses, ctx_weighted, pooled_ctx = [], [], [], [], [], []
        pair_weights: list[float] = []  # each (group, set) pair's share of the loss (weighted groups only)
        for group, (h, _, _) in zip(groups, targets):
            B = group.x.shape[0]
            if weighted:
                pair_weights += [cast(float, group.weight) / len(group.mask_sets)] * len(group.mask_sets)
            grid = self._grid(group.x) if self.predict_all or group.modality == "image" else None
            # Image groups may come at another crop than the predictor was built for: RoPE decodes their grid.
            grid_hw = grid[1:] if grid is not None and group.modality == "image" else None
            lam = self.context_weight(step, group.modality) if self.predict_all else 0.0
            preds = []
            pairs = zip(group.mask_sets, group.mask_indices, strict=True)
            for set_index, ((masks_enc, masks_pred), index) in enumerate(pairs):
                target = repeat_interleave_batch(apply_masks(h, masks_pred), B, repeat=len(masks_enc))
                context = self._levels_out(self.encoder, group.x, masks_enc)
                kwargs: dict[str, Any] = dict(mask_index=index, mod=group.modality, grid_hw=grid_hw)
                if self.predict_all:
                    z, z_ctx = self.predictor(context, masks_enc, masks_pred, return_context=True, **kwargs)
                else:
                    z = self.predictor(context, masks_enc, masks_pred, **kwargs)
                if self.normalize_predictor:
                    z = layer_norm_levels(z, self.target_levels)
                losses.append(prediction_loss(z, target, self.loss_type, self.loss_exp))
                preds.append(z)
                if self.predict_all:
                    assert grid is not None
                    if self.normalize_predictor:
                        z_ctx = layer_norm_levels(z_ctx, self.target_levels)
                    # Rows as the predictor's context predictions: target mask, then context mask, then sample.
                    ctx_target = apply_masks(h, masks_enc).repeat(len(masks_pred), 1, 1)
                    dist = None
                    if self.weight_distance_loss:
                        dist = context_distances(masks_enc, masks_pred, grid, self.offset_context_loss)
                    term = context_loss(z_ctx, ctx_target, self.loss_exp, dist)
                    ctx_losses.append(term)
                    ctx_weighted.append(lam * term)
                if self.sigreg is not None:
                    emb = context.mean(dim=1) if self.sigreg_on == "pooled" else context
                    sigregs.append(self.sigreg(emb, step))
                if self.teacher is not None and set_index == 0:  # the first context mask of the group's first set
                    pooled_ctx.append(self._last_level(context[:B]).detach().float().mean(dim=1))
            if self.reg_coeff > 0:
                regs.append(spread_regulariser(preds))  # the spread of each group's predictions, on its own grid
        # Summed in order, then divided: the official loss's arithmetic (so a one-length batch is unchanged too);
        # weighted groups: each pair's term times its share.
        shares = pair_weights if weighted else None
        loss_pred = _mean(losses, shares)
        loss_reg = _mean(regs, [g.weight for g in groups] if weighted else None) if regs else loss_pred.new_zeros(())
        loss = loss_pred + self.reg_coeff * loss_reg
        loss_sigreg = None
        if sigregs:
            loss_sigreg = _mean(sigregs, shares)
            loss = loss + self.sigreg_weight * loss_sigreg
        loss_context = None
        if ctx_losses:
            loss_context = _mean(ctx_losses, shares)
            # The official loss_pred + lambda * loss_context, with each (group, set) pair's own modality's lambda.
            loss = loss + _mean(ctx_weighted, shares)
        if self.teacher is not None:  # the teacher's features cannot collapse: watch the student's instead
            pooled = torch.cat(pooled_ctx)
            share = None
        else:
            pooled = torch.cat([p for _, p, _ in targets]) if len(targets) > 1 else targets[0][1]
            share = torch.stack([s for _, _, s in targets]).mean()
        return JEPAOutput(loss, loss_pred, loss_reg, pooled, loss_sigreg, share, loss_context=loss_context)

    def _levels_out(
        self, module: nn.Module, x: Tensor, masks: Sequence[Tensor] | None = None, levels: int | None = None
    ) -> Tensor:
        """``module``'s tokens of ``x`` (only those kept by ``masks``); with several levels (default
        :attr:`levels`) its training-mode output ``[.., levels * D]``, as the official step calls both encoders."""
        args = (x,) if masks is None else (x, masks)
        return module(*args, training=True) if (levels or self.levels) > 1 else module(*args)

    def _last_level(self, tokens: Tensor, levels: int | None = None) -> Tensor:
        """The last of the ``levels`` (default :attr:`levels`) concatenated in ``tokens`` ``[.., levels * D]``
        (what inference returns)."""
        levels = levels or self.levels
        return tokens[..., -(tokens.shape[-1] // levels) :] if levels > 1 else tokens

    def _targets(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The regression targets of ``x`` (:meth:`targets`, or the teacher's; centred when ``center_targets``),
        the mean-pooled raw target features ``[B, D]`` (float32, detached; the last level) and the share of the
        targets' variance their position explains. With ``target="online"`` the targets carry the online encoder's
        gradient."""
        source = self.encoder if self.target == "online" else self.target_encoder
        if self.teacher is not None:
            source = self.teacher
        levels = self.target_levels  # the teacher's, else self.levels
        with torch.set_grad_enabled(self.target == "online" and torch.is_grad_enabled()):
            h_full = self._levels_out(source, x, levels=levels)
            h = layer_norm_levels(h_full, levels)
            if self.center_targets:
                h = h - h.mean(dim=0, keepdim=True)
        detached = self._last_level(h_full.detach(), levels).float()
        if self.teacher is not None:  # frozen features, not watched for collapse (forward uses the student's)
            self._check_teacher_grid(x, h)
            return h, detached.mean(dim=1), detached.new_zeros(())
        return h, detached.mean(dim=1), position_share(detached)

    def _grid(self, x: Tensor) -> Grid:
        """The token grid ``(T, H, W)`` of ``x`` as the encoder tokenizes it (images ``(1, H, W)``)."""
        encoder: Any = self.encoder
        return cast(Grid, encoder.input_grid(x))

    def _tokenized_as(self, x: Tensor) -> Modality:
        """``"image"`` when the encoder's image tokenizer takes ``x`` (an encoder built with
        ``img_temporal_dim_size``), else ``"video"``."""
        encoder: Any = self.encoder
        if getattr(encoder, "img_temporal_dim_size", None) is None:
            return "video"
        return cast(Modality, encoder.modality(x))

    def _check_modality(self, group: ClipGroup) -> None:
        # An encoder with an image tokenizer picks it by the frame count; the group's label must say the same.
        tokenized = self._tokenized_as(group.x)
        if getattr(self.encoder, "img_temporal_dim_size", None) is not None and tokenized != group.modality:
            raise ValueError(
                f"a ClipGroup labelled {group.modality!r} has inputs of shape {tuple(group.x.shape)}, which the "
                f"encoder tokenizes as {tokenized!r}"
            )

    def _check_teacher_grid(self, x: Tensor, h: Tensor) -> None:
        grid = self._grid(x) if hasattr(self.encoder, "input_grid") else None
        if grid is not None and h.shape[1] != grid[0] * grid[1] * grid[2]:
            raise ValueError(
                f"the teacher returns {h.shape[1]} tokens for an input of shape {tuple(x.shape)}, the student's token "
                f"grid {tuple(grid)} has {grid[0] * grid[1] * grid[2]}: teacher and student need the same patch and "
                "tubelet sizes"
            )

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


def _check_dense(
    predictor: nn.Module,
    predict_all: bool,
    weight_distance_loss: bool,
    offset_context_loss: bool,
    context_lambda: Mapping[str, float],
) -> None:
    unknown = sorted(set(context_lambda) - set(MODALITIES))
    if unknown:
        raise ValueError(f"context_lambda has unknown modalities {unknown}; expected 'image' and/or 'video'")
    if predict_all and not getattr(predictor, "return_all_tokens", False):
        raise ValueError("predict_all needs a predictor that predicts the context tokens (return_all_tokens=True)")
    if not predict_all and (weight_distance_loss or any(v != 0 for v in context_lambda.values())):
        raise ValueError("weight_distance_loss and a non-zero context_lambda shape the context loss: set predict_all")
    if offset_context_loss and not weight_distance_loss:
        raise ValueError("offset_context_loss rescales the distance weights: it needs weight_distance_loss=True")


def _check_levels(encoder: nn.Module, predictor: nn.Module, levels: int) -> None:
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    # One level reads the encoder's inference output (a deep-supervised encoder's last level), as before.
    enc_levels = levels
    if levels > 1:
        enc_levels = getattr(encoder, "n_output_distillation", 1) if getattr(encoder, "deep_supervision", 0) else 1
    pred_levels = getattr(predictor, "n_output_distillation", levels)
    if enc_levels != levels or pred_levels != levels:
        raise ValueError(
            f"levels={levels}: the encoder outputs {enc_levels} level(s) in training mode (deep_supervision, "
            f"n_output_distillation) and the predictor takes {pred_levels}; all three must agree"
        )


def _teacher_levels(teacher: nn.Module) -> int:
    """The levels of a teacher's training-mode output: its ``n_output_distillation`` with deep supervision, else 1."""
    if getattr(teacher, "deep_supervision", False):
        return int(getattr(teacher, "n_output_distillation", 1))
    return 1


def _check_teacher_width(teacher: nn.Module, predictor: nn.Module, levels: int) -> None:
    width = getattr(teacher, "embed_dim", None)
    out = getattr(predictor, "out_embed_dim", None)
    n = getattr(predictor, "n_output_distillation", 1)
    if width is not None and out is not None and out * n != width * levels:
        raise ValueError(
            f"the predictor outputs {n} x {out} = {n * out} channels, the teacher's targets have {levels} x {width} = "
            f"{levels * width}: build the predictor with teacher_embed_dim={levels * width}"
        )
