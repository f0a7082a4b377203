"""JEPA toolkit: I-JEPA and V-JEPA pretraining, frozen evaluation and encoder reuse in one library.

Importing the package has no side effects (no logging set-up, no seeds, no environment changes), and imports
nothing heavy: the names below are loaded on first use (PEP 562), so that ``import jepa.config`` or ``jepa.config.spec``
does not import torch.
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "create_model": "jepa.hub",
    "from_transformers": "jepa.convert",
    "to_transformers": "jepa.convert",
    "load_classifier": "jepa.checkpoint",
    "load_encoder": "jepa.checkpoint",
    "load_predictor": "jepa.checkpoint",
    "read_checkpoint": "jepa.checkpoint",
    "save_checkpoint": "jepa.checkpoint",
    "EncoderSpec": "jepa.config.spec",
    "ModelSpec": "jepa.config.spec",
    "PredictorSpec": "jepa.config.spec",
    "build_encoder_from_spec": "jepa.models.builder",
    "build_predictor_from_spec": "jepa.models.builder",
}
# Subpackages that ``import jepa`` made available as attributes when it imported them eagerly.
_SUBMODULES = ("checkpoint", "masks", "models", "sampling")

__all__ = [
    "EncoderSpec",
    "ModelSpec",
    "PredictorSpec",
    "build_encoder_from_spec",
    "build_predictor_from_spec",
    "create_model",
    "from_transformers",
    "load_classifier",
    "load_encoder",
    "load_predictor",
    "read_checkpoint",
    "save_checkpoint",
    "to_transformers",
]

if TYPE_CHECKING:
    from jepa.checkpoint import load_classifier, load_encoder, load_predictor, read_checkpoint, save_checkpoint
    from jepa.config.spec import EncoderSpec, ModelSpec, PredictorSpec
    from jepa.convert import from_transformers, to_transformers
    from jepa.hub import create_model
    from jepa.models.builder import build_encoder_from_spec, build_predictor_from_spec


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
