"""The frozen encoder of an eval and how batches become probe inputs ``[V, B, N, D]``.

* Video encoders (``pretrain.frames_per_clip > 1``) embed each clip whole; image encoders embed each frame and
  concatenate the frames' tokens (the official ``FrameAggregation``).
* Images given to a video encoder become static clips of ``pretrain.frames_per_clip`` frames.
* Clips arrive as ``[S, V, B, C, T, H, W]`` (segments x spatial views x batch); all are embedded in one forward.
  With ``attend_across_segments`` the tokens of a view's segments are concatenated in temporal order, giving ``V``
  probe inputs of ``S * N`` tokens; otherwise every (segment, view) is a probe input of its own (``S * V``).
"""

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from jepa.checkpoint import CheckpointError, load_encoder, read_checkpoint
from jepa.config.evals import EvalConfig
from jepa.models import VisionTransformer, build_encoder
from jepa.video.transforms import images_as_clips

logger = logging.getLogger(__name__)


def _num_heads_from_run(path: Path) -> int | None:
    """The encoder's heads as recorded in one of our pretraining checkpoints (its ``config``), if there."""
    config = read_checkpoint(path).get("config")
    if isinstance(config, dict):
        return (config.get("model") or {}).get("num_heads")
    return None


def build_frozen_encoder(cfg: EvalConfig) -> tuple[VisionTransformer, str | None]:
    """The encoder ``cfg.pretrain`` describes, loaded strictly from ``folder / checkpoint`` (or randomly
    initialised when ``checkpoint`` is null), frozen and in eval mode; returns it and the checkpoint path."""
    p = cfg.pretrain
    kwargs = dict(
        img_size=cfg.resolution,
        patch_size=p.patch_size,
        num_frames=p.frames_per_clip,
        tubelet_size=p.tubelet_size,
        uniform_power=p.uniform_power,
        use_rope=p.use_rope,
        use_sdpa=p.use_sdpa,
        use_silu=p.use_silu,
        wide_silu=p.wide_silu,
    )
    path = p.checkpoint_path
    if p.model_name is None:
        kwargs.update(embed_dim=p.embed_dim, depth=p.depth)
        heads = p.num_heads
        if heads is None and path is not None and path.is_file():
            heads = _num_heads_from_run(path)
        if heads is None:
            raise CheckpointError(
                "pretrain.num_heads is required with model_name null (not recorded in the checkpoint)"
            )
        kwargs["num_heads"] = heads
    if path is None:
        logger.warning("pretrain.checkpoint is null: evaluating a RANDOMLY INITIALISED encoder (seed %d)", p.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            encoder = build_encoder(p.model_name, **kwargs)
        encoder.eval().requires_grad_(False)
        return encoder, None
    if not path.is_file():
        raise FileNotFoundError(f"pretrain.folder / pretrain.checkpoint: {path} does not exist")
    encoder = load_encoder(path, which=p.checkpoint_key, model_name=p.model_name, **kwargs)
    return encoder, str(path)


class FrozenTokens(nn.Module):
    """Batch -> probe inputs ``[V, B, N, D]`` from a frozen encoder (see the module docstring).

    Args:
        encoder: a frozen :class:`VisionTransformer`.
        attend_across_segments: concatenate the segments of each view (video batches).
        image_frames: frames of the static clip an image becomes for a video encoder.
    """

    def __init__(self, encoder: VisionTransformer, attend_across_segments: bool = False, image_frames: int = 1) -> None:
        super().__init__()
        self.encoder = encoder
        self.attend_across_segments = attend_across_segments
        self.image_frames = image_frames

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @property
    def num_heads(self) -> int:
        return self.encoder.num_heads

    def embed_clips(self, x: Tensor) -> Tensor:
        """Clips ``[X, C, T, H, W]`` -> tokens ``[X, N, D]`` (an image encoder: each frame's tokens, in order)."""
        if self.encoder.is_video:
            return self.encoder(x)
        frames = x.shape[2]
        tokens = self.encoder(x.transpose(1, 2).flatten(0, 1))  # [X * T, n, D]
        return tokens.unflatten(0, (-1, frames)).flatten(1, 2)

    def embed_images(self, x: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` -> tokens ``[B, N, D]``."""
        if self.encoder.is_video:
            return self.encoder(images_as_clips(x, self.image_frames))
        return self.encoder(x)

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


def make_encode(tokens: FrozenTokens, device: torch.device):
    """The eval engine's ``encode``: a ``(inputs, labels, ...)`` batch -> ``(tokens [V, B, N, D], labels)``."""

    def encode(batch) -> tuple[Tensor, Tensor]:
        x, labels = batch[0], batch[1]
        return tokens(x.to(device, non_blocking=True)), labels

    return encode
