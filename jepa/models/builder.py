"""The one builder: a :mod:`jepa.config.spec` model spec -> the encoder and predictor modules.

This is the only place that maps a spec (and so any config, release or stored config) to constructor keywords;
:func:`encoder_kwargs` and :func:`predictor_kwargs` are that mapping, the ``build_*`` functions call the constructors.
"""

from dataclasses import fields
from functools import partial
from typing import Any

from torch import nn

from jepa.config.spec import EncoderSpec, ModelSpec
from jepa.models.layers import NormLayer
from jepa.models.predictor import VisionTransformerPredictor, vit_predictor
from jepa.models.vision_transformer import VisionTransformer

__all__ = [
    "build_encoder_from_spec",
    "build_models_from_spec",
    "build_predictor_from_spec",
    "encoder_kwargs",
    "predictor_kwargs",
]


def _encoder(spec: EncoderSpec | ModelSpec) -> EncoderSpec:
    return spec.encoder if isinstance(spec, ModelSpec) else spec


# The predictor's keywords it takes from its encoder: the token grid, the width and the switches both models have.
_SHARED = ("img_size", "patch_size", "num_frames", "tubelet_size", "embed_dim", "uniform_power", "use_rope",
           "use_silu", "wide_silu", "use_sdpa", "use_activation_checkpointing", "img_temporal_dim_size",
           "modality_embedding", "rope_layout")  # fmt: skip


def encoder_kwargs(spec: EncoderSpec | ModelSpec, norm_layer: NormLayer | None = None) -> dict[str, Any]:
    """The :class:`VisionTransformer` keywords of ``spec``: its fields are the constructor's keywords, but
    ``model_name`` (a label) and ``norm_eps`` (``LayerNorm(eps=norm_eps)``, or ``norm_layer`` when given)."""
    e = _encoder(spec)
    if e.num_heads is None:
        raise ValueError("the encoder spec leaves num_heads open (to be read from a checkpoint); it cannot be built")
    kwargs = {f.name: getattr(e, f.name) for f in fields(e) if f.name not in ("model_name", "norm_eps")}
    kwargs["norm_layer"] = norm_layer or partial(nn.LayerNorm, eps=e.norm_eps)
    for key in ("out_layers", "hierarchical_layers"):
        if kwargs[key] is not None:
            kwargs[key] = list(kwargs[key])
    return kwargs


def predictor_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """The :func:`vit_predictor` keywords of ``spec.predictor`` (its fields are the constructor's keywords) over
    ``spec.encoder``; the factory adds qkv bias and LayerNorm eps 1e-6, as the official one does."""
    if spec.predictor is None:
        raise ValueError("the model spec has no predictor")
    shared = {k: getattr(spec.encoder, k) for k in _SHARED}
    return {**shared, **{f.name: getattr(spec.predictor, f.name) for f in fields(spec.predictor)}}


def build_encoder_from_spec(spec: EncoderSpec | ModelSpec, *, norm_layer: NormLayer | None = None) -> VisionTransformer:
    """The encoder ``spec`` describes (a :class:`ModelSpec`'s encoder), randomly initialised; ``norm_layer``, if
    given, replaces ``LayerNorm(eps=spec.norm_eps)``."""
    return VisionTransformer(**encoder_kwargs(spec, norm_layer))


def build_predictor_from_spec(spec: ModelSpec) -> VisionTransformerPredictor:
    """The predictor ``spec.predictor`` describes, over ``spec.encoder``, randomly initialised."""
    return vit_predictor(**predictor_kwargs(spec))


def build_models_from_spec(spec: ModelSpec) -> tuple[VisionTransformer, VisionTransformerPredictor]:
    """Encoder then predictor (built in this order, so a fixed seed gives the same weights as before)."""
    encoder = build_encoder_from_spec(spec)
    return encoder, build_predictor_from_spec(spec)
