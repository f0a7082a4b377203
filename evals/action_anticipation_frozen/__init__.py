"""Frozen action anticipation (EPIC-KITCHENS-100): attentive probes with verb, noun and action heads on a frozen
encoder's tokens of the observed clip and its frozen predictor's tokens of the frames after it."""

from evals.action_anticipation_frozen.eval import main

__all__ = ["main"]
