"""timm conventions: ``jepa.create_model`` for every release and size, ``pretrained_cfg`` metadata on each release
from which the preprocessing is derived (and which timm's own data helpers read), and the timm feature API."""

import dataclasses

import numpy as np
import pytest
import timm.data
import torch
from conftest import EMBED_DIM, NUM_HEADS, make_input, perturb_
from PIL import Image

import jepa
import jepa.hub
from jepa.config.spec import VIT_SIZES
from jepa.preprocess import Preprocess

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# name: (input_size, num_frames, tubelet_size, patch_size, interpolation), from the papers' evaluation setups.
EXPECTED_CFG = {
    "ijepa_vith14_in1k": ((3, 224, 224), 1, None, 14, "bicubic"),
    "ijepa_vith14_in22k": ((3, 224, 224), 1, None, 14, "bicubic"),
    "ijepa_vith16_448_in1k": ((3, 448, 448), 1, None, 16, "bicubic"),
    "ijepa_vitg16_in22k": ((3, 224, 224), 1, None, 16, "bicubic"),
    "vjepa_vitl16": ((3, 224, 224), 16, 2, 16, "bilinear"),
    "vjepa_vith16": ((3, 224, 224), 16, 2, 16, "bilinear"),
    "vjepa_vith16_384": ((3, 384, 384), 16, 2, 16, "bilinear"),
    "vjepa2_vitl": ((3, 256, 256), 64, 2, 16, "bilinear"),
    "vjepa2_vith": ((3, 256, 256), 64, 2, 16, "bilinear"),
    "vjepa2_vitg": ((3, 256, 256), 64, 2, 16, "bilinear"),
    "vjepa2_vitg_384": ((3, 384, 384), 64, 2, 16, "bilinear"),
}


def test_every_release_has_pretrained_cfg():
    assert sorted(EXPECTED_CFG) == sorted(jepa.hub.RELEASES)
    for name, (size, frames, tubelet, patch, interp) in EXPECTED_CFG.items():
        cfg = jepa.hub.get_release(name).pretrained_cfg
        assert (cfg.input_size, cfg.num_frames, cfg.tubelet_size, cfg.patch_size, cfg.interpolation) == (
            size, frames, tubelet, patch, interp
        ), name  # fmt: skip
        assert (cfg.mean, cfg.std, cfg.crop_pct, cfg.crop_mode) == (MEAN, STD, 0.875, "center")
        assert cfg.url == jepa.hub.RELEASES[name].url


@pytest.mark.parametrize("name", [*jepa.hub.RELEASES, *VIT_SIZES])
def test_create_model_builds_every_release_and_size(name):
    with torch.device("meta"):
        model = jepa.create_model(name)
        if name in jepa.hub.RELEASES:
            reference = jepa.hub.load(name, pretrained=False)  # the same one builder through Release.spec
        else:
            reference = jepa.models.build_vit(name)
    assert str(model) == str(reference)
    assert model.training
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == (
        [] if model.use_rope else ["pos_embed"]
    )  # fmt: skip  (trainable, as built: only the fixed sine-cosine table is not)
    assert model.pretrained_cfg["input_size"] == (3, model.img_height, model.img_width)
    assert model.pretrained_cfg["num_frames"] == model.num_frames
    url = jepa.hub.RELEASES[name].url if name in jepa.hub.RELEASES else None
    assert model.pretrained_cfg["url"] == url


def test_create_model_passes_architecture_overrides_and_refuses_misspelt_ones():
    with torch.device("meta"):
        model = jepa.create_model("vjepa2_vitl", num_frames=16, img_size=384, drop_path_rate=0.1)
        size = jepa.create_model("vit_base", num_frames=8, img_size=64)
    assert (model.num_frames, model.img_height) == (16, 384)
    assert model.blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    assert model.pretrained_cfg["input_size"] == (3, 384, 384) and model.pretrained_cfg["num_frames"] == 16
    assert size.is_video and size.pretrained_cfg["interpolation"] == "bilinear" and size.embed_dim == 768
    with pytest.raises(TypeError, match="num_frame"):
        jepa.create_model("vjepa2_vitl", num_frame=16)
    with pytest.raises(TypeError, match="fixes embed_dim"):
        jepa.create_model("vit_large", embed_dim=64)
    with pytest.raises(ValueError, match="vit_large is a size without released weights"):
        jepa.create_model("vit_large", pretrained=True)
    with pytest.raises(ValueError, match="unknown model 'vjepa3'.*releases: ijepa_vith14_in1k"):
        jepa.create_model("vjepa3")


def test_create_model_loads_a_checkpoint_trainable(tmp_path, monkeypatch):
    r = jepa.hub.RELEASES["vjepa_vitl16"]
    size = dict(embed_dim=EMBED_DIM, depth=2, num_heads=NUM_HEADS)
    tiny = dataclasses.replace(r, model_name=None, encoder_extra=size, img_size=32, num_frames=4)
    monkeypatch.setitem(jepa.hub.RELEASES, "vjepa_vitl16", tiny)
    source = perturb_(jepa.create_model("vjepa_vitl16"))
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in source.state_dict().items()}
    path = jepa.save_checkpoint({"encoder": source.state_dict(), "target_encoder": ema}, tmp_path / "c.pth.tar")
    model = jepa.create_model("vjepa_vitl16", checkpoint_path=path)
    context = jepa.create_model("vjepa_vitl16", checkpoint_path=path, which="encoder")
    for got, want in ((model, ema), (context, source.state_dict())):
        assert all(torch.equal(got.state_dict()[k], want[k]) for k in want)
        assert got.training and [n for n, p in got.named_parameters() if not p.requires_grad] == ["pos_embed"]
    x = make_input(4)
    loss = model(x).square().mean()
    loss.backward()  # fine-tunable as it comes
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    # A bare size with a checkpoint: the weights of that size, built through EncoderSpec.of.
    small = jepa.create_model("vit_tiny", img_size=32, patch_size=8)
    path = jepa.save_checkpoint({"target_encoder": perturb_(small).state_dict()}, tmp_path / "tiny.pth.tar")
    again = jepa.create_model("vit_tiny", checkpoint_path=path, img_size=32, patch_size=8)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in small.state_dict().items())
    assert again.pretrained_cfg["url"] is None and again.training


def test_preprocessing_is_derived_from_pretrained_cfg():
    g = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (4, 300, 400, 3), dtype=torch.uint8, generator=g)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    for name, crop in (("vjepa2_vitl", 256), ("vjepa_vith16_384", 384), ("ijepa_vith14_in1k", 224)):
        pre = jepa.hub.get_release(name).preprocess()
        assert (pre.crop_size, pre.resize_ratio) == (crop, 256 / 224)
        reference = Preprocess(crop_size=crop, resize_ratio=256 / 224)
        x = clip if jepa.hub.RELEASES[name].num_frames > 1 else image
        torch.testing.assert_close(pre(x), reference(x), atol=0, rtol=0)


def test_timm_data_helpers_read_pretrained_cfg():
    with torch.device("meta"):
        model = jepa.create_model("ijepa_vith16_448_in1k")
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg == dict(input_size=(3, 448, 448), interpolation="bicubic", mean=MEAN, std=STD, crop_pct=0.875,
                       crop_mode="center")  # fmt: skip
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (500, 600, 3), dtype=np.uint8))
    timm_view = timm.data.create_transform(**cfg)(image)
    ours = jepa.hub.get_release("ijepa_vith16_448_in1k").preprocess()(image)
    # timm resizes with PIL, ours with torchvision: the same view up to one 8-bit level of rounding.
    torch.testing.assert_close(timm_view, ours, atol=1.01 / 255 / min(STD), rtol=0)


# timm's feature API (timm.models.VisionTransformer): forward_intermediates returns (final tokens, intermediates), or
# the intermediates alone with intermediates_only=True, and forward_head pools.
def test_forward_intermediates_follows_timm_return_convention():
    model = jepa.create_model("vit_tiny", img_size=32, patch_size=8).eval()
    x = make_input(1)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=2)
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(final, model.forward_features(x))
    assert len(inter) == len(only) == 2


def test_forward_head_pools_tokens_as_timm():
    model = jepa.create_model("vit_tiny", img_size=32, patch_size=8).eval()
    with torch.no_grad():
        tokens = model.forward_features(make_input(1))
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens.mean(dim=1))


def test_forward_intermediates_defaults_and_feature_maps_follow_timm():
    model = jepa.create_model("vit_tiny", img_size=32, patch_size=8).eval()
    x = make_input(1)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)  # every block, raw residual stream (timm's norm=False)
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
        maps = model.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)
        early_final, early = model.forward_intermediates(x, indices=[0], stop_early=True)
    assert len(inter) == len(model.blocks)
    torch.testing.assert_close(model.norm(inter[-1]), final)
    torch.testing.assert_close(normed[-1], final)
    torch.testing.assert_close(early_final, model.norm(early[0]))
    (grid_map,) = maps
    assert grid_map.shape == (x.shape[0], model.embed_dim, 4, 4)
    torch.testing.assert_close(grid_map.flatten(2).transpose(1, 2), inter[-1])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")
