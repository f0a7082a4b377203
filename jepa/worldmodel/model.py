"""The V-JEPA 2-AC training objective: a frozen encoder, an action-conditioned predictor and two L1 terms.

Every frame of a clip ``[B, C, T, H, W]`` is encoded on its own as a static 2-frame tubelet (the frame repeated
``tubelet_size`` times), giving ``T`` frames of ``h * w`` tokens, layer-normed over channels: the targets ``z``.
With ``p(z, a, s)`` the predictor followed by a layer norm (``normalize_reps``, as officially):

* teacher forcing: ``p(z_0..z_{T-2}, a_0..a_{T-2}, s_0..s_{T-2})`` predicts frames ``1..T-1``; the term is
  ``mean |pred - z_{1..T-1}| ** loss_exp / loss_exp``;
* rollout: from the first frame, the teacher-forced prediction of frame 1 is appended, then the predictor runs on
  its own outputs for ``auto_steps - 1`` more steps (with the true actions and states), giving frames
  ``1..auto_steps``; the same L1 against ``z_{1..auto_steps}``.

The loss is their sum. The encoder never trains; it is both ``encoder`` and ``target_encoder`` (so checkpoints keep
the official layout) and ``update_target`` does nothing.

The schedule is the official warmup-stable-decay one (:class:`WSDSchedules`).
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa.training.meta_arch import ClipGroup, JEPAOutput
from jepa.training.schedules import Schedules


@dataclass(frozen=True)
class TrajectoryBatch(ClipGroup):
    """A batch of trajectory clips as the trainer hands it to :class:`WorldModel` (no masks).

    Attributes:
        x: clips ``[B, C, T, H, W]``.
        actions: ``[B, T - 1, A]``; states: ``[B, T, A]``; extrinsics: ``[B, T, A - 1]``.
    """

    actions: Tensor | None = None
    states: Tensor | None = None
    extrinsics: Tensor | None = None


def trajectory_batch(batch: tuple[Any, ...], device: torch.device | str = "cpu") -> TrajectoryBatch:
    """A loader batch ``((clips, actions, states, extrinsics, seeds), [], [])`` (what
    :class:`jepa.worldmodel.data.NoMasks` collates) on ``device``."""
    clips, actions, states, extrinsics = (t.to(device, non_blocking=True) for t in batch[0][:4])
    return TrajectoryBatch(clips, (), (), actions=actions.float(), states=states.float(), extrinsics=extrinsics.float())


def l1_term(pred: Tensor, target: Tensor, loss_exp: float = 1.0) -> Tensor:
    """``mean |pred - target| ** loss_exp / loss_exp`` (the official V-JEPA 2-AC loss)."""
    return torch.mean(torch.abs(pred - target) ** loss_exp) / loss_exp


class WorldModel(nn.Module):
    """Frozen encoder + :class:`jepa.models.ac_predictor.VisionTransformerPredictorAC`, trained as in the module
    docstring.

    Args:
        encoder: a video :class:`jepa.models.VisionTransformer` (``tubelet_size`` frames per tubelet); frozen here.
        predictor: the action-conditioned predictor over the encoder's token grid.
        auto_steps: rollout length (clamped to ``T - 1`` of each batch; 1: the rollout equals teacher forcing).
        loss_exp: exponent of the L1 terms.
        normalize_reps: layer-norm the targets and every prediction (the official configs: true).
    """

    def __init__(
        self, encoder: nn.Module, predictor: nn.Module, auto_steps: int = 2, loss_exp: float = 1.0,
        normalize_reps: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        if auto_steps < 1:
            raise ValueError(f"auto_steps must be >= 1, got {auto_steps}")
        self.encoder = encoder.requires_grad_(False).eval()
        self.target_encoder = self.encoder
        self.predictor = predictor
        self.auto_steps = auto_steps
        self.loss_exp = loss_exp
        self.normalize_reps = normalize_reps

    def train(self, mode: bool = True) -> "WorldModel":
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout or drop path in the targets
        return self

    @property
    def tokens_per_frame(self) -> int:
        n: int = self.predictor.tokens_per_frame  # type: ignore[assignment]
        return n

    def _norm(self, z: Tensor) -> Tensor:
        return F.layer_norm(z, (z.shape[-1],)) if self.normalize_reps else z

    @torch.no_grad()
    def encode_frames(self, clips: Tensor) -> Tensor:
        """Clips ``[B, C, T, H, W]`` (or images ``[B, C, H, W]``) -> frame tokens ``[B, T * h * w, D]``, each frame
        encoded alone as a static tubelet, layer-normed with ``normalize_reps``."""
        if clips.dim() == 4:
            clips = clips.unsqueeze(2)
        B, C, T, H, W = clips.shape
        tubelet = int(getattr(self.encoder, "tubelet_size", 2))
        frames = clips.permute(0, 2, 1, 3, 4).reshape(B * T, C, 1, H, W).expand(-1, -1, tubelet, -1, -1)
        h = self.encoder(frames)
        return self._norm(h.reshape(B, T * h.shape[1], h.shape[-1]))

    def step(self, z: Tensor, actions: Tensor, states: Tensor, extrinsics: Tensor | None = None) -> Tensor:
        """The predictor over ``z`` ``[B, t * h * w, D]`` and ``t`` actions / states, normalised: predictions of
        frames ``1..t``."""
        return self._norm(self.predictor(z, actions, states, extrinsics))

    def losses(self, z: Tensor, actions: Tensor, states: Tensor, extrinsics: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Teacher-forcing and rollout terms for frame tokens ``z`` ``[B, T * h * w, D]``, actions ``[B, T - 1, A]``,
        states ``[B, T, A]`` (see the module docstring)."""
        n = self.tokens_per_frame
        T = z.shape[1] // n
        if actions.shape[1] != T - 1 or states.shape[1] != T:
            raise ValueError(
                f"{T} frames need {T - 1} actions and {T} states, got {actions.shape[1]} and {states.shape[1]}"
            )
        ext = None if extrinsics is None else extrinsics[:, :-1]
        z_tf = self.step(z[:, :-n], actions, states[:, :-1], ext)
        loss_tf = l1_term(z_tf, z[:, n:], self.loss_exp)
        rollout = torch.cat([z[:, :n], z_tf[:, :n]], dim=1)
        for k in range(1, min(self.auto_steps, T - 1)):
            e = None if extrinsics is None else extrinsics[:, : k + 1]
            nxt = self.step(rollout, actions[:, : k + 1], states[:, : k + 1], e)[:, -n:]
            rollout = torch.cat([rollout, nxt], dim=1)
        z_ar = rollout[:, n:]
        loss_ar = l1_term(z_ar, z[:, n : n + z_ar.shape[1]], self.loss_exp)
        return loss_tf, loss_ar

    def forward(self, batches: list[ClipGroup] | TrajectoryBatch, step: int = 0) -> JEPAOutput:
        """The losses of one batch (a :class:`TrajectoryBatch`, alone or in a one-element list); ``step`` is
        unused (the trainer's signature)."""
        batch = batches if isinstance(batches, TrajectoryBatch) else batches[0]
        if not isinstance(batch, TrajectoryBatch) or batch.actions is None or batch.states is None:
            raise TypeError("WorldModel takes a TrajectoryBatch with actions and states")
        z = self.encode_frames(batch.x)
        use_ext = bool(getattr(self.predictor, "use_extrinsics", False))
        loss_tf, loss_ar = self.losses(z, batch.actions, batch.states, batch.extrinsics if use_ext else None)
        pooled = z.detach().float().mean(dim=1)
        return JEPAOutput(loss_tf + loss_ar, loss_tf, loss_tf.new_zeros(()), pooled, loss_rollout=loss_ar)

    def update_target(self, momentum: float) -> None:
        """Nothing to do: the target encoder is the frozen encoder."""


def warmup_stable_decay(step: int, warmup_steps: int, decay_steps: int, total_steps: int, start: float,
                        peak: float, final: float) -> float:  # fmt: skip
    """The official WSD LR at scheduler step ``step``: linear from ``start`` to ``peak`` over ``warmup_steps``,
    ``peak`` until ``total_steps - decay_steps``, then linear to ``final`` over ``decay_steps``."""
    stable_end = total_steps - decay_steps
    if step < warmup_steps:
        return start + (step / max(1, warmup_steps)) * (peak - start)
    if step < stable_end:
        return peak
    return peak + ((step - stable_end) / max(1, decay_steps)) * (final - peak)


@dataclass(frozen=True)
class WSDSchedules(Schedules):
    """:class:`Schedules` with the official V-JEPA 2-AC learning rate: warmup-stable-decay over
    ``int(epochs * ipe)`` steps, the last ``int(anneal_epochs * ipe)`` decaying linearly to ``final_lr``. Weight
    decay keeps the cosine, the EMA momentum is unused. As in the official code the scheduler is stepped before
    each update, so update ``i`` uses the value at step ``i + 1``."""

    anneal_epochs: float = 0.0

    @property
    def decay_steps(self) -> int:
        return int(self.anneal_epochs * self.ipe)

    def lr_at(self, i: int) -> float:
        return warmup_stable_decay(i + 1, self.warmup_steps, self.decay_steps, int(self.epochs * self.ipe),
                                   self.start_lr, self.lr, self.final_lr)  # fmt: skip
