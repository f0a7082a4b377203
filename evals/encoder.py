"""The encoder of an eval (frozen, or trained by the fine-tuning evals) and how batches become probe inputs
``[V, B, N, D]``.

* Video encoders (``pretrain.frames_per_clip > 1``) embed each clip whole; image encoders embed each frame and
  concatenate the frames' tokens (the official ``FrameAggregation``).
* Images given to a video encoder become static clips of ``pretrain.frames_per_clip`` frames.
* Clips arrive as ``[S, V, B, C, T, H, W]`` (segments x spatial views x batch); all are embedded in one forward.
  With ``attend_across_segments`` the tokens of a view's segments are concatenated in temporal order, giving ``V``
  probe inputs of ``S * N`` tokens; otherwise every (segment, view) is a probe input of its own (``S * V``).
* Multi-level probes (``wrapper.out_layers``, V-JEPA 2's ``vit_encoder_multiclip_multilevel``): the outputs of
  those blocks, each through the encoder's final norm, are concatenated along the tokens (``L * N`` tokens of width
  ``D`` per clip, level-major, blocks in increasing order), exactly as the official wrapper does; the probe's width
  stays the encoder's.
"""

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from jepa.checkpoint import CheckpointError, load_encoder, read_checkpoint
from jepa.config import ConfigError
from jepa.config.evals import EvalConfig, EvalConfigBase, checkpoint_disagreements
from jepa.config.pretrain import model_spec_from_config_dict
from jepa.config.spec import EncoderSpec, ModelSpec, with_architecture_of
from jepa.models import VisionTransformer
from jepa.models.builder import build_encoder_from_spec
from jepa.video.transforms import images_as_clips

logger = logging.getLogger(__name__)


M = TypeVar("M", bound=nn.Module)


def eval_encoder_spec(cfg: EvalConfigBase, stored: ModelSpec | None = None, path: str | Path = "") -> EncoderSpec:
    """The encoder an eval builds: ``cfg.pretrain``'s, or, when the checkpoint ``path`` stores its config
    (``stored``, the model it describes: ours do), the architecture recorded there, at the eval's resolution and
    frame count.

    Raises:
        ConfigError: ``cfg.pretrain`` describes another encoder than the stored config (each key with both values).
        CheckpointError: ``cfg.pretrain`` leaves ``num_heads`` open and no stored config records it.
    """
    spec = cfg.encoder_spec()
    if stored is not None:
        problems = checkpoint_disagreements(cfg, stored, path)
        if problems:
            raise ConfigError("; ".join(problems))
        spec = with_architecture_of(spec, stored.encoder)
    if spec.num_heads is None:
        raise CheckpointError("pretrain.num_heads is required with model_name null (not recorded in the checkpoint)")
    return spec


def build_pretrained(
    cfg: EvalConfigBase,
    build: Callable[[EncoderSpec], M],
    load: Callable[[dict[str, Any], EncoderSpec, ModelSpec | None], M],
    what: str = "encoder",
) -> tuple[M, str | None]:
    """The eval's model (the encoder, or the modules around it), frozen and in eval mode, and the checkpoint it
    comes from (None: randomly initialised, seeded with ``pretrain.seed``, the baseline to compare with).

    ``pretrain.folder / checkpoint`` is read once: its stored config (ours keep one) is checked against
    ``pretrain`` (:func:`eval_encoder_spec`), then ``load(checkpoint, encoder spec, stored model spec or None)``
    builds the model from its weights, strictly; a :class:`CheckpointError` it raises names the file. With
    ``checkpoint: null``, ``build(encoder spec)`` builds it instead.
    """
    p = cfg.pretrain
    path = p.checkpoint_path
    if path is None:
        spec = eval_encoder_spec(cfg)
        logger.warning("pretrain.checkpoint is null: evaluating a RANDOMLY INITIALISED %s (seed %d)", what, p.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            model = build(spec)
    else:
        if not path.is_file():
            raise FileNotFoundError(f"pretrain.folder / pretrain.checkpoint: {path} does not exist")
        ckpt = read_checkpoint(path)  # read once: its stored config, then its weights
        stored = ckpt.get("config")
        try:
            described = model_spec_from_config_dict(stored) if isinstance(stored, dict) else None
        except (ConfigError, ValueError) as e:
            raise ConfigError(f"pretrain.checkpoint: the config stored in {path} does not describe a model: {e}") from e
        spec = eval_encoder_spec(cfg, described, path)
        try:
            model = load(ckpt, spec, described)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from e
    model.eval().requires_grad_(False)
    return model, None if path is None else str(path)


def build_frozen_encoder(cfg: EvalConfig) -> tuple[VisionTransformer, str | None]:
    """The encoder :func:`eval_encoder_spec` describes, loaded strictly from ``pretrain.folder / checkpoint`` (or
    randomly initialised when ``checkpoint`` is null), frozen and in eval mode; returns it and the checkpoint path.
    :func:`build_tuned_encoder` gives it to be trained instead."""

    def load(ckpt: dict[str, Any], spec: EncoderSpec, stored: ModelSpec | None) -> VisionTransformer:
        return load_encoder(ckpt, which=cfg.pretrain.checkpoint_key, spec=spec)

    return build_pretrained(cfg, build_encoder_from_spec, load)


def build_tuned_encoder(cfg: EvalConfig) -> tuple[VisionTransformer, str | None]:
    """The encoder of :func:`build_frozen_encoder`, to be trained (the fine-tuning evals): every parameter but the
    fixed sine-cosine position table (never trained, as in pretraining) takes gradients; its blocks drop paths at
    ``optimization.drop_path`` (in training mode, which the engine sets)."""
    encoder, source = build_frozen_encoder(cfg)
    encoder.requires_grad_(True)
    if encoder.pos_embed is not None:
        encoder.pos_embed.requires_grad_(False)
    return encoder, source


class EncoderTokens(nn.Module):
    """Batch -> probe inputs ``[V, B, N, D]`` from an encoder (see the module docstring): a frozen one's, or with
    gradients, the one a fine-tuning eval trains.

    Args:
        encoder: a :class:`VisionTransformer`.
        attend_across_segments: concatenate the segments of each view (video batches).
        image_frames: frames of the static clip an image becomes for a video encoder.
        out_layers: blocks whose normalised outputs are concatenated along the tokens (None: the last block).
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        attend_across_segments: bool = False,
        image_frames: int = 1,
        out_layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if out_layers is not None:
            depth = len(encoder.blocks)
            bad = [i for i in out_layers if not 0 <= i < depth]
            if bad or not out_layers:
                raise ConfigError(f"wrapper.out_layers {list(out_layers)}: expected block indices in [0, {depth}) "
                                  f"of this encoder (depth {depth})")  # fmt: skip
        self.encoder = encoder
        self.attend_across_segments = attend_across_segments
        self.image_frames = image_frames
        self.out_layers = None if out_layers is None else sorted(set(out_layers))

    def encode(self, x: Tensor) -> Tensor:
        """Encoder input -> tokens ``[B, N, D]``, or ``[B, L * N, D]`` over the ``L`` blocks of ``out_layers``."""
        if self.out_layers is None:
            return self.encoder(x)
        levels = self.encoder.forward_intermediates(x, self.out_layers, norm=True, intermediates_only=True)
        return torch.cat(levels, dim=1)

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def num_heads(self) -> int:
        return self.encoder.num_heads

    def embed_clips(self, x: Tensor) -> Tensor:
        """Clips ``[X, C, T, H, W]`` -> tokens ``[X, N, D]`` (an image encoder: each frame's tokens, in order)."""
        if self.encoder.is_video:
            return self.encode(x)
        frames = x.shape[2]
        tokens = self.encode(x.transpose(1, 2).flatten(0, 1))  # [X * T, n, D]
        return tokens.unflatten(0, (-1, frames)).flatten(1, 2)

    def embed_images(self, x: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` -> tokens ``[B, N, D]``."""
        if self.encoder.is_video:
            return self.encode(images_as_clips(x, self.image_frames))
        return self.encode(x)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return self.embed_images(x).unsqueeze(0)
        if x.dim() != 7:
            raise ValueError(f"expected images [B, C, H, W] or clips [S, V, B, C, T, H, W], got {tuple(x.shape)}")
        segments, views, batch = x.shape[:3]
        tokens = self.embed_clips(x.flatten(0, 2)).unflatten(0, (segments, views, batch))  # [S, V, B, N, D]
        if self.attend_across_segments:
            return tokens.permute(1, 2, 0, 3, 4).flatten(2, 3)  # [V, B, S * N, D]
        return tokens.flatten(0, 1)  # [S * V, B, N, D]


def make_encode(tokens: EncoderTokens, device: torch.device):
    """The eval engine's ``encode``: a ``(inputs, labels, ...)`` batch -> ``(tokens [V, B, N, D], labels)``."""

    def encode(batch) -> tuple[Tensor, Tensor]:
        x, labels = batch[0], batch[1]
        return tokens(x.to(device, non_blocking=True)), labels

    return encode


def encoder_inputs(batch) -> tuple[Tensor, Tensor]:
    """A fine-tuning eval's ``encode``: a ``(inputs, labels, ...)`` batch -> ``(inputs, labels)``, which the engine
    gives the trained :class:`EncoderTokens`."""
    return batch[0], batch[1]
