"""Shared tiny-model builders and inputs for the JEPA test suite.

Everything here is sized to run on a 2-core CPU in well under a second per model: width 48 (encoder / probe) and
24 (predictor), depth 2, 3 heads, patch 8, 32 px images, 4-frame clips with tubelet 2.
"""

import os

import pytest
import torch

# Tests run in float32 (DESIGN.md): `dtype: auto` picks float32 on any CPU, in this process and in every run the tests
# start (subprocesses inherit it). tests/test_precision.py checks the detection itself.
os.environ.setdefault("JEPA_CPU_BF16", "0")

from jepa.models import AttentiveClassifier, VisionTransformer, VisionTransformerPredictor  # noqa: E402

EMBED_DIM = 48
PRED_DIM = 24
NUM_HEADS = 3
PATCH = 8
IMG = 32
FRAMES = 4
TUBELET = 2
DEPTH = 2

# (id, num_frames): the 2D (image) and 3D (video) variants every shape test runs over.
MODALITIES = [pytest.param(1, id="2d"), pytest.param(FRAMES, id="3d")]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=[1, FRAMES], ids=["2d", "3d"])
def num_frames(request) -> int:
    return request.param


def grid_of(num_frames: int, img_size=(IMG, IMG)) -> tuple[int, int, int]:
    """Token grid (T, H, W) of a tiny model for ``num_frames`` and ``img_size`` (h, w)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    t = num_frames // TUBELET if num_frames > 1 else 1
    return t, h // PATCH, w // PATCH


def num_tokens(num_frames: int, img_size=(IMG, IMG)) -> int:
    t, h, w = grid_of(num_frames, img_size)
    return t * h * w


def _grid_kwargs(num_frames: int) -> dict:
    return dict(img_size=IMG, patch_size=PATCH, num_frames=num_frames, tubelet_size=TUBELET, num_heads=NUM_HEADS)


def make_encoder(num_frames: int = 1, **kwargs) -> VisionTransformer:
    return VisionTransformer(**{**_grid_kwargs(num_frames), "embed_dim": EMBED_DIM, "depth": DEPTH, **kwargs})


def make_predictor(num_frames: int = 1, **kwargs) -> VisionTransformerPredictor:
    cfg = {**_grid_kwargs(num_frames), "embed_dim": EMBED_DIM, "predictor_embed_dim": PRED_DIM, "depth": DEPTH}
    return VisionTransformerPredictor(**{**cfg, **kwargs})


def make_classifier(**kwargs) -> AttentiveClassifier:
    cfg = dict(embed_dim=EMBED_DIM, num_heads=NUM_HEADS, depth=1, num_classes=5)
    cfg.update(kwargs)
    return AttentiveClassifier(**cfg)


def make_input(num_frames: int, batch: int = 2, img_size=(IMG, IMG)) -> torch.Tensor:
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    if num_frames > 1:
        return torch.randn(batch, 3, num_frames, h, w)
    return torch.randn(batch, 3, h, w)


def random_mask(batch: int, n_tokens: int, keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``[batch, keep]`` distinct token indices per row, in random (not sorted) order."""
    return torch.stack([torch.randperm(n_tokens, generator=generator)[:keep] for _ in range(batch)])


def perturb_(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Add noise to every trainable parameter, so that zero/one-initialised weights (biases, norms, mask tokens)
    matter in comparisons."""
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:  # leave the fixed sine-cosine tables alone
                p.add_(scale * torch.randn_like(p))
    return module


@pytest.fixture(scope="module")
def one_thread():
    """Run a module with one intra-op thread: on a small shared CPU, OpenMP threads waiting for a busy core make
    tiny models up to ~100x slower. Restores the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
