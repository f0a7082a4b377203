"""Models: the ViT encoder (images and video), the JEPA predictor and the attentive probe."""

from jepa.models.attentive_pooler import AttentiveClassifier, AttentivePooler
from jepa.models.predictor import VisionTransformerPredictor, vit_predictor
from jepa.models.vision_transformer import (
    VIT_EMBED_DIMS,
    VIT_SIZES,
    VisionTransformer,
    build_encoder,
    build_vit,
    vit_base,
    vit_giant,
    vit_giant_xformers,
    vit_gigantic,
    vit_gigantic_xformers,
    vit_huge,
    vit_large,
    vit_small,
    vit_tiny,
)

__all__ = [
    "AttentiveClassifier",
    "AttentivePooler",
    "VIT_EMBED_DIMS",
    "VIT_SIZES",
    "VisionTransformer",
    "VisionTransformerPredictor",
    "build_encoder",
    "build_vit",
    "vit_base",
    "vit_giant",
    "vit_giant_xformers",
    "vit_gigantic",
    "vit_gigantic_xformers",
    "vit_huge",
    "vit_large",
    "vit_predictor",
    "vit_small",
    "vit_tiny",
]
from jepa.models.builder import build_encoder_from_spec, build_models_from_spec, build_predictor_from_spec  # noqa: F401 (re-exported)
