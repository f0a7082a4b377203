"""Saving and loading checkpoints in the official layout (jepa.checkpoint, re-exported by the jepa package)."""

import logging
import os
import pickle
import stat
from functools import partial

import pytest
import torch
from conftest import EMBED_DIM, FRAMES, NUM_HEADS, make_classifier, make_encoder, make_input, make_predictor, perturb_
from torch import nn

import jepa
from jepa.checkpoint import CheckpointError, read_checkpoint, strip_prefixes
from jepa.models import AttentiveClassifier, VisionTransformer, VisionTransformerPredictor, vit_tiny
from jepa.models.pos_embed import interpolate_pos_embed

LN6 = partial(nn.LayerNorm, eps=1e-6)  # what load_predictor builds with (the official vit_predictor)


def video_kwargs(num_frames: int) -> dict:
    return {"num_frames": num_frames} if num_frames > 1 else {}


def freeze(model: nn.Module) -> nn.Module:
    """The reference model in the state the loaders return (eval, no grads).

    Frozen and trainable copies of a model can differ in the last bit (PyTorch picks other kernels when no parameter
    requires grad), so exact comparisons are made between frozen models.
    """
    return model.eval().requires_grad_(False)


def frozen(model: nn.Module) -> bool:
    return not model.training and all(not p.requires_grad for p in model.parameters())


def predictor_batch(num_frames: int):
    n = 16 * (2 if num_frames > 1 else 1)
    perm = torch.stack([torch.randperm(n) for _ in range(2)])
    return torch.randn(2, 6, EMBED_DIM), perm[:, :6], [perm[:, 6:9], perm[:, 9:12]]


@pytest.fixture
def training_run(tmp_path, num_frames):
    """A training checkpoint written the way the official trainer does (DDP prefixes, extra entries)."""
    encoder = perturb_(make_encoder(num_frames))
    target = perturb_(make_encoder(num_frames))
    predictor = perturb_(make_predictor(num_frames, norm_layer=LN6, num_mask_tokens=2))
    ckpt = {
        "encoder": {"module.backbone." + k: v for k, v in encoder.state_dict().items()},
        "target_encoder": {"module." + k: v for k, v in target.state_dict().items()},
        "predictor": {"module." + k: v for k, v in predictor.state_dict().items()},
        "opt": {"state": {}, "param_groups": []},
        "scaler": None,
        "epoch": 3,
        "loss": 0.25,
        "batch_size": 8,
        "world_size": 1,
        "lr": 1e-3,
    }
    path = jepa.save_checkpoint(ckpt, tmp_path / "latest.pth.tar")
    return path, freeze(encoder), freeze(target), freeze(predictor)


# ================================================================================================================
# Round trips


@pytest.mark.parametrize("which", ["target_encoder", "encoder"])
def test_load_encoder_round_trip(training_run, num_frames, which):
    path, encoder, target, _ = training_run
    model = jepa.load_encoder(path, which=which, num_heads=NUM_HEADS, **video_kwargs(num_frames))
    assert isinstance(model, VisionTransformer)
    assert frozen(model)
    assert model.grid == encoder.grid and model.is_video == (num_frames > 1)
    want = encoder if which == "encoder" else target
    x = make_input(num_frames)
    with torch.no_grad():
        assert torch.equal(model(x), want(x))
    other = encoder if which == "target_encoder" else target
    with torch.no_grad():
        assert not torch.allclose(model(x), other(x))


def test_load_encoder_default_is_target_encoder(training_run, num_frames):
    path, _, target, _ = training_run
    model = jepa.load_encoder(path, num_heads=NUM_HEADS, **video_kwargs(num_frames))
    for k, v in target.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_load_encoder_from_dict_and_plain_state_dict(training_run, num_frames):
    path, _, target, _ = training_run
    loaded = read_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["batch_size"] == 8
    x = make_input(num_frames)
    with torch.no_grad():
        want = target(x)
        for source in (loaded, target.state_dict(), {"module." + k: v for k, v in target.state_dict().items()}):
            model = jepa.load_encoder(source, num_heads=NUM_HEADS, **video_kwargs(num_frames))
            assert torch.equal(model(x), want)


def test_load_encoder_rope(tmp_path, num_frames):
    enc = freeze(perturb_(make_encoder(num_frames, use_rope=True)))
    path = jepa.save_checkpoint({"target_encoder": enc.state_dict()}, tmp_path / "rope.pt")
    model = jepa.load_encoder(path, num_heads=NUM_HEADS, img_size=32, **video_kwargs(num_frames))
    assert model.use_rope and model.pos_embed is None
    x = make_input(num_frames)
    with torch.no_grad():
        assert torch.equal(model(x), enc(x))


def test_load_encoder_rejects_bad_which(training_run):
    path = training_run[0]
    with pytest.raises(ValueError):
        jepa.load_encoder(path, which="predictor", num_heads=NUM_HEADS)


def test_load_predictor_round_trip(training_run, num_frames):
    path, _, _, predictor = training_run
    model = jepa.load_predictor(path, num_heads=NUM_HEADS, patch_size=8, **video_kwargs(num_frames))
    assert isinstance(model, VisionTransformerPredictor)
    assert frozen(model)
    assert model.num_mask_tokens == 2 and model.grid == predictor.grid
    ctxt, mc, mts = predictor_batch(num_frames)
    with torch.no_grad():
        for i in range(2):
            assert torch.equal(model(ctxt, mc, mts, mask_index=i), predictor(ctxt, mc, mts, mask_index=i))


def test_load_predictor_rope(tmp_path, num_frames):
    pred = freeze(perturb_(make_predictor(num_frames, use_rope=True, norm_layer=LN6)))
    path = jepa.save_checkpoint({"predictor": pred.state_dict()}, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match="img_size"):
        jepa.load_predictor(path, num_heads=NUM_HEADS)
    model = jepa.load_predictor(path, num_heads=NUM_HEADS, img_size=32, patch_size=8, **video_kwargs(num_frames))
    assert model.use_rope
    ctxt, mc, mts = predictor_batch(num_frames)
    with torch.no_grad():
        assert torch.equal(model(ctxt, mc, mts), pred(ctxt, mc, mts))


def test_load_predictor_needs_num_heads(training_run):
    with pytest.raises(CheckpointError, match="num_heads"):
        jepa.load_predictor(training_run[0], patch_size=8)


def test_load_ijepa_predictor_with_mask_token(tmp_path):
    pred = freeze(perturb_(make_predictor(1, norm_layer=LN6)))
    sd = pred.state_dict()
    sd["mask_token"] = sd.pop("mask_tokens.0")
    path = jepa.save_checkpoint({"predictor": {"module." + k: v for k, v in sd.items()}}, tmp_path / "ijepa.pth.tar")
    model = jepa.load_predictor(path, num_heads=NUM_HEADS, patch_size=8)
    assert model.num_mask_tokens == 1
    assert torch.equal(model.mask_tokens[0], sd["mask_token"])
    ctxt, mc, mts = predictor_batch(1)
    with torch.no_grad():
        assert torch.equal(model(ctxt, mc, mts), pred(ctxt, mc, mts))
    # I-JEPA's num_patches form builds the same grid
    model2 = jepa.load_predictor(path, num_heads=NUM_HEADS, patch_size=8, num_patches=16)
    assert model2.grid == (1, 4, 4)


def test_load_classifier_single_and_list():
    clfs = [freeze(perturb_(make_classifier(depth=2))) for _ in range(2)]
    x = torch.randn(3, 10, EMBED_DIM)
    model = jepa.load_classifier(
        {"classifier": {"module." + k: v for k, v in clfs[0].state_dict().items()}}, num_heads=NUM_HEADS
    )
    assert isinstance(model, AttentiveClassifier) and frozen(model)
    assert len(model.pooler.blocks) == 1 and model.linear.out_features == 5
    with torch.no_grad():
        assert torch.equal(model(x), clfs[0](x))
    both = {"classifiers": [{"module." + k: v for k, v in c.state_dict().items()} for c in clfs]}
    model1 = jepa.load_classifier(both, index=1, num_heads=NUM_HEADS)
    with torch.no_grad():
        assert torch.equal(model1(x), clfs[1](x))
        assert not torch.allclose(model1(x), clfs[0](x))
    with pytest.raises(CheckpointError):
        jepa.load_classifier(both, index=2, num_heads=NUM_HEADS)


def test_load_classifier_from_file(tmp_path):
    clf = freeze(perturb_(make_classifier()))
    path = jepa.save_checkpoint({"classifiers": [clf.state_dict()], "epoch": 1}, tmp_path / "probe.pt")
    model = jepa.load_classifier(path, num_heads=NUM_HEADS)
    x = torch.randn(2, 7, EMBED_DIM)
    with torch.no_grad():
        assert torch.equal(model(x), clf(x))


def test_load_vjepa1_classifier_ignores_proj():
    clf = freeze(perturb_(make_classifier(depth=1)))
    sd = clf.state_dict()
    sd["pooler.cross_attention_block.xattn.proj.weight"] = torch.randn(EMBED_DIM, EMBED_DIM)
    sd["pooler.cross_attention_block.xattn.proj.bias"] = torch.randn(EMBED_DIM)
    model = jepa.load_classifier({"classifier": sd}, num_heads=NUM_HEADS)
    assert model.pooler.blocks_on_queries  # V-JEPA 1 layout
    x = torch.randn(2, 7, EMBED_DIM)
    with torch.no_grad():
        assert torch.equal(model(x), clf(x))


def test_load_classifier_default_heads_is_16():
    clf = make_classifier(embed_dim=64, num_heads=4)
    model = jepa.load_classifier(clf.state_dict())
    assert model.pooler.cross_attention_block.xattn.num_heads == 16
    with pytest.raises(CheckpointError, match="num_heads"):
        jepa.load_classifier(make_classifier(embed_dim=40, num_heads=4).state_dict())  # 40 is not 16 heads


# ================================================================================================================
# Released sizes


def test_released_size_is_recognised():
    # vit_tiny's width/depth: the released-size path builds it with the factory's LayerNorm eps 1e-6
    torch.manual_seed(0)
    ref = freeze(perturb_(vit_tiny(img_size=32, patch_size=8), 0.02))
    model = jepa.load_encoder(ref.state_dict())
    assert model.num_heads == 3 and model.norm.eps == 1e-6
    x = make_input(1)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_released_size_with_explicit_num_heads_builds_same_model():
    """Passing the (correct) number of heads for a released size must not change the model.

    Exposes a library bug: with ``num_heads`` given, load_encoder drops the released size and builds a plain
    VisionTransformer, whose LayerNorms have eps 1e-5 instead of the factories' 1e-6, so outputs differ.
    """
    torch.manual_seed(0)
    ref = freeze(perturb_(vit_tiny(img_size=32, patch_size=8), 0.02))
    model = jepa.load_encoder(ref.state_dict(), num_heads=3)
    assert model.num_heads == 3
    assert model.norm.eps == ref.norm.eps
    x = make_input(1)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


# ================================================================================================================
# Strict loading


def _encoder_file(tmp_path, mutate, num_frames=1):
    sd = make_encoder(num_frames).state_dict()
    mutate(sd)
    return jepa.save_checkpoint({"target_encoder": {"module." + k: v for k, v in sd.items()}}, tmp_path / "e.pt")


def test_strict_missing_key(tmp_path):
    path = _encoder_file(tmp_path, lambda sd: (sd.pop("norm.weight"), sd.pop("blocks.1.mlp.fc2.bias")))
    with pytest.raises(CheckpointError) as err:
        jepa.load_encoder(path, num_heads=NUM_HEADS)
    msg = str(err.value)
    assert "norm.weight" in msg and "blocks.1.mlp.fc2.bias" in msg and "missing" in msg


def test_strict_unexpected_key(tmp_path):
    extra = {"head.weight": torch.zeros(3), "blocks.0.extra": torch.ones(1)}
    path = _encoder_file(tmp_path, lambda sd: sd.update(extra))
    with pytest.raises(CheckpointError) as err:
        jepa.load_encoder(path, num_heads=NUM_HEADS)
    msg = str(err.value)
    assert "head.weight" in msg and "blocks.0.extra" in msg and "unexpected" in msg


def test_strict_shape_mismatch(tmp_path):
    def shrink(sd):
        sd["blocks.1.attn.proj.weight"] = sd["blocks.1.attn.proj.weight"][:, :10].clone()

    path = _encoder_file(tmp_path, shrink)
    with pytest.raises(CheckpointError) as err:
        jepa.load_encoder(path, num_heads=NUM_HEADS)
    assert "blocks.1.attn.proj.weight" in str(err.value)
    assert str(path) in str(err.value)


def test_strict_predictor_and_classifier_errors():
    sd = make_predictor(1, norm_layer=LN6).state_dict()
    sd["predictor_norm.weight"] = torch.ones(PRED := sd["predictor_norm.weight"].shape[0] + 1)
    with pytest.raises(CheckpointError, match="predictor_norm.weight"):
        jepa.load_predictor(sd, num_heads=NUM_HEADS, patch_size=8)
    csd = make_classifier().state_dict()
    csd["linear.extra"] = torch.zeros(PRED)
    with pytest.raises(CheckpointError, match="linear.extra"):
        jepa.load_classifier(csd, num_heads=NUM_HEADS)


def test_not_encoder_weights():
    with pytest.raises(CheckpointError):
        jepa.load_encoder({"target_encoder": make_classifier().state_dict()}, num_heads=NUM_HEADS)
    with pytest.raises(CheckpointError):
        jepa.load_encoder({"something_else": {}}, num_heads=NUM_HEADS)


# ================================================================================================================
# Position tables of another resolution


@pytest.mark.parametrize("img_size,grid_hw", [(48, (6, 6)), ((48, 32), (6, 4))], ids=["48x48", "48x32"])
def test_pos_embed_is_resampled(tmp_path, caplog, num_frames, img_size, grid_hw):
    src = freeze(perturb_(make_encoder(num_frames)))
    path = jepa.save_checkpoint({"target_encoder": src.state_dict()}, tmp_path / "e.pt")
    with caplog.at_level(logging.INFO, logger="jepa"):
        model = jepa.load_encoder(path, num_heads=NUM_HEADS, img_size=img_size, **video_kwargs(num_frames))
    t = 2 if num_frames > 1 else 1
    assert model.grid == (t, *grid_hw)
    assert model.pos_embed.shape == (1, t * grid_hw[0] * grid_hw[1], EMBED_DIM)
    assert any("resampling" in r.getMessage() for r in caplog.records)
    want = interpolate_pos_embed(src.pos_embed.detach(), src.grid, model.grid, num_frames > 1)
    torch.testing.assert_close(model.pos_embed.detach(), want, atol=1e-6, rtol=0)
    # the other weights are untouched, and the resampled model equals the source one on the new input size
    assert torch.equal(model.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)
    x = make_input(num_frames, img_size=img_size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), atol=1e-5, rtol=1e-5)


def test_same_resolution_is_not_resampled(tmp_path, caplog):
    src = make_encoder(1)
    with caplog.at_level(logging.INFO, logger="jepa"):
        jepa.load_encoder(src.state_dict(), num_heads=NUM_HEADS)
    assert not any("resampling" in r.getMessage() for r in caplog.records)


# ================================================================================================================
# Grid inference errors


def test_non_released_width_needs_num_heads(training_run, num_frames):
    with pytest.raises(CheckpointError, match="num_heads"):
        jepa.load_encoder(training_run[0], **video_kwargs(num_frames))


def test_video_table_needs_num_frames(tmp_path):
    src = make_encoder(FRAMES)
    path = jepa.save_checkpoint({"target_encoder": src.state_dict()}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="num_frames"):
        jepa.load_encoder(path, num_heads=NUM_HEADS)
    # with the image size instead, the number of frames follows from the table
    model = jepa.load_encoder(path, num_heads=NUM_HEADS, img_size=32)
    assert model.num_frames == FRAMES and model.grid == (2, 4, 4)


def test_non_square_image_table_needs_img_size(tmp_path):
    src = make_encoder(1, img_size=(32, 48))
    with pytest.raises(CheckpointError, match="img_size"):
        jepa.load_encoder(src.state_dict(), num_heads=NUM_HEADS)
    model = jepa.load_encoder(src.state_dict(), num_heads=NUM_HEADS, img_size=(32, 48))
    assert model.grid == (1, 4, 6)


# ================================================================================================================
# Files


def test_save_checkpoint_is_atomic_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "latest.pth.tar"
    out = jepa.save_checkpoint({"epoch": 1, "w": torch.arange(3)}, path)
    assert out == path
    assert sorted(os.listdir(path.parent)) == ["latest.pth.tar"]
    jepa.save_checkpoint({"epoch": 2, "w": torch.arange(4)}, path)  # overwrite
    assert sorted(os.listdir(path.parent)) == ["latest.pth.tar"]
    loaded = read_checkpoint(path)
    assert loaded["epoch"] == 2 and torch.equal(loaded["w"], torch.arange(4))


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / "latest.pth.tar"
    jepa.save_checkpoint({"epoch": 1}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        jepa.save_checkpoint({"epoch": 2, "bad": lambda: None}, path)  # a lambda cannot be pickled
    assert sorted(os.listdir(tmp_path)) == ["latest.pth.tar"]
    assert read_checkpoint(path)["epoch"] == 1


def test_saved_file_permissions_follow_umask(tmp_path):
    """A checkpoint should get the permissions a plain ``torch.save(obj, path)`` gives it (0666 & ~umask).

    Exposes a library bug: save_checkpoint writes through ``tempfile.mkstemp``, which creates the file with mode
    0600, and then renames it, so every checkpoint is readable by its owner only.
    """
    plain = tmp_path / "plain.pt"
    torch.save({"a": 1}, plain)
    atomic = jepa.save_checkpoint({"a": 1}, tmp_path / "atomic.pt")
    assert stat.S_IMODE(os.stat(atomic).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.pth.tar"
    with pytest.raises(CheckpointError, match="nope.pth.tar"):
        jepa.load_encoder(path, num_heads=NUM_HEADS)
    with pytest.raises(CheckpointError, match="nope.pth.tar"):
        read_checkpoint(path)


@pytest.mark.parametrize("fraction", [0.5, 0.0], ids=["half", "empty"])
def test_truncated_file(tmp_path, fraction):
    path = jepa.save_checkpoint({"target_encoder": make_encoder(1).state_dict()}, tmp_path / "t.pt")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="t.pt"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError):
        jepa.load_encoder(path, num_heads=NUM_HEADS)


def test_strip_prefixes():
    sd = {"module.backbone.a": 1, "backbone.b": 2, "module.c.module.d": 3, "e": 4}
    assert strip_prefixes(sd) == {"a": 1, "b": 2, "c.module.d": 3, "e": 4}
    with pytest.raises(CheckpointError):
        strip_prefixes({"module.a": 1, "a": 2})
