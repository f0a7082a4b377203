"""Frozen video classification: attentive probes on clips x views of a frozen encoder (K400, SSv2, ...)."""

from evals.video_classification_frozen.eval import main

__all__ = ["main"]
