"""JEPA toolkit: I-JEPA and V-JEPA pretraining, frozen evaluation and encoder reuse in one library.

Importing the package has no side effects (no logging set-up, no seeds, no environment changes).
"""

from jepa.checkpoint import load_classifier, load_encoder, load_predictor, read_checkpoint, save_checkpoint

__version__ = "0.1.0"
__all__ = ["load_classifier", "load_encoder", "load_predictor", "read_checkpoint", "save_checkpoint"]
