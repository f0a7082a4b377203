"""Multi-level probes (``wrapper.out_layers``, V-JEPA 2's ``vit_encoder_multiclip_multilevel``): which tokens the
probe reads, parity with the official wrapper, an end-to-end eval, and outputs that record the blocks probed."""

import importlib.util
import json
import logging
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from evals.encoder import EncoderTokens
from jepa.checkpoint import read_checkpoint
from jepa.config import ConfigError, from_dict
from jepa.config.evals import EvalConfig
from jepa.models import VisionTransformer
from tests import test_evals
from tests.conftest import make_encoder
from tests.test_evals import video_eval_config, write_yaml

OFFICIAL_CODE = Path(__file__).resolve().parents[2] / "scratch" / "vjepa2"
OFFICIAL_WRAPPER = OFFICIAL_CODE / "evals" / "video_classification_frozen" / "modelcustom"
OFFICIAL_WRAPPER = OFFICIAL_WRAPPER / "vit_encoder_multiclip_multilevel.py"
# Fixtures shared with tests/test_evals.py: tiny tests on one thread (autouse), the moving-digit clips.
_one_thread = test_evals._one_thread
digit_csvs = test_evals.digit_csvs


def deep_encoder(num_frames: int, **kwargs) -> VisionTransformer:
    return make_encoder(num_frames, depth=4, **kwargs).eval()


@pytest.mark.parametrize("num_frames", [1, 4], ids=["2d", "3d"])
def test_multilevel_tokens_are_the_normalised_block_outputs_concatenated_along_the_tokens(num_frames):
    enc = deep_encoder(num_frames)
    layers = [0, 2, 3]
    x = torch.randn(2, 3, 32, 32) if num_frames == 1 else torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        got = EncoderTokens(enc, image_frames=num_frames, out_layers=layers).encode(x)
        levels = enc.forward_intermediates(x, layers, norm=True, intermediates_only=True)
        # each level is a block's output through the encoder's final norm
        hidden = enc.forward_intermediates(x, layers, intermediates_only=True)
    torch.testing.assert_close(levels[1], enc.norm(hidden[1]), atol=0, rtol=0)
    n = enc.forward_features(x).shape[1]
    assert got.shape == (2, len(layers) * n, enc.embed_dim)  # L * N tokens, each of the encoder's width
    torch.testing.assert_close(got, torch.cat(levels, dim=1), atol=0, rtol=0)
    assert not torch.allclose(got[:, :n], got[:, -n:], atol=1e-3)  # the levels differ
    # the last level alone is what the one-level probe reads
    only_last = EncoderTokens(enc, image_frames=num_frames, out_layers=[3]).encode(x)
    torch.testing.assert_close(only_last, EncoderTokens(enc, image_frames=num_frames).encode(x), atol=0, rtol=0)


def test_levels_come_in_block_order_whatever_the_order_given():
    enc = deep_encoder(4)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        a = EncoderTokens(enc, out_layers=[3, 0]).encode(x)
        b = EncoderTokens(enc, out_layers=[0, 3]).encode(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_segments_concatenate_per_clip_then_per_level():
    """[S, V, B, ...] clips -> [V, B, S * L * N, D]: clip-major, then level-major (the official layout)."""
    enc = deep_encoder(4)
    layers = [1, 3]
    x = torch.randn(2, 3, 2, 3, 4, 32, 32)  # 2 segments x 3 views x batch 2
    tokens = EncoderTokens(enc, attend_across_segments=True, out_layers=layers)
    with torch.no_grad():
        out = tokens(x)
        levels = [enc.forward_intermediates(x[s, 1], layers, norm=True, intermediates_only=True) for s in range(2)]
        want = torch.cat([torch.cat(per_segment, dim=1) for per_segment in levels], dim=1)
    n = enc.forward_features(x[0, 0]).shape[1]
    assert out.shape == (3, 2, 2 * len(layers) * n, 48)
    torch.testing.assert_close(out[1], want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layers", [[4], [-1], []], ids=["past-the-end", "negative", "empty"])
def test_out_layers_outside_the_encoder_are_refused(layers):
    with pytest.raises(ConfigError, match=r"wrapper.out_layers .*\[0, 4\)"):
        EncoderTokens(deep_encoder(4), out_layers=layers)


def _official_wrapper_module():
    """The official ``vit_encoder_multiclip_multilevel`` module, imported from the scratch copy without leaving
    its side effects behind (it configures the root logger; its ``src`` package goes on ``sys.path``)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    sys.path.append(str(OFFICIAL_CODE))
    try:
        import src.models.vision_transformer as official_vit

        spec = importlib.util.spec_from_file_location("official_multilevel", OFFICIAL_WRAPPER)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(OFFICIAL_CODE))
        root.setLevel(level)
        root.handlers[:] = handlers
    return official_vit, module


@pytest.mark.skipif(not OFFICIAL_WRAPPER.is_file(), reason=f"no official code at {OFFICIAL_CODE}")
@pytest.mark.filterwarnings("ignore::FutureWarning")  # the official code's deprecated timm / SDPA imports
@pytest.mark.parametrize("use_rope", [True, False], ids=["rope", "sincos"])
def test_multilevel_tokens_equal_the_official_wrapper(use_rope):
    pytest.importorskip("einops")  # the official patch embedding needs it
    official_vit, official = _official_wrapper_module()
    kw = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, embed_dim=64, depth=4, num_heads=4,
              uniform_power=True, use_rope=use_rope, norm_layer=partial(nn.LayerNorm, eps=1e-6))  # fmt: skip
    layers = [1, 3, 2]
    ours = VisionTransformer(**kw).eval()
    theirs = official_vit.VisionTransformer(**kw, out_layers=layers).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    wrapper = official.ClipAggregation(theirs, tubelet_size=2, max_frames=128, use_pos_embed=False, out_layers=layers)
    x = torch.randn(2, 3, 2, 3, 4, 32, 32)  # 2 segments x 3 views x batch 2
    with torch.no_grad():
        want = torch.stack(wrapper([[x[s, v] for v in range(3)] for s in range(2)]))  # per view [B, S*L*N, D]
        got = EncoderTokens(ours, attend_across_segments=True, out_layers=layers)(x)
    assert got.shape == want.shape == (3, 2, 2 * 3 * 32, 64)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# -- end to end ----------------------------------------------------------------------------------------------------
def multilevel_config(tmp_path: Path, root: Path, out_layers: list[int] | None) -> dict:
    cfg = video_eval_config(tmp_path, root)
    cfg["wrapper"] = {"out_layers": out_layers}
    return cfg


def test_multilevel_eval_end_to_end_records_its_blocks_and_refuses_other_blocks(tmp_path, digit_csvs, monkeypatch):
    from evals import probing
    from evals.main import main

    widths = []
    real = probing.ProbeTrainer.__init__

    def spy(self, *args, **kwargs):
        widths.append(kwargs["embed_dim"])
        real(self, *args, **kwargs)

    monkeypatch.setattr(probing.ProbeTrainer, "__init__", spy)
    path = write_yaml(tmp_path, multilevel_config(tmp_path, digit_csvs, [0, 1]))
    assert main(["--fname", str(path), "--devices", "cpu"]) == 0
    folder = tmp_path / "out" / "video"
    summary = json.loads((folder / "results.json").read_text())
    assert summary["out_layers"] == [0, 1] and summary["config"]["wrapper"]["out_layers"] == [0, 1]
    assert summary["val_samples"] == 4
    ckpt = read_checkpoint(folder / "jepa-latest.pth.tar")
    assert ckpt["out_layers"] == [0, 1]
    assert widths == [48]  # the probe's width is the encoder's: the levels add tokens, not channels
    assert ckpt["classifier"]["pooler.query_tokens"].shape == (1, 1, 48)
    # resuming (or overwriting) with other blocks is refused, naming both
    other = write_yaml(tmp_path, multilevel_config(tmp_path, digit_csvs, [1]), "other.yaml")
    for argv in (["--fname", str(other), "--devices", "cpu"], ["--fname", str(other), "--devices", "cpu", "--resume"]):
        with pytest.raises(ConfigError, match=r"out_layers=\[0, 1\].*out_layers=\[1\]"):
            main(argv)
    last_only = write_yaml(tmp_path, multilevel_config(tmp_path, digit_csvs, None), "last.yaml")
    with pytest.raises(ConfigError, match=r"out_layers=\[0, 1\].*out_layers=None"):
        main(["--fname", str(last_only), "--devices", "cpu", "--resume"])


def test_out_layers_beyond_the_named_encoder_depth_are_a_config_error():
    cfg = video_eval_config(Path("/tmp"), Path("/tmp"))
    cfg["wrapper"] = {"out_layers": [1, 2]}  # the tiny encoder has depth 2
    with pytest.raises(ConfigError, match=r"wrapper.out_layers: got \[1, 2\], expected block indices < depth 2"):
        from_dict(EvalConfig, cfg)
