"""Weights between this toolkit (the official JEPA layout) and Hugging Face transformers, both ways.

    python -m jepa.convert to-hf --checkpoint vitl.pt --hub vjepa2_vitl --out vjepa2-vitl-hf
    python -m jepa.convert to-hf --checkpoint vitl.pt --hub vjepa2_vitl --probe ssv2-vitl.pt --out ssv2-vitl-hf
    python -m jepa.convert from-hf --model vjepa2-vitl-hf --out vitl-from-hf.pth.tar

    to_transformers("vjepa2-hf", encoder, predictor)            # config.json + model.safetensors
    transformers.VJEPA2Model.from_pretrained("vjepa2-hf")      # loads with no missing or unexpected key
    converted = from_transformers("vjepa2-hf")                  # our frozen encoder, predictor (and probe)

Three transformers classes hold these models:

* ``VJEPA2Model``: a V-JEPA 2 encoder (video, RoPE) and its predictor. The class always has both, so both are
  converted, both ways.
* ``VJEPA2ForVideoClassification``: the same under ``vjepa2.``, plus an attentive probe (V-JEPA 2's: ``depth - 1``
  self-attention blocks over the tokens, then the cross-attention query) as its ``pooler`` and ``classifier``.
* ``IJepaModel``: an image encoder with a position table (I-JEPA). transformers has no I-JEPA predictor: only the
  encoder is converted.

V-JEPA (1) encoders (3D sine-cosine tables) and image encoders with RoPE have no transformers class. Whatever a
transformers config cannot express (SwiGLU MLPs, ``qk_scale``, non-square V-JEPA 2 inputs, a probe whose heads or
MLP differ from the encoder's, ...) is a :class:`ConversionError` naming the field, its value and what transformers
needs; so is a transformers config this toolkit cannot build (another activation, hidden-state dropout, ...).

Tensors are mapped by the tables below (``_VJEPA2_*``, ``_IJEPA_*``): each row maps one of our modules (or
parameters) to transformers' names, copying it, splitting our fused ``attn.qkv`` into ``query`` / ``key`` /
``value`` (and the probe's ``xattn.kv`` into ``k_proj`` / ``v_proj``) along the output dimension, or stacking our
``mask_tokens.{j}`` into transformers' one ``[n, 1, 1, D]`` tensor. A key of either side that no row takes, or one
that a row needs and the weights lack, is an error that lists them: nothing is dropped or left at random values.

Numerics and conventions of transformers that the conversion keeps in mind:

* ``VJEPA2Model`` takes ``pixel_values_videos`` ``[B, T, C, H, W]``; ours take ``[B, C, T, H, W]``.
* Its RoPE decodes token positions on the square grid of ``crop_size`` whatever the input's size, as our
  ``handle_nonsquare_inputs=False``; :func:`from_transformers` builds the encoder that way (so outputs match at every
  size). At the native size the two settings agree.
* Its predictor runs on the encoder's output for the whole clip, gathered at ``context_mask``, and always uses mask
  token 1 (modulo the number of tokens): ours computes the same as ``predictor(ctxt, masks_ctxt, masks_tgt,
  mask_index=1)`` with ``ctxt`` the encoder's tokens of the whole clip gathered at ``masks_ctxt``.
* transformers has one ``layer_norm_eps`` for encoder, predictor and probe. The released probes were trained with
  LayerNorm's 1e-5 next to encoders with 1e-6, so any transformers classifier made from one approximates it;
  converting one needs ``probe_eps_from_encoder=True`` (on the tests' tiny probe the logits move by 3e-5 of the
  largest one). Its pooler also uses the encoder's head count: a probe with other heads (the released ViT-g probes
  have 16, the encoder 22) is refused.
* The IJepa layout written is the one ``save_pretrained`` writes (transformers 4's names, which transformers 5 maps
  on load); transformers 5's in-memory names (``layers.{i}.attention.q_proj``, ...) are read too.
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import safetensors
import safetensors.torch
import torch
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from jepa.checkpoint import (
    CheckpointError,
    PathOrState,
    atomic_write,
    extract_state_dict,
    load_classifier,
    load_encoder,
    load_predictor,
    load_strict,
    read_checkpoint,
    save_checkpoint,
)
from jepa.config.spec import EncoderSpec, ModelSpec, PredictorSpec
from jepa.models.attentive_pooler import AttentiveClassifier
from jepa.models.builder import build_encoder_from_spec, predictor_kwargs
from jepa.models.layers import Block, CrossAttentionBlock
from jepa.models.predictor import VisionTransformerPredictor, vit_predictor
from jepa.models.vision_transformer import VisionTransformer

logger = logging.getLogger("jepa.convert")  # also when run as __main__

Family = Literal["vjepa2", "ijepa"]
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# The key under which save_official keeps the transformers config a file was converted from.
TRANSFORMERS_CONFIG_KEY = "transformers_config"


class ConversionError(CheckpointError):
    """Weights or a config that cannot be mapped; the message names the field or keys, the value and what the
    other side needs."""


@dataclass(frozen=True)
class Rule:
    """One row of a key table.

    Attributes:
        ours: our module path (or, with ``params == ()``, our parameter); ``{i}`` stands for a block index and
            ``{j}`` for a mask-token index.
        theirs: transformers' module paths (parameters), one per output of ``how``.
        how: ``"copy"``; ``"split"``: ours is the concatenation of theirs along dim 0 (fused qkv / kv);
            ``"stack"``: theirs is ``torch.stack`` of ours over ``{j}``.
        params: the parameters of a module path that the row maps (``weight`` and ``bias``).
        qkv: the row's bias exists only with ``qkv_bias``.
    """

    ours: str
    theirs: tuple[str, ...]
    how: Literal["copy", "split", "stack"] = "copy"
    params: tuple[str, ...] = ("weight", "bias")
    qkv: bool = False


def _r(ours: str, *theirs: str, how: Literal["copy", "split", "stack"] = "copy", param: bool = False,
       qkv: bool = False) -> Rule:  # fmt: skip
    return Rule(ours, theirs, how, () if param else ("weight", "bias"), qkv)


# A transformer block of the V-JEPA 2 encoder or predictor: ours (blocks.{i}. / predictor_blocks.{i}.) -> theirs
# (encoder.layer.{i}. / predictor.layer.{i}.).
_VJEPA2_BLOCK = (
    _r("norm1", "norm1"),
    _r("attn.qkv", "attention.query", "attention.key", "attention.value", how="split", qkv=True),
    _r("attn.proj", "attention.proj"),
    _r("norm2", "norm2"),
    _r("mlp.fc1", "mlp.fc1"),
    _r("mlp.fc2", "mlp.fc2"),
)
_VJEPA2_ENCODER = (
    _r("patch_embed.proj", "encoder.embeddings.patch_embeddings.proj"),
    *(_r(f"blocks.{{i}}.{r.ours}", *(f"encoder.layer.{{i}}.{t}" for t in r.theirs), how=r.how, qkv=r.qkv)
      for r in _VJEPA2_BLOCK),
    _r("norm", "encoder.layernorm"),
)  # fmt: skip
_VJEPA2_PREDICTOR = (
    _r("predictor_embed", "predictor.embeddings.predictor_embeddings"),
    _r("mask_tokens.{j}", "predictor.embeddings.mask_tokens", how="stack", param=True),
    *(_r(f"predictor_blocks.{{i}}.{r.ours}", *(f"predictor.layer.{{i}}.{t}" for t in r.theirs), how=r.how,
         qkv=r.qkv) for r in _VJEPA2_BLOCK),
    _r("predictor_norm", "predictor.layernorm"),
    _r("predictor_proj", "predictor.proj"),
)  # fmt: skip
# The attentive probe; transformers' pooler always has q/k/v biases. Its blocks run over the tokens first (V-JEPA 2).
_VJEPA2_CLASSIFIER = (
    _r("pooler.query_tokens", "pooler.query_tokens", param=True),
    _r("pooler.cross_attention_block.norm1", "pooler.cross_attention_layer.layer_norm1"),
    _r("pooler.cross_attention_block.xattn.q", "pooler.cross_attention_layer.cross_attn.q_proj"),
    _r("pooler.cross_attention_block.xattn.kv", "pooler.cross_attention_layer.cross_attn.k_proj",
       "pooler.cross_attention_layer.cross_attn.v_proj", how="split"),
    _r("pooler.cross_attention_block.norm2", "pooler.cross_attention_layer.layer_norm2"),
    _r("pooler.cross_attention_block.mlp.fc1", "pooler.cross_attention_layer.mlp.fc1"),
    _r("pooler.cross_attention_block.mlp.fc2", "pooler.cross_attention_layer.mlp.fc2"),
    _r("pooler.blocks.{i}.norm1", "pooler.self_attention_layers.{i}.layer_norm1"),
    _r("pooler.blocks.{i}.attn.qkv", "pooler.self_attention_layers.{i}.self_attn.q_proj",
       "pooler.self_attention_layers.{i}.self_attn.k_proj", "pooler.self_attention_layers.{i}.self_attn.v_proj",
       how="split"),
    _r("pooler.blocks.{i}.attn.proj", "pooler.self_attention_layers.{i}.self_attn.out_proj"),
    _r("pooler.blocks.{i}.norm2", "pooler.self_attention_layers.{i}.layer_norm2"),
    _r("pooler.blocks.{i}.mlp.fc1", "pooler.self_attention_layers.{i}.mlp.fc1"),
    _r("pooler.blocks.{i}.mlp.fc2", "pooler.self_attention_layers.{i}.mlp.fc2"),
    _r("linear", "classifier"),
)  # fmt: skip
# I-JEPA as save_pretrained writes it (transformers 4's ViT names; transformers 5 renames them on load).
_IJEPA_ENCODER = (
    _r("patch_embed.proj", "embeddings.patch_embeddings.projection"),
    _r("pos_embed", "embeddings.position_embeddings", param=True),
    _r("blocks.{i}.norm1", "encoder.layer.{i}.layernorm_before"),
    _r("blocks.{i}.attn.qkv", "encoder.layer.{i}.attention.attention.query",
       "encoder.layer.{i}.attention.attention.key", "encoder.layer.{i}.attention.attention.value", how="split",
       qkv=True),
    _r("blocks.{i}.attn.proj", "encoder.layer.{i}.attention.output.dense"),
    _r("blocks.{i}.norm2", "encoder.layer.{i}.layernorm_after"),
    _r("blocks.{i}.mlp.fc1", "encoder.layer.{i}.intermediate.dense"),
    _r("blocks.{i}.mlp.fc2", "encoder.layer.{i}.output.dense"),
    _r("norm", "layernorm"),
)  # fmt: skip
# I-JEPA in transformers 5's in-memory names (a file saved with save_original_format=False); read only.
_IJEPA_ENCODER_V5 = (
    _r("patch_embed.proj", "embeddings.patch_embeddings.projection"),
    _r("pos_embed", "embeddings.position_embeddings", param=True),
    _r("blocks.{i}.norm1", "layers.{i}.layernorm_before"),
    _r("blocks.{i}.attn.qkv", "layers.{i}.attention.q_proj", "layers.{i}.attention.k_proj",
       "layers.{i}.attention.v_proj", how="split", qkv=True),
    _r("blocks.{i}.attn.proj", "layers.{i}.attention.o_proj"),
    _r("blocks.{i}.norm2", "layers.{i}.layernorm_after"),
    _r("blocks.{i}.mlp.fc1", "layers.{i}.mlp.fc1"),
    _r("blocks.{i}.mlp.fc2", "layers.{i}.mlp.fc2"),
    _r("norm", "layernorm"),
)  # fmt: skip


@dataclass(frozen=True)
class _Row:
    """A :class:`Rule` made concrete for one model: exact keys on both sides."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    how: str


def _expand(rules: Sequence[Rule], *, depth: int, qkv_bias: bool, mask_tokens: int = 0, prefix: str = "",
            ) -> list[_Row]:  # fmt: skip
    """The rows of ``rules`` for a model of ``depth`` blocks and ``mask_tokens`` mask tokens; transformers' keys get
    ``prefix``."""
    rows = []
    for rule in rules:
        blocks = range(depth) if "{i}" in rule.ours else [None]
        for i in blocks:
            for param in rule.params or ("",):
                if param == "bias" and rule.qkv and not qkv_bias:
                    continue

                def key(path: str, j: int | None = None, param: str = param, i: int | None = i) -> str:
                    path = path.replace("{i}", str(i)).replace("{j}", str(j))
                    return f"{path}.{param}" if param else path

                if rule.how == "stack":
                    ours = tuple(key(rule.ours, j) for j in range(mask_tokens))
                else:
                    ours = (key(rule.ours),)
                rows.append(_Row(ours, tuple(prefix + key(t) for t in rule.theirs), rule.how))
    return rows


def _to_theirs(rows: Sequence[_Row], state: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    """Our state dict -> transformers' keys through ``rows``; every key of ``state`` must be taken by a row."""
    out: dict[str, Tensor] = {}
    missing = [k for row in rows for k in row.ours if k not in state]
    leftover = sorted(set(state) - {k for row in rows for k in row.ours})
    _check_keys(what, "ours", missing, leftover)
    for row in rows:
        tensors = [state[k].detach().cpu() for k in row.ours]
        if row.how == "copy":
            parts = tensors
        elif row.how == "split":
            parts = list(tensors[0].chunk(len(row.theirs), dim=0))
        else:
            parts = [torch.stack(tensors)]
        out.update({k: t.contiguous().clone() for k, t in zip(row.theirs, parts, strict=True)})
    return out


def _to_ours(rows: Sequence[_Row], state: Mapping[str, Tensor], what: str) -> tuple[dict[str, Tensor], set[str]]:
    """transformers' keys -> our state dict through ``rows``; returns it and the transformers keys taken."""
    missing = [k for row in rows for k in row.theirs if k not in state]
    _check_keys(what, "transformers", missing, [])
    out: dict[str, Tensor] = {}
    for row in rows:
        tensors = [state[k] for k in row.theirs]
        if row.how == "copy":
            parts = tensors
        elif row.how == "split":
            parts = [torch.cat(tensors, dim=0)]
        else:
            if tensors[0].shape[0] != len(row.ours):
                raise ConversionError(
                    f"{what}: {row.theirs[0]} holds {tensors[0].shape[0]} mask tokens, the config says {len(row.ours)}"
                )
            parts = list(tensors[0].unbind(0))
        out.update({k: t.contiguous().clone() for k, t in zip(row.ours, parts, strict=True)})
    return out, {k for row in rows for k in row.theirs}


def _check_keys(what: str, side: str, missing: Sequence[str], leftover: Sequence[str]) -> None:
    problems = []
    if missing:
        problems.append(f"missing {side} keys {list(missing)}")
    if leftover:
        problems.append(f"{side} keys with no transformers counterpart {list(leftover)}")
    if problems:
        raise ConversionError(f"{what}: " + "; ".join(problems))


def _require(ok: bool, what: str, name: str, value: object, needed: str) -> None:
    if not ok:
        raise ConversionError(f"{what}: {name} = {value!r} cannot be expressed: {needed}")


def _eps(norm: nn.Module, what: str, name: str) -> float:
    _require(type(norm) is nn.LayerNorm and norm.elementwise_affine, what, name, type(norm).__name__,
             "transformers uses nn.LayerNorm with weight and bias")  # fmt: skip
    assert isinstance(norm, nn.LayerNorm)
    return float(norm.eps)


def _mlp_ratio(mlp: nn.Module, width: int, what: str) -> float:
    """The MLP ratio transformers needs for ``mlp`` (it builds ``int(width * ratio)`` hidden units, exact GELU, no
    dropout)."""
    _require(isinstance(mlp, Mlp), what, "use_silu", True, "transformers' MLP is fc1 -> GELU -> fc2")
    assert isinstance(mlp, Mlp)
    _require(isinstance(mlp.act, nn.GELU) and mlp.act.approximate == "none", what, "activation", mlp.act,
             "exact GELU (hidden_act 'gelu')")  # fmt: skip
    drop = max(_dropout(mlp.drop1), _dropout(mlp.drop2))
    _require(drop == 0, what, "drop_rate", drop, "0 (transformers has no dropout in its MLP)")
    fc1 = mlp.fc1
    assert isinstance(fc1, nn.Linear)
    hidden = fc1.out_features
    ratio = hidden / width
    _require(int(width * ratio) == hidden, what, "mlp hidden width", hidden, f"int({width} * mlp_ratio)")
    return ratio


def _drop(module: nn.Module) -> float:
    return float(module.drop_prob) if isinstance(module, DropPath) else 0.0


def _dropout(module: nn.Module) -> float:
    return float(module.p) if isinstance(module, nn.Dropout) else 0.0


def _trunk_facts(trunk: nn.ModuleList, width: int, what: str) -> dict[str, Any]:
    """What transformers needs of a stack of our :class:`Block` (heads, MLP, bias, eps, dropout) and the checks that
    it can express them."""
    blocks = [b for b in trunk if isinstance(b, Block)]
    _require(len(blocks) == len(trunk) > 0, what, "blocks", [type(b).__name__ for b in trunk], "jepa Blocks")
    first = blocks[0]
    attn = first.attn
    ratio = _mlp_ratio(first.mlp, width, what)
    _require(attn.scale == attn.head_dim**-0.5, what, "qk_scale", attn.scale, "head_dim ** -0.5 (qk_scale None)")
    drop = _dropout(attn.proj_drop)
    _require(drop == 0, what, "drop_rate", drop, "0 (transformers has no dropout after the attention projection)")
    eps = {_eps(m, what, "norm_layer") for b in blocks for m in (b.norm1, b.norm2)}
    return {
        "num_heads": attn.num_heads,
        "mlp_ratio": ratio,
        "mlp_hidden": int(width * ratio),
        "qkv_bias": attn.qkv.bias is not None,
        "eps": eps,
        "attn_drop_rate": _dropout(attn.attn_drop),
        "drop_path_rate": _drop(blocks[-1].drop_path),
    }


def _encoder_facts(encoder: VisionTransformer, what: str) -> dict[str, Any]:
    if len(encoder.blocks) == 0:
        raise ConversionError(f"{what}: an encoder without blocks has no transformers counterpart")
    facts = _trunk_facts(encoder.blocks, encoder.embed_dim, what)
    facts["eps"].add(_eps(encoder.norm, what, "norm_layer"))
    _require(len(facts["eps"]) == 1, what, "norm eps", sorted(facts["eps"]), "one eps (transformers' layer_norm_eps)")
    facts["eps"] = facts["eps"].pop()
    facts["in_chans"] = encoder.patch_embed.proj.in_channels
    return facts


def _vjepa2_config(encoder: VisionTransformer, predictor: VisionTransformerPredictor,
                   classifier: AttentiveClassifier | None, labels: Sequence[str] | None,
                   probe_eps_from_encoder: bool) -> dict[str, Any]:  # fmt: skip
    what = "V-JEPA 2 encoder -> transformers VJEPA2Config"
    _require(encoder.is_video, what, "num_frames", encoder.num_frames, "> 1 (VJEPA2Model is a video model)")
    _require(encoder.use_rope, what, "use_rope", False, "True (VJEPA2Model has RoPE and no position table)")
    _require(encoder.img_height == encoder.img_width, what, "img_size", (encoder.img_height, encoder.img_width),
             "a square crop_size")  # fmt: skip
    e = _encoder_facts(encoder, what)
    cfg: dict[str, Any] = {
        "model_type": "vjepa2",
        "architectures": ["VJEPA2ForVideoClassification" if classifier is not None else "VJEPA2Model"],
        "hidden_size": encoder.embed_dim,
        "num_hidden_layers": len(encoder.blocks),
        "num_attention_heads": e["num_heads"],
        "mlp_ratio": e["mlp_ratio"],
        "qkv_bias": e["qkv_bias"],
        "layer_norm_eps": e["eps"],
        "hidden_act": "gelu",
        "patch_size": encoder.patch_size,
        "tubelet_size": encoder.tubelet_size,
        "crop_size": encoder.img_height,
        "frames_per_clip": encoder.num_frames,
        "in_chans": e["in_chans"],
        "drop_path_rate": e["drop_path_rate"],
        "attention_probs_dropout_prob": e["attn_drop_rate"],
        "attention_dropout": 0.0,
        "initializer_range": encoder.init_std,
        **_vjepa2_predictor_config(predictor, encoder, e),
        "torch_dtype": str(next(encoder.parameters()).dtype).removeprefix("torch."),
    }
    if classifier is not None:
        cfg.update(_vjepa2_probe_config(classifier, encoder, e, labels, probe_eps_from_encoder))
    return cfg


def _vjepa2_predictor_config(predictor: VisionTransformerPredictor, encoder: VisionTransformer,
                             e: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    what = "V-JEPA 2 predictor -> transformers VJEPA2Config"
    _require(predictor.use_rope, what, "use_rope", False, "True (transformers' predictor has RoPE)")
    _require(predictor.embed_dim == encoder.embed_dim, what, "embed_dim", predictor.embed_dim,
             f"the encoder's {encoder.embed_dim}")  # fmt: skip
    grid = (predictor.img_height, predictor.img_width, predictor.patch_size)
    _require(grid == (encoder.img_height, encoder.img_width, encoder.patch_size), what, "(img_size, patch_size)",
             grid, "the encoder's (one crop_size and patch_size)")  # fmt: skip
    _require(predictor.square_rope_grid or predictor.grid[1] == predictor.grid[2], what, "square_rope_grid", False,
             "True (transformers decodes predictor positions on the square crop grid)")  # fmt: skip
    if len(predictor.predictor_blocks) == 0:
        raise ConversionError(f"{what}: a predictor without blocks has no transformers counterpart")
    p = _trunk_facts(predictor.predictor_blocks, predictor.predictor_embed_dim, what)
    p["eps"].add(_eps(predictor.predictor_norm, what, "norm_layer"))
    _require(p["eps"] == {e["eps"]}, what, "norm eps", sorted(p["eps"]),
             f"the encoder's {e['eps']} (transformers' one layer_norm_eps)")  # fmt: skip
    _require(p["qkv_bias"] == e["qkv_bias"], what, "qkv_bias", p["qkv_bias"],
             f"the encoder's {e['qkv_bias']} (transformers' one qkv_bias)")  # fmt: skip
    for name in ("drop_path_rate", "attn_drop_rate"):
        if p[name] != e[name]:  # training-time only: transformers' model gets the encoder's
            logger.warning("%s: predictor %s %s differs from the encoder's %s; transformers has one value, the "
                           "encoder's is written", what, name, p[name], e[name])  # fmt: skip
    return {
        "pred_hidden_size": predictor.predictor_embed_dim,
        "pred_num_hidden_layers": len(predictor.predictor_blocks),
        "pred_num_attention_heads": p["num_heads"],
        "pred_mlp_ratio": p["mlp_ratio"],
        "pred_num_mask_tokens": predictor.num_mask_tokens,
        "pred_zero_init_mask_tokens": True,
    }


def _vjepa2_probe_config(classifier: AttentiveClassifier, encoder: VisionTransformer, e: Mapping[str, Any],
                         labels: Sequence[str] | None, probe_eps_from_encoder: bool) -> dict[str, Any]:  # fmt: skip
    what = "attentive probe -> transformers VJEPA2ForVideoClassification"
    pooler = classifier.pooler
    block = pooler.cross_attention_block
    _require(isinstance(block, CrossAttentionBlock), what, "complete_block", False,
             "True (transformers' pooler has norms and an MLP)")  # fmt: skip
    assert isinstance(block, CrossAttentionBlock)
    width = pooler.query_tokens.shape[-1]
    _require(width == encoder.embed_dim, what, "embed_dim", width, f"the encoder's {encoder.embed_dim}")
    _require(pooler.query_tokens.shape[1] == 1, what, "num_queries", pooler.query_tokens.shape[1], "1")
    blocks = list(pooler.blocks or [])
    _require(not blocks or not pooler.blocks_on_queries, what, "blocks_on_queries", True,
             "False (transformers runs the pooler's self-attention over the tokens, as V-JEPA 2)")  # fmt: skip
    heads = {block.xattn.num_heads, *(b.attn.num_heads for b in blocks if isinstance(b, Block))}
    _require(heads == {e["num_heads"]}, what, "num_heads", sorted(heads),
             f"the encoder's {e['num_heads']} (transformers' pooler uses num_attention_heads)")  # fmt: skip
    ratios = {_mlp_ratio(m, width, what) for m in (block.mlp, *(b.mlp for b in blocks if isinstance(b, Block)))}
    _require(ratios == {4.0}, what, "mlp_ratio", sorted(ratios), "4.0 (transformers' pooler MLP)")
    biased = [block.xattn.q.bias, block.xattn.kv.bias, *(b.attn.qkv.bias for b in blocks if isinstance(b, Block))]
    _require(all(b is not None for b in biased), what, "qkv_bias", False, "True (transformers' pooler has biases)")
    eps = {_eps(m, what, "norm_layer") for m in (block.norm1, block.norm2)}
    eps |= {_eps(m, what, "norm_layer") for b in blocks if isinstance(b, Block) for m in (b.norm1, b.norm2)}
    if eps != {e["eps"]}:
        _require(probe_eps_from_encoder, what, "norm eps", sorted(eps),
                 f"the encoder's {e['eps']} (transformers' one layer_norm_eps); pass probe_eps_from_encoder=True "
                 "(--probe-eps-from-encoder) to accept the encoder's")  # fmt: skip
        logger.warning("%s: the probe's LayerNorm eps %s becomes the encoder's %s (transformers has one "
                       "layer_norm_eps)", what, sorted(eps), e["eps"])  # fmt: skip
    n = classifier.linear.out_features
    names = list(labels) if labels is not None else [f"LABEL_{c}" for c in range(n)]
    _require(len(names) == n, what, "labels", len(names), f"one name per class ({n})")
    return {
        "num_pooler_layers": len(blocks),
        "id2label": {str(c): name for c, name in enumerate(names)},
        "label2id": {name: c for c, name in enumerate(names)},
    }


def _ijepa_config(encoder: VisionTransformer) -> dict[str, Any]:
    what = "I-JEPA encoder -> transformers IJepaConfig"
    _require(not encoder.is_video, what, "num_frames", encoder.num_frames, "1 (IJepaModel is an image model)")
    _require(encoder.pos_embed is not None, what, "use_rope", True, "False (IJepaModel adds a position table)")
    e = _encoder_facts(encoder, what)
    _require(e["drop_path_rate"] == 0, what, "drop_path_rate", e["drop_path_rate"], "0 (IJepaModel has none)")
    h, w = encoder.img_height, encoder.img_width
    return {
        "model_type": "ijepa",
        "architectures": ["IJepaModel"],
        "hidden_size": encoder.embed_dim,
        "num_hidden_layers": len(encoder.blocks),
        "num_attention_heads": e["num_heads"],
        "intermediate_size": e["mlp_hidden"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": e["attn_drop_rate"],
        "initializer_range": encoder.init_std,
        "layer_norm_eps": e["eps"],
        "image_size": h if h == w else [h, w],
        "patch_size": encoder.patch_size,
        "num_channels": e["in_chans"],
        "qkv_bias": e["qkv_bias"],
        "torch_dtype": str(next(encoder.parameters()).dtype).removeprefix("torch."),
    }


def _vjepa2_rows(cfg: Mapping[str, Any], *, classifier: bool) -> dict[str, list[_Row]]:
    """The rows of each of our networks for a VJEPA2 config (``classifier``: the ForVideoClassification layout)."""
    prefix = "vjepa2." if classifier else ""
    rows = {
        "encoder": _expand(_VJEPA2_ENCODER, depth=cfg["num_hidden_layers"], qkv_bias=cfg["qkv_bias"], prefix=prefix),
        "predictor": _expand(_VJEPA2_PREDICTOR, depth=cfg["pred_num_hidden_layers"], qkv_bias=cfg["qkv_bias"],
                             mask_tokens=cfg["pred_num_mask_tokens"], prefix=prefix),
    }  # fmt: skip
    if classifier:
        rows["classifier"] = _expand(_VJEPA2_CLASSIFIER, depth=cfg["num_pooler_layers"], qkv_bias=True)
    return rows


def transformers_config(
    encoder: VisionTransformer,
    predictor: VisionTransformerPredictor | None = None,
    classifier: AttentiveClassifier | None = None,
    *,
    labels: Sequence[str] | None = None,
    probe_eps_from_encoder: bool = False,
) -> dict[str, Any]:
    """The transformers ``config.json`` of our modules (see :func:`to_transformers`, which writes it): a
    ``VJEPA2Config`` of a V-JEPA 2 encoder and its predictor (and probe), or an ``IJepaConfig`` of an image encoder.

    Raises:
        ConversionError: a setting transformers cannot express, named with its value and what it needs.
    """
    if encoder.use_rope or encoder.is_video:
        _require(encoder.use_rope and encoder.is_video, "encoder -> transformers", "(num_frames, use_rope)",
                 (encoder.num_frames, encoder.use_rope), "a V-JEPA 2 video encoder with RoPE (VJEPA2Model) or an "
                 "image encoder with a position table (IJepaModel); V-JEPA (1) has no transformers class")  # fmt: skip
        if predictor is None:
            raise ConversionError("transformers' VJEPA2Model holds the predictor too: pass the encoder's predictor")
        return _vjepa2_config(encoder, predictor, classifier, labels, probe_eps_from_encoder)
    if predictor is not None or classifier is not None:
        raise ConversionError("transformers' IJepaModel is an encoder only: it has no predictor or probe")
    return _ijepa_config(encoder)


def to_transformers(
    out_dir: str | os.PathLike,
    encoder: VisionTransformer,
    predictor: VisionTransformerPredictor | None = None,
    classifier: AttentiveClassifier | None = None,
    *,
    labels: Sequence[str] | None = None,
    probe_eps_from_encoder: bool = False,
) -> Path:
    """Write ``encoder`` (with its ``predictor`` and optionally a ``classifier`` probe) as a transformers model
    folder: ``config.json`` (:func:`transformers_config`) and ``model.safetensors``, each written atomically.

    A V-JEPA 2 encoder (video, RoPE) becomes a ``VJEPA2Model`` and needs its predictor (the class has one); with a
    ``classifier`` a ``VJEPA2ForVideoClassification``. An image encoder with a position table becomes an
    ``IJepaModel`` (transformers has no I-JEPA predictor, so ``predictor`` must be None).

    Args:
        out_dir: the folder (created; an existing ``config.json`` / ``model.safetensors`` is replaced).
        labels: class names of the probe, in class order (default ``LABEL_0``, ...).
        probe_eps_from_encoder: accept that the probe's LayerNorms take the encoder's eps (see the module doc).

    Raises:
        ConversionError: a setting transformers cannot express (named with its value), or weights that the tables
            do not cover (the keys listed).
    """
    cfg = transformers_config(encoder, predictor, classifier, labels=labels,
                              probe_eps_from_encoder=probe_eps_from_encoder)  # fmt: skip
    parts: dict[str, nn.Module] = {"encoder": encoder}
    if cfg["model_type"] == "vjepa2":
        assert predictor is not None  # transformers_config requires it
        rows = _vjepa2_rows(cfg, classifier=classifier is not None)
        parts["predictor"] = predictor
        if classifier is not None:
            parts["classifier"] = classifier
    else:
        rows = {"encoder": _expand(_IJEPA_ENCODER, depth=cfg["num_hidden_layers"], qkv_bias=cfg["qkv_bias"])}
    tensors: dict[str, Tensor] = {}
    for name, module in parts.items():
        tensors.update(_to_theirs(rows[name], module.state_dict(), f"{name} -> transformers {cfg['architectures'][0]}"))
    out = Path(out_dir)
    if (out / f"{WEIGHTS_NAME}.index.json").exists():
        raise ConversionError(f"{out} holds a sharded transformers model ({WEIGHTS_NAME}.index.json); use a new folder")
    data = safetensors.torch.save(tensors, metadata={"format": "pt"})
    atomic_write(out / WEIGHTS_NAME, lambda f: f.write(data))
    atomic_write(out / CONFIG_NAME, lambda f: f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n"), mode="w")
    logger.info("wrote %s (%s, %d tensors)", out, cfg["architectures"][0], len(tensors))
    return out


# transformers config keys that describe no weights (PretrainedConfig's own); they are read past without a word.
_GENERIC_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "id2label", "label2id",
    "num_labels", "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "problem_type", "finetuning_task", "_name_or_path", "_attn_implementation_autoset", "tie_word_embeddings",
    "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "add_cross_attention", "pruned_heads",
    "tf_legacy_loss", "_commit_hash",
})  # fmt: skip
# Each class's fields with transformers' defaults (config.json may leave a default out).
_VJEPA2_DEFAULTS: dict[str, Any] = dict(
    patch_size=16, crop_size=256, frames_per_clip=64, tubelet_size=2, hidden_size=1024, in_chans=3,
    num_attention_heads=16, num_hidden_layers=24, drop_path_rate=0.0, mlp_ratio=4.0, layer_norm_eps=1e-6,
    qkv_bias=True, attention_probs_dropout_prob=0.0, hidden_act="gelu", initializer_range=0.02, attention_dropout=0.0,
    num_pooler_layers=3, pred_hidden_size=384, pred_num_attention_heads=12, pred_num_hidden_layers=12,
    pred_num_mask_tokens=10, pred_zero_init_mask_tokens=True, pred_mlp_ratio=4.0,
)  # fmt: skip
_IJEPA_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02, layer_norm_eps=1e-12,
    image_size=224, patch_size=16, num_channels=3, qkv_bias=True, pooler_output_size=None, pooler_act="tanh",
    head_dim=None,
)  # fmt: skip


def _with_defaults(cfg: Mapping[str, Any], defaults: Mapping[str, Any], source: str, warn: bool = True
                   ) -> dict[str, Any]:  # fmt: skip
    """The class's fields of ``cfg``, defaults filled in; other keys (not generic ones) are logged as ignored."""
    unknown = sorted(set(cfg) - set(defaults) - _GENERIC_KEYS)
    if unknown and warn:
        logger.warning("%s: ignoring config keys this converter does not know: %s", source, ", ".join(unknown))
    return {**defaults, **{k: v for k, v in cfg.items() if k in defaults}}


def _side(value: Any, what: str, name: str) -> int:
    """An int, or a square ``[n, n]``, as one int."""
    if isinstance(value, (list, tuple)):
        _require(len(value) == 2 and value[0] == value[1], what, name, value, "a square size")
        value = value[0]
    _require(isinstance(value, int) and not isinstance(value, bool), what, name, value, "an int")
    return int(value)


def spec_from_transformers(config: Mapping[str, Any], source: str = "config") -> ModelSpec:
    """Our :class:`ModelSpec` of a transformers ``config.json`` (a VJEPA2 or IJepa config dict).

    A V-JEPA 2 config gives the encoder and predictor (RoPE positions on the square crop grid, as transformers
    decodes them: ``handle_nonsquare_inputs=False``, ``square_rope_grid=True``); an IJepa config the encoder only.

    Raises:
        ConversionError: a field this toolkit cannot build (named with its value).
    """
    family = _family(config, source)
    if family == "vjepa2":
        c = _with_defaults(config, _VJEPA2_DEFAULTS, source)
        what = f"{source} (transformers VJEPA2Config)"
        _require(c["hidden_act"] == "gelu", what, "hidden_act", c["hidden_act"], "'gelu' (exact GELU)")
        frames = c["frames_per_clip"]
        _require(frames > 1, what, "frames_per_clip", frames, "> 1 (a video encoder of tubelets)")
        encoder = EncoderSpec(
            embed_dim=c["hidden_size"], depth=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
            mlp_ratio=float(c["mlp_ratio"]), img_size=_side(c["crop_size"], what, "crop_size"),
            patch_size=_side(c["patch_size"], what, "patch_size"), num_frames=frames, tubelet_size=c["tubelet_size"],
            in_chans=c["in_chans"], qkv_bias=c["qkv_bias"], norm_eps=float(c["layer_norm_eps"]), use_rope=True,
            drop_path_rate=float(c["drop_path_rate"]), attn_drop_rate=float(c["attention_probs_dropout_prob"]),
            init_std=float(c["initializer_range"]), handle_nonsquare_inputs=False,
        )  # fmt: skip
        predictor = PredictorSpec(
            predictor_embed_dim=c["pred_hidden_size"], depth=c["pred_num_hidden_layers"],
            num_heads=c["pred_num_attention_heads"], mlp_ratio=float(c["pred_mlp_ratio"]),
            num_mask_tokens=c["pred_num_mask_tokens"], zero_init_mask_tokens=c["pred_zero_init_mask_tokens"],
            square_rope_grid=True, drop_path_rate=float(c["drop_path_rate"]),
        )  # fmt: skip
        return ModelSpec(encoder=encoder, predictor=predictor)
    c = _with_defaults(config, _IJEPA_DEFAULTS, source)
    what = f"{source} (transformers IJepaConfig)"
    _require(c["hidden_act"] == "gelu", what, "hidden_act", c["hidden_act"], "'gelu' (exact GELU)")
    _require(c["hidden_dropout_prob"] == 0, what, "hidden_dropout_prob", c["hidden_dropout_prob"],
             "0 (our dropout sits elsewhere in the block)")  # fmt: skip
    width, heads = c["hidden_size"], c["num_attention_heads"]
    _require(c["head_dim"] in (None, width // heads), what, "head_dim", c["head_dim"], "hidden_size / heads")
    ratio = c["intermediate_size"] / width
    _require(int(width * ratio) == c["intermediate_size"], what, "intermediate_size", c["intermediate_size"],
             "int(hidden_size * mlp_ratio) for some ratio")  # fmt: skip
    size = c["image_size"]
    img = tuple(size) if isinstance(size, (list, tuple)) else size
    encoder = EncoderSpec(
        embed_dim=width, depth=c["num_hidden_layers"], num_heads=heads, mlp_ratio=ratio, img_size=img,
        patch_size=_side(c["patch_size"], what, "patch_size"), num_frames=1, in_chans=c["num_channels"],
        qkv_bias=c["qkv_bias"], norm_eps=float(c["layer_norm_eps"]), use_rope=False,
        attn_drop_rate=float(c["attention_probs_dropout_prob"]), init_std=float(c["initializer_range"]),
    )  # fmt: skip
    return ModelSpec(encoder=encoder)


def _family(config: Mapping[str, Any], source: str) -> Family:
    kind = config.get("model_type")
    if kind not in ("vjepa2", "ijepa"):
        raise ConversionError(f"{source}: model_type {kind!r} is not one this converter reads ('vjepa2', 'ijepa')")
    return "vjepa2" if kind == "vjepa2" else "ijepa"


def _num_labels(config: Mapping[str, Any]) -> int:
    if "id2label" in config:
        return len(config["id2label"])
    return int(config.get("num_labels", 2))  # transformers' default


@dataclass(frozen=True)
class Converted:
    """A transformers model as our modules (frozen, in eval mode), with the spec and config they came from."""

    encoder: VisionTransformer
    predictor: VisionTransformerPredictor | None
    classifier: AttentiveClassifier | None
    spec: ModelSpec
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> list[str] | None:
        """The probe's class names in class order (``id2label``), or None without a probe."""
        if self.classifier is None:
            return None
        id2label = self.config.get("id2label") or {}
        return [str(id2label.get(str(c), f"LABEL_{c}")) for c in range(self.classifier.linear.out_features)]


def read_transformers_weights(model_dir: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a transformers model folder: ``model.safetensors``, its sharded form
    (``model.safetensors.index.json``), or a ``pytorch_model.bin`` (read without unpickling code)."""
    folder = Path(model_dir)
    single, index, legacy = folder / WEIGHTS_NAME, folder / f"{WEIGHTS_NAME}.index.json", folder / "pytorch_model.bin"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
    elif legacy.is_file():
        return dict(read_checkpoint(legacy))
    else:
        raise ConversionError(f"{folder} has no {WEIGHTS_NAME}, {index.name} or pytorch_model.bin")
    out: dict[str, Tensor] = {}
    for path in files:
        try:
            with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
                out.update({k: f.get_tensor(k) for k in f.keys()})
        except (safetensors.SafetensorError, OSError) as e:
            raise ConversionError(f"{path} cannot be read as safetensors: {e}") from e
    return out


def from_transformers(model_dir: str | os.PathLike) -> Converted:
    """Our modules from a transformers folder (``VJEPA2Model``, ``VJEPA2ForVideoClassification`` or ``IJepaModel``,
    as :func:`to_transformers` or ``save_pretrained`` writes them), frozen and in eval mode.

    Every tensor of the folder must map onto ours (a pooler of ``IJepaModel(add_pooling_layer=True)``, an
    ``IJepaForImageClassification`` head or any other extra key is an error naming it).

    Returns:
        :class:`Converted`: ``encoder``; ``predictor`` (V-JEPA 2); ``classifier`` (an attentive probe, from a
        ``VJEPA2ForVideoClassification``); the spec and the config.
    """
    folder = Path(model_dir)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise ConversionError(f"{folder} has no {CONFIG_NAME}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{config_path} is not JSON: {e}") from e
    state = read_transformers_weights(folder)
    spec = spec_from_transformers(config, str(config_path))
    if _family(config, str(config_path)) == "vjepa2":
        return _vjepa2_from(config, state, spec, str(folder))
    return _ijepa_from(config, state, spec, str(folder))


def _vjepa2_from(config: dict[str, Any], state: Mapping[str, Tensor], spec: ModelSpec, source: str) -> Converted:
    c = _with_defaults(config, _VJEPA2_DEFAULTS, source, warn=False)
    has_probe = any(k.startswith(("pooler.", "classifier.")) for k in state)
    if has_probe:
        _require(c["attention_dropout"] == 0, source, "attention_dropout", c["attention_dropout"],
                 "0 (our attentive probe has no attention dropout)")  # fmt: skip
    rows = _vjepa2_rows(c, classifier=has_probe)
    encoder = build_encoder_from_spec(spec)
    predictor = _vjepa2_predictor(spec)
    norm = partial(nn.LayerNorm, eps=spec.encoder.norm_eps)
    modules: dict[str, nn.Module] = {"encoder": encoder, "predictor": predictor}
    classifier = None
    if has_probe:
        classifier = AttentiveClassifier(
            embed_dim=c["hidden_size"], num_heads=c["num_attention_heads"], mlp_ratio=4.0,
            depth=c["num_pooler_layers"] + 1, norm_layer=norm, qkv_bias=True, num_classes=_num_labels(config),
        )  # fmt: skip
        modules["classifier"] = classifier
    _load_all(modules, rows, state, source)
    return Converted(encoder, predictor, classifier, spec, dict(config))


def _vjepa2_predictor(spec: ModelSpec) -> VisionTransformerPredictor:
    """The predictor of a spec made by :func:`spec_from_transformers`, randomly initialised. transformers gives it
    the encoder's qkv bias and LayerNorm eps, which :class:`PredictorSpec` leaves to the official factory (True,
    1e-6), so they are passed to it here."""
    norm = partial(nn.LayerNorm, eps=spec.encoder.norm_eps)
    return vit_predictor(**{**predictor_kwargs(spec), "qkv_bias": spec.encoder.qkv_bias, "norm_layer": norm})


def _ijepa_from(config: dict[str, Any], state: Mapping[str, Tensor], spec: ModelSpec, source: str) -> Converted:
    c = _with_defaults(config, _IJEPA_DEFAULTS, source, warn=False)
    if state and all(k.startswith("ijepa.") or k.startswith("classifier.") for k in state):
        state = {k.removeprefix("ijepa."): v for k, v in state.items()}  # IJepaForImageClassification's encoder
    table = _IJEPA_ENCODER_V5 if any(k.startswith("layers.") for k in state) else _IJEPA_ENCODER
    rows = {"encoder": _expand(table, depth=c["num_hidden_layers"], qkv_bias=c["qkv_bias"])}
    encoder = build_encoder_from_spec(spec)
    _load_all({"encoder": encoder}, rows, state, source)
    return Converted(encoder, None, None, spec, dict(config))


def _load_all(modules: Mapping[str, nn.Module], rows: Mapping[str, list[_Row]], state: Mapping[str, Tensor],
              source: str) -> None:  # fmt: skip
    """Map ``state`` onto each of ``modules`` strictly; a transformers key no network takes is an error."""
    taken: set[str] = set()
    for name, module in modules.items():
        ours, used = _to_ours(rows[name], state, f"{source} -> our {name}")
        load_strict(module, ours, f"{source} -> our {name}")
        module.requires_grad_(False)
        module.eval()
        taken |= used
    leftover = sorted(set(state) - taken)
    if leftover:
        raise ConversionError(f"{source}: transformers keys with no counterpart in our models {leftover}")


def save_official(converted: Converted, path: str | os.PathLike) -> Path:
    """Write a converted model as an official-layout checkpoint, atomically: ``encoder`` and ``target_encoder``
    (the same tensors, stored once), ``predictor`` (V-JEPA 2), ``classifiers`` (a one-probe list, V-JEPA 2's probe
    layout) and the transformers config under ``transformers_config``.

    :func:`jepa.checkpoint.load_encoder` / ``load_predictor`` / ``load_classifier`` read it; give them
    ``spec=converted.spec`` (or :func:`spec_from_transformers` of the stored config) for sizes that are not released
    ones. ``python -m jepa.convert to-hf --checkpoint`` reads the stored config back.
    """
    encoder = converted.encoder.state_dict()
    ckpt: dict[str, Any] = {"encoder": encoder, "target_encoder": encoder, TRANSFORMERS_CONFIG_KEY: converted.config}
    if converted.predictor is not None:
        ckpt["predictor"] = converted.predictor.state_dict()
    if converted.classifier is not None:
        ckpt["classifiers"] = [converted.classifier.state_dict()]
    return save_checkpoint(ckpt, path)


def _modules_from_checkpoint(
    checkpoint: PathOrState, *, hub: str | None, which: str, probe: PathOrState | None, probe_index: int,
    probe_num_heads: int | None,
) -> tuple[VisionTransformer, VisionTransformerPredictor | None, AttentiveClassifier | None]:  # fmt: skip
    """The networks of an official-layout checkpoint: built as the ``hub`` release, as the transformers config a
    converted file stores, as our stored training config, or else from the weights' shapes (a released size)."""
    state = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else dict(checkpoint)
    source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "the given checkpoint"
    predictor: VisionTransformerPredictor | None = None
    if hub is not None:
        from jepa.hub import get_release, load

        release = get_release(hub)
        video2 = release.use_rope and release.num_frames > 1
        loaded = load(release, checkpoint=state, which=which, with_predictor=video2)
        encoder, predictor = loaded if isinstance(loaded, tuple) else (loaded, None)
    elif isinstance(state.get(TRANSFORMERS_CONFIG_KEY), Mapping):
        cfg = state[TRANSFORMERS_CONFIG_KEY]
        spec = spec_from_transformers(cfg, f"{source} [{TRANSFORMERS_CONFIG_KEY}]")
        encoder = load_encoder(state, which=which, spec=spec.encoder)
        if spec.predictor is not None:
            predictor = _vjepa2_predictor(spec)
            load_strict(predictor, extract_state_dict(state, ("predictor",)), f"{source} [predictor]")
            predictor.requires_grad_(False).eval()
    elif isinstance(state.get("config"), Mapping):
        from jepa.config.pretrain import model_spec_from_config_dict

        spec = model_spec_from_config_dict(state["config"])
        encoder = load_encoder(state, which=which, spec=spec.encoder)
        # (app lejepa's predictor entry is its projector head: no predictor to convert)
        if spec.encoder.use_rope and spec.encoder.is_video and state["config"].get("app") != "lejepa":
            predictor = load_predictor(state, spec=spec)
    else:
        encoder = load_encoder(state, which=which)
        if encoder.use_rope and encoder.is_video:
            raise ConversionError(f"{source}: the predictor's heads cannot be read from weights; pass --hub (the "
                                  "release whose architecture it has)")  # fmt: skip
    classifier = None
    if probe is not None:
        kwargs = {} if probe_num_heads is None else {"num_heads": probe_num_heads}
        classifier = load_classifier(probe, index=probe_index, **kwargs)
    return encoder, predictor, classifier


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jepa.convert", description="Weights to and from transformers.")
    sub = p.add_subparsers(dest="command", required=True)
    to = sub.add_parser("to-hf", help="an official-layout checkpoint (and probe) -> a transformers folder")
    to.add_argument("--checkpoint", required=True, help="training checkpoint (encoder / target_encoder / predictor)")
    to.add_argument("--hub", help="the jepa.hub release whose architecture the checkpoint has (e.g. vjepa2_vitl)")
    to.add_argument("--which", default="target_encoder", choices=["target_encoder", "encoder"])
    to.add_argument("--probe", help="probe checkpoint (classifier / classifiers): a VJEPA2ForVideoClassification")
    to.add_argument("--probe-index", type=int, default=0, help="which probe of a 'classifiers' list")
    to.add_argument("--probe-num-heads", type=int, help="the probe's heads (default 16, as the released probes)")
    to.add_argument("--probe-eps-from-encoder", action="store_true",
                    help="let the probe's LayerNorms take the encoder's eps (transformers has one)")  # fmt: skip
    to.add_argument("--labels", help="text file with one class name per line, in class order")
    to.add_argument("--out", required=True, help="output folder (config.json + model.safetensors)")
    back = sub.add_parser("from-hf", help="a transformers folder -> an official-layout checkpoint")
    back.add_argument("--model", required=True, help="transformers model folder (config.json + weights)")
    back.add_argument("--out", required=True, help="output checkpoint (.pth.tar)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module documentation); prints one JSON line."""
    from jepa.runtime.logging_utils import setup_logging

    args = _parse_args(argv)
    setup_logging(stream=sys.stderr)
    if args.command == "to-hf":
        encoder, predictor, classifier = _modules_from_checkpoint(
            args.checkpoint, hub=args.hub, which=args.which, probe=args.probe, probe_index=args.probe_index,
            probe_num_heads=args.probe_num_heads,
        )  # fmt: skip
        labels = Path(args.labels).read_text().splitlines() if args.labels else None
        out = to_transformers(args.out, encoder, predictor, classifier, labels=labels,
                              probe_eps_from_encoder=args.probe_eps_from_encoder)  # fmt: skip
        cfg = json.loads((out / CONFIG_NAME).read_text())
        print(json.dumps({"out": str(out), "architecture": cfg["architectures"][0]}))
        return 0
    converted = from_transformers(args.model)
    path = save_official(converted, args.out)
    networks = [n for n in ("encoder", "predictor", "classifier") if getattr(converted, n) is not None]
    print(json.dumps({"out": str(path), "networks": networks}))
    return 0


__all__ = [
    "CONFIG_NAME",
    "ConversionError",
    "Converted",
    "Rule",
    "WEIGHTS_NAME",
    "from_transformers",
    "read_transformers_weights",
    "save_official",
    "spec_from_transformers",
    "to_transformers",
    "transformers_config",
]

if __name__ == "__main__":
    sys.exit(main())
