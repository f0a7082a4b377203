"""Frozen image classification: attentive probes on a frozen encoder's tokens (IN1K, Places205, iNat21, ...)."""

from evals.image_classification_frozen.eval import main

__all__ = ["main"]
