"""Loading world models: AC predictor files, our ``app: vjepa_droid`` checkpoints and the released V-JEPA 2-AC.

* :func:`load_ac_predictor`: a frozen :class:`jepa.models.ac_predictor.VisionTransformerPredictorAC` from a
  checkpoint's ``predictor`` (or a plain state dict), its shapes read from the weights, loaded strictly.
* :func:`load_world_model`: a trained :class:`jepa.worldmodel.model.WorldModel` and the config it was trained with,
  from one of our ``app: vjepa_droid`` checkpoints (which store their config).
* :func:`vjepa2_ac_vit_giant`: the official hub's ``vjepa2_ac_vit_giant``: the ViT-g encoder (256 px, RoPE) and the
  AC predictor, ``(encoder, predictor)`` as the official hub returns them, from the released file (downloaded
  into torch.hub's cache on first use) or a local ``checkpoint``; loaded strictly (the official hub loads the
  encoder with ``strict=False``; the only keys dropped here are a position table the RoPE encoder never uses).
"""

import dataclasses
import logging
import os
import typing
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jepa.checkpoint import CheckpointError, PathOrState, extract_state_dict, load_strict, read_checkpoint
from jepa.config.spec import EncoderSpec
from jepa.models.ac_predictor import VisionTransformerPredictorAC, vit_ac_predictor
from jepa.models.builder import build_encoder_from_spec
from jepa.models.vision_transformer import VisionTransformer

logger = logging.getLogger(__name__)

VJEPA2_AC_URL = "https://dl.fbaipublicfiles.com/vjepa2/vjepa2-ac-vitg.pt"
# The official hub's architecture of vjepa2_ac_vit_giant (src/hub/backbones.py: _make_vjepa2_ac_model).
VJEPA2_AC_GRID = dict(img_size=256, patch_size=16, num_frames=64, tubelet_size=2)


def _freeze(model: nn.Module) -> nn.Module:
    return model.requires_grad_(False).eval()


def _count(state: dict[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def ac_predictor_kwargs_from_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """What an AC predictor's weights fix: widths, depth, action width, gated MLP or MLP ratio."""
    if "action_encoder.weight" not in state or "predictor_embed.weight" not in state:
        raise CheckpointError("not action-conditioned predictor weights (no action_encoder.weight / predictor_embed)")
    embed = state["predictor_embed.weight"]
    width = embed.shape[0]
    out: dict[str, Any] = {
        "embed_dim": embed.shape[1],
        "predictor_embed_dim": width,
        "depth": _count(state, "predictor_blocks."),
        "action_embed_dim": state["action_encoder.weight"].shape[1],
        "qkv_bias": "predictor_blocks.0.attn.qkv.bias" in state,
    }
    if "predictor_blocks.0.mlp.fc3.weight" in state:
        out["use_silu"] = True
    elif "predictor_blocks.0.mlp.fc1.weight" in state:
        out["mlp_ratio"] = state["predictor_blocks.0.mlp.fc1.weight"].shape[0] / width
    return out


def is_ac_predictor_state(state: dict[str, Any]) -> bool:
    """Whether a predictor state dict is an action-conditioned one (what ``jepa.load_predictor`` dispatches on)."""
    return "action_encoder.weight" in state


def load_ac_predictor(path_or_state: PathOrState, *, num_heads: int, **kwargs: Any) -> VisionTransformerPredictorAC:
    """A frozen AC predictor (eval mode) from a checkpoint's ``predictor`` or a plain state dict.

    Widths, depth, action width and MLP kind come from the weights; ``num_heads`` cannot (the official code sets
    it: 16 for the release). The token grid (``img_size``, ``patch_size``, ``num_frames``, ``tubelet_size``)
    defaults to the release's (256 px, patch 16, 64 frames, tubelet 2); other keywords (``use_extrinsics``,
    ``is_frame_causal``, ``use_sdpa``, ...) as :class:`VisionTransformerPredictorAC` takes them. Built like the
    official ``vit_ac_predictor`` (LayerNorm eps 1e-6).
    """
    state = extract_state_dict(path_or_state, ("predictor",))
    merged = {**VJEPA2_AC_GRID, **ac_predictor_kwargs_from_state_dict(state), "num_heads": num_heads, **kwargs}
    model = vit_ac_predictor(**merged)
    source = str(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else "<state dict>"
    load_strict(model, state, f"{source} [predictor]")
    return _freeze(model)  # type: ignore[return-value]


def _known_keys(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` without the keys schema ``cls`` does not have (a file of another version) or accepts unused (their
    warnings belong to config files, not to stored configs), nested sections included."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in raw.items():
        f = fields.get(key)
        if f is None or f.metadata.get("ignored"):
            continue
        hint = hints[key]
        nested = isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict)
        out[key] = _known_keys(hint, value) if nested else value
    return out


def load_world_model(path: str | Path) -> tuple[Any, Any]:
    """``(WorldModel, PretrainConfig)`` from one of our ``app: vjepa_droid`` checkpoints: the frozen encoder
    (``target_encoder``) and the predictor, built from the config the checkpoint stores (keys this version does not
    know are left out) and loaded strictly; the model is frozen and in eval mode."""
    from jepa.config.pretrain import PretrainConfig
    from jepa.config.strict import from_dict
    from jepa.training.builders import ac_predictor_kwargs
    from jepa.worldmodel.model import WorldModel

    ckpt = read_checkpoint(path)
    stored = ckpt.get("config")
    if not isinstance(stored, dict) or stored.get("app") != "vjepa_droid":
        raise CheckpointError(f"{path}: not an app vjepa_droid checkpoint of this toolkit (it stores no such config)")
    cfg = from_dict(PretrainConfig, _known_keys(PretrainConfig, stored))
    encoder = build_encoder_from_spec(cfg.model_spec())
    load_strict(encoder, extract_state_dict(ckpt, ("target_encoder",)), f"{path} [target_encoder]")
    predictor = vit_ac_predictor(**ac_predictor_kwargs(cfg, encoder.embed_dim))
    load_strict(predictor, extract_state_dict(ckpt, ("predictor",)), f"{path} [predictor]")
    model = WorldModel(encoder, predictor, auto_steps=cfg.loss.auto_steps, loss_exp=cfg.loss.loss_exp,
                       normalize_reps=cfg.loss.normalize_reps)  # fmt: skip
    return _freeze(model), cfg


def vjepa2_ac_encoder_spec(**kwargs: Any) -> EncoderSpec:
    """The released V-JEPA 2-AC encoder: ViT-g (``vit_giant_xformers``), 256 px, patch 16, 64 frames, tubelet 2,
    RoPE, no ``uniform_power``; ``kwargs`` override encoder fields."""
    fields = {**VJEPA2_AC_GRID, "use_rope": True, "uniform_power": False, **kwargs}
    return EncoderSpec.of("vit_giant_xformers", **fields)


def vjepa2_ac_vit_giant(
    *, pretrained: bool = True, checkpoint: PathOrState | None = None, which: str = "encoder", **kwargs: Any
) -> tuple[VisionTransformer, VisionTransformerPredictorAC]:
    """The official hub's ``vjepa2_ac_vit_giant``: ``(encoder, predictor)``, trainable and in training mode as the
    official hub returns them.

    Args:
        pretrained: load the released weights (:data:`VJEPA2_AC_URL`, downloaded once into torch.hub's cache) or,
            with ``checkpoint``, that file / loaded dict instead.
        which: the file's entry the encoder is read from (the official hub: ``encoder``).
        kwargs: architecture keywords that reach encoder and predictor alike, as officially (``num_frames``,
            ``use_sdpa``, ``use_activation_checkpointing``, ...); encoder-only ones are rejected by the predictor.
    """
    grid_keys = set(VJEPA2_AC_GRID)
    enc_kwargs = {k: v for k, v in kwargs.items() if k in grid_keys | {"use_sdpa", "use_activation_checkpointing"}}
    encoder = build_encoder_from_spec(vjepa2_ac_encoder_spec(**enc_kwargs))
    predictor = vit_ac_predictor(**{**VJEPA2_AC_GRID, "embed_dim": encoder.embed_dim, **kwargs})
    if not pretrained and checkpoint is None:
        return encoder, predictor
    source: PathOrState
    if checkpoint is not None:
        source = checkpoint
    else:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        source = folder / os.path.basename(VJEPA2_AC_URL)
        if not source.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            logger.info("downloading %s to %s", VJEPA2_AC_URL, source)
            torch.hub.download_url_to_file(VJEPA2_AC_URL, str(source))
    ckpt = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    name = str(source) if isinstance(source, (str, os.PathLike)) else "<checkpoint dict>"
    enc_state = extract_state_dict(ckpt, (which,))
    if "pos_embed" in enc_state and not any(n == "pos_embed" for n, _ in encoder.named_parameters()):
        logger.info("%s: dropping the unused pos_embed of the RoPE encoder's %s", name, which)
        enc_state = {k: v for k, v in enc_state.items() if k != "pos_embed"}
    load_strict(encoder, enc_state, f"{name} [{which}]")
    load_strict(predictor, extract_state_dict(ckpt, ("predictor",)), f"{name} [predictor]")
    return encoder, predictor
