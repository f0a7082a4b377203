"""LeJEPA's multi-view objective (Balestriero & LeCun, arXiv 2511.08544) with the surface the trainer uses.

Per image (or clip), ``V`` global and ``L`` local views (:mod:`jepa.image.multiview`). The encoder embeds every view
(its tokens mean-pooled: our ViT has no class token), a projector head maps the embeddings to ``z``, and

    loss = (1 - lambda) * mean_{v, b} |z_{v, b} - c_b|^2 / K  +  lambda * mean_v SIGReg(z_v)

with ``c_b`` the mean of sample ``b``'s *global* views' projections, ``z_v`` the ``[B, K]`` projections of view
``v`` (SIGReg per view, the same random directions for every view at a step) and ``v`` ranging over all ``V + L``
views. As in the paper, nothing is detached: the centre carries gradient too (no stop-gradient, no teacher).

For the trainer and every loader the module looks like :class:`jepa.training.meta_arch.JEPA`: ``encoder``;
``predictor`` is the projector head (the network trained next to the encoder, so it shares the optimizer, the
gradient clipping and the checkpoint's ``predictor`` entry); ``target_encoder`` is a copy of the encoder that
``update_target`` sets equal to it after every update, so checkpoints keep the official layout and every eval,
extract and hub loader reads the trained encoder as today.
"""

import copy
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from jepa.training.losses import collapse_stats, position_share
from jepa.training.meta_arch import ClipGroup, JEPAOutput
from jepa.training.sigreg import SIGReg

ProjectorNorm = Literal["batch_norm", "layer_norm", "none"]


class Projector(nn.Module):
    """An MLP ``[N, in_dim] -> [N, dims[-1]]``: ``Linear -> norm -> ReLU`` for each hidden width, then a last
    ``Linear``, as the paper's projector (batch norm there).

    Args:
        in_dim: the encoder's width.
        dims: the hidden widths followed by the output width (at least one entry).
        norm: ``batch_norm`` (the paper's; statistics of the views on each rank), ``layer_norm`` or ``none``.
    """

    def __init__(self, in_dim: int, dims: Sequence[int], norm: ProjectorNorm = "batch_norm") -> None:
        super().__init__()
        if not dims or any(d < 1 for d in dims) or in_dim < 1:
            raise ValueError(f"projector widths must be >= 1 with at least one entry, got {in_dim} -> {list(dims)}")
        if norm not in ("batch_norm", "layer_norm", "none"):
            raise ValueError(f"norm must be 'batch_norm', 'layer_norm' or 'none', got {norm!r}")
        layers: list[nn.Module] = []
        width = in_dim
        for hidden in dims[:-1]:
            layers.append(nn.Linear(width, hidden))
            if norm == "batch_norm":
                layers.append(nn.BatchNorm1d(hidden))
            elif norm == "layer_norm":
                layers.append(nn.LayerNorm(hidden))
            layers.append(nn.ReLU(inplace=True))
            width = hidden
        layers.append(nn.Linear(width, dims[-1]))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class LeJEPA(nn.Module):
    """Encoder + projector trained with LeJEPA's loss; the target encoder mirrors the encoder.

    Args:
        encoder: the ViT (any :class:`jepa.models.VisionTransformer`), returning tokens ``[B, N, D]``.
        projector: maps pooled embeddings ``[B, D]`` to ``[B, K]`` (:class:`Projector`); stored as ``predictor``.
        global_views, local_views: ``V >= 1`` and ``L >= 0`` views per sample (the groups ``forward`` takes).
        lejepa_lambda: the one trade-off ``lambda`` in ``[0, 1]`` between the prediction term and SIGReg.
        sigreg_directions: random directions SIGReg draws per step (a function of ``step``).
        seed: seed of SIGReg's directions.
    """

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        *,
        global_views: int,
        local_views: int,
        lejepa_lambda: float = 0.05,
        sigreg_directions: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if global_views < 1 or local_views < 0:
            raise ValueError(f"need global_views >= 1 and local_views >= 0, got {global_views} and {local_views}")
        if not 0 <= lejepa_lambda <= 1:
            raise ValueError(f"lejepa_lambda must lie in [0, 1], got {lejepa_lambda}")
        self.encoder = encoder
        self.predictor = projector
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.global_views, self.local_views = global_views, local_views
        self.lejepa_lambda = lejepa_lambda
        self.sigreg = SIGReg(sigreg_directions, seed=seed)

    @property
    def projector(self) -> nn.Module:
        """The projector head (the ``predictor`` attribute, under which checkpoints store it)."""
        return self.predictor

    def forward(self, x: Sequence[ClipGroup], step: int = 0) -> JEPAOutput:
        """The losses of one batch.

        Args:
            x: the global views' group, then (when ``L > 0``) the local views' group (:func:`multiview_groups`):
                views ``[V * B, C, S, S]`` (clips ``[V * B, C, T, S, S]``) view-major, each with one mask set whose
                context masks are the tokens the encoder sees of each view (all of them, from
                :class:`jepa.image.multiview.MultiViewCollator`).
            step: the global step (seeds SIGReg's directions, identical on every rank).

        Returns:
            ``loss_pred`` the prediction term, ``loss_sigreg`` the mean per-view SIGReg, ``loss`` their
            ``lambda``-weighted sum; ``target_pooled`` the mean-pooled encoder tokens of the first global view
            ``[B, D]`` (detached) and ``position_share`` theirs, for the collapse signals.
        """
        counts = [self.global_views] + ([self.local_views] if self.local_views else [])
        if len(x) != len(counts):
            raise ValueError(f"expected {len(counts)} view groups (global, then local when L > 0), got {len(x)}")
        batch = x[0].x.shape[0] // self.global_views
        pooled, first_tokens = [], None
        for group, count in zip(x, counts, strict=True):
            if group.x.shape[0] != count * batch or len(group.mask_sets) != 1:
                raise ValueError(
                    f"a view group needs {count} x {batch} views and one mask set, got {group.x.shape[0]} views and "
                    f"{len(group.mask_sets)} sets"
                )
            masks_enc, _ = group.mask_sets[0]
            tokens = self.encoder(group.x, masks_enc)  # [count * B, N, D]
            if first_tokens is None:
                first_tokens = tokens[:batch].detach().float()
            pooled.append(tokens.mean(dim=1))
        # One projector pass over every view, so batch norm sees all of them together.
        z = self.predictor(torch.cat(pooled)).reshape(sum(counts), batch, -1)  # [V + L, B, K]
        centre = z[: self.global_views].mean(dim=0)
        loss_pred = (z - centre).square().mean()
        loss_sigreg = torch.stack([self.sigreg(view, step) for view in z]).mean()
        loss = (1 - self.lejepa_lambda) * loss_pred + self.lejepa_lambda * loss_sigreg
        assert first_tokens is not None  # x holds at least the global group (checked above)
        return JEPAOutput(
            loss, loss_pred, loss_pred.new_zeros(()), first_tokens.mean(dim=1), loss_sigreg,
            position_share(first_tokens),
        )  # fmt: skip

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """Copy the encoder into the target encoder (no EMA teacher: ``momentum`` is ignored)."""
        del momentum
        torch._foreach_copy_(list(self.target_encoder.parameters()), [p.detach() for p in self.encoder.parameters()])

    @staticmethod
    def collapse_stats(out: JEPAOutput) -> dict[str, float]:
        return collapse_stats(out.target_pooled)


def multiview_groups(batch: Any, device: torch.device | str = "cpu") -> list[ClipGroup]:
    """A :class:`jepa.image.multiview.MultiViewCollator` batch ``((views, labels, seeds), masks_enc, masks_pred)``
    as one :class:`ClipGroup` per view kind, on ``device``: views ``[B, V, C, ...]`` (images ``[.., S, S]``, clips
    ``[.., T, S, S]``) become ``[V * B, C, ...]`` view-major (view ``v`` of sample ``b`` at row ``v * B + b``), with
    one mask set of the kind's masks repeated per view (``[V * B, N]``) and mask token index 0 (no predictor uses
    it)."""
    (views, _labels, _seeds), masks_enc, masks_pred = batch
    if not len(views) == len(masks_enc) == len(masks_pred):
        raise ValueError(f"{len(views)} view kinds but {len(masks_enc)} / {len(masks_pred)} masks")
    groups = []
    for x, enc, pred in zip(views, masks_enc, masks_pred, strict=True):
        count = x.shape[1]
        x = x.to(device, non_blocking=True).transpose(0, 1).flatten(0, 1)
        enc, pred = (m.to(device, non_blocking=True).repeat(count, 1) for m in (enc, pred))
        groups.append(ClipGroup(x, [([enc], [pred])], [0]))
    return groups
