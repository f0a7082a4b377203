"""The frozen model of the anticipation eval: the encoder embeds the observed clip, the predictor predicts the
tokens of frames after it, and the probe reads both.

:class:`AnticipativeWrapper` does what V-JEPA 2's ``vit_encoder_predictor_concat_ar`` wrapper does, output for
output (fp32, same weights; ``tests/test_anticipation.py`` compares them when the official code is at hand):

* the clip's ``N`` tokens ``[B, N, D]`` are the predictor's context, at positions ``0 .. N - 1``;
* the targets are ``num_output_frames`` frames (at least one tubelet) ``int(t_a * fps / tubelet_size)`` time slots
  after the clip, i.e. token positions ``N + s * S + (0 .. S * num_output_frames / tubelet_size - 1)`` with ``S``
  tokens per time slot and ``s`` that offset for each sample's anticipation time ``t_a``;
* ``num_steps`` times: predict the targets from the context, append the prediction to the output, and slide the
  context window: drop its first ``N_pred`` tokens and append the prediction. The positions given to the predictor
  are the same at every step (the official code does not advance them), so extra steps re-predict the same
  frames from the slid context;
* the output is the clip's tokens followed by every step's prediction: ``[B, N + num_steps * N_pred, D]``;
  ``no_predictor`` returns the clip's tokens alone.

The predictor uses its mask token 1 (modulo their number): the official predictor's default ``mask_index``,
which the official wrapper never overrides.
"""

import dataclasses
import logging
from typing import Any

import torch
from torch import Tensor, nn

from evals.encoder import build_pretrained
from jepa.checkpoint import CheckpointError, extract_state_dict, load_encoder, load_predictor
from jepa.config.anticipation import AnticipationConfig
from jepa.config.spec import EncoderSpec, ModelSpec
from jepa.models import VisionTransformer, VisionTransformerPredictor
from jepa.models.builder import build_encoder_from_spec, build_predictor_from_spec
from jepa.models.pos_embed import sincos_table
from jepa.models.vision_transformer import to_hw, token_grid

logger = logging.getLogger(__name__)

OFFICIAL_MASK_INDEX = 1  # the official predictor's default mask_index


class AnticipativeWrapper(nn.Module):
    """Frozen encoder + predictor: clips ``[B, C, T, H, W]`` and anticipation times ``[B]`` (seconds) -> tokens
    ``[B, N + num_steps * N_pred, D]`` (see the module docstring).

    Args:
        encoder: a video :class:`VisionTransformer`.
        predictor: a :class:`VisionTransformerPredictor` over the encoder (None with ``no_predictor``); its token
            grid must reach the furthest predicted position.
        frames_per_second: the clip's frame rate (turns anticipation times into time slots).
        no_predictor: return the clip's tokens only.
        num_output_frames: frames predicted per step (at least one tubelet).
        num_steps: prediction steps.
        mask_index: the predictor's mask token.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        predictor: VisionTransformerPredictor | None,
        *,
        frames_per_second: float,
        no_predictor: bool = False,
        num_output_frames: int = 2,
        num_steps: int = 1,
        mask_index: int = OFFICIAL_MASK_INDEX,
    ) -> None:
        super().__init__()
        if predictor is None and not no_predictor:
            raise ValueError("a predictor is required unless no_predictor=True")
        if num_steps < 1 or frames_per_second <= 0:
            raise ValueError(f"need num_steps >= 1 and frames_per_second > 0, got {num_steps}, {frames_per_second}")
        self.encoder = encoder
        self.predictor = None if no_predictor else predictor
        self.frames_per_second = frames_per_second
        self.tubelet_size = encoder.tubelet_size
        self.num_output_frames = max(num_output_frames, self.tubelet_size)
        self.num_steps = num_steps
        self.mask_index = mask_index

    def future_positions(self, num_tokens: int, tokens_per_slot: int, anticipation_times: Tensor) -> Tensor:
        """Token positions ``[B, N_pred]`` of the predicted frames after a clip of ``num_tokens`` tokens."""
        slots = (anticipation_times * self.frames_per_second / self.tubelet_size).to(torch.int64)  # truncated
        n_pred = tokens_per_slot * (self.num_output_frames // self.tubelet_size)
        first = num_tokens + tokens_per_slot * slots
        return first.unsqueeze(1) + torch.arange(n_pred, device=anticipation_times.device)

    def forward(self, x: Tensor, anticipation_times: Tensor) -> Tensor:
        tokens = self.encoder(x)
        if self.predictor is None:
            return tokens
        batch, n, _ = tokens.shape
        per_slot = (x.shape[-2] // self.encoder.patch_size) * (x.shape[-1] // self.encoder.patch_size)
        targets = self.future_positions(n, per_slot, anticipation_times.to(tokens.device))
        furthest = int(targets.max())
        if furthest >= self.predictor.num_patches:
            raise ValueError(
                f"the predictor's token grid {self.predictor.grid} ({self.predictor.num_patches} tokens) does not "
                f"reach position {furthest} of the frames {anticipation_times.max().item():g} s ahead: build it "
                "with more frames (predictor.num_frames)"
            )
        context = torch.arange(n, device=tokens.device).expand(batch, n)
        outputs, ctxt = [tokens], tokens
        for _ in range(self.num_steps):
            predicted = self.predictor(ctxt, context, targets, mask_index=self.mask_index)
            outputs.append(predicted)
            ctxt = torch.cat([ctxt[:, predicted.shape[1] :], predicted], dim=1)
        return torch.cat(outputs, dim=1)


def extend_position_table(state: dict[str, Tensor], spec: ModelSpec, source: str) -> None:
    """Give a sine-cosine predictor built for more frames than it was trained on the position table of its grid.

    The table is fixed (never trained), and the rows of the trained grid's frames are the first rows of a longer
    grid's table, so the trained positions keep their values and the future frames get theirs; a stored table that
    is not such a prefix is an error (resampling it, as a change of resolution does, would stretch time and give
    the future frames positions inside the clip). Edits ``state`` (the predictor's weights) in place.
    """
    key, e = "predictor_pos_embed", spec.encoder
    if spec.predictor is None or e.use_rope or key not in state:
        return
    grid = token_grid(to_hw(e.img_size), e.patch_size, e.num_frames, e.tubelet_size)
    table = sincos_table(spec.predictor.predictor_embed_dim, grid, e.is_video, e.uniform_power).unsqueeze(0)
    stored = state[key]
    if stored.shape == table.shape:
        return
    n = stored.shape[1]
    if stored.shape[2] != table.shape[2] or n > table.shape[1] or not torch.allclose(stored, table[:, :n], atol=1e-5):
        raise CheckpointError(
            f"{source}: predictor_pos_embed {tuple(stored.shape)} is not the start of the {tuple(table.shape)} "
            "sine-cosine table of the predictor's grid (another resolution?); it cannot be extended in time"
        )
    logger.info("%s: predictor position table extended from %d to %d tokens (the future frames)", source, n,
                table.shape[1])  # fmt: skip
    state[key] = table


def build_anticipation_model(cfg: AnticipationConfig) -> tuple[AnticipativeWrapper, str | None]:
    """The frozen :class:`AnticipativeWrapper` of ``cfg`` and the checkpoint it comes from (None: randomly
    initialised encoder and predictor, seeded with ``pretrain.seed``), through
    :func:`evals.encoder.build_pretrained`. Encoder (``pretrain.checkpoint_key``) and predictor
    (``predictor.checkpoint_key``) are loaded strictly; a checkpoint's stored config must agree with ``pretrain``
    and ``predictor`` (:meth:`AnticipationConfig.checkpoint_model`)."""
    w = cfg.wrapper

    def wrap(encoder: VisionTransformer, predictor: VisionTransformerPredictor | None) -> AnticipativeWrapper:
        return AnticipativeWrapper(
            encoder, predictor, frames_per_second=cfg.data.frames_per_second, no_predictor=w.no_predictor,
            num_output_frames=w.num_output_frames, num_steps=w.num_steps,
        )  # fmt: skip

    def build(spec: EncoderSpec) -> AnticipativeWrapper:
        encoder = build_encoder_from_spec(spec)
        return wrap(encoder, None if w.no_predictor else build_predictor_from_spec(cfg.predictor_spec(spec)))

    def load(ckpt: dict[str, Any], spec: EncoderSpec, stored: ModelSpec | None) -> AnticipativeWrapper:
        predictor = None
        if not w.no_predictor:
            predictor = _load_predictor(cfg, ckpt, spec, stored, str(cfg.pretrain.checkpoint_path))
        return wrap(load_encoder(ckpt, which=cfg.pretrain.checkpoint_key, spec=spec), predictor)

    return build_pretrained(cfg, build, load, what="encoder and predictor")


def _load_predictor(
    cfg: AnticipationConfig, ckpt: dict[str, Any], encoder_spec: EncoderSpec, stored: ModelSpec | None, source: str
) -> VisionTransformerPredictor:
    spec = cfg.predictor_spec(encoder_spec)
    if stored is not None and stored.predictor is not None and spec.predictor is not None:
        # Our pretraining records whether its RoPE positions were on the true (non-square) grid.
        square = stored.predictor.square_rope_grid
        spec = dataclasses.replace(spec, predictor=dataclasses.replace(spec.predictor, square_rope_grid=square))
    state = extract_state_dict(ckpt, (cfg.predictor.checkpoint_key,))
    extend_position_table(state, spec, source)
    return load_predictor(state, spec=spec)
