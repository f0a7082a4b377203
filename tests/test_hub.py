"""torch.hub entry points: every official release builds its architecture, loads official-layout checkpoints
strictly, and comes back frozen in eval mode."""

import dataclasses
import logging
import shutil
from pathlib import Path

import pytest
import torch

import jepa
import jepa.hub
from jepa.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
NAMES = list(jepa.hub.RELEASES)

# The official architectures, written out independently of the model code: (width, depth, heads, MLP hidden).
SIZES = {
    "vit_large": (1024, 24, 16, 4096),
    "vit_huge": (1280, 32, 16, 5120),
    "vit_giant": (1408, 40, 16, 6144),
    "vit_giant_xformers": (1408, 40, 22, 6144),
}
# name: (size, img, patch, frames, tubelet, RoPE, predictor depth, predictor heads, mask tokens), from the papers'
# configs and release notes.
EXPECTED = {
    "ijepa_vith14_in1k": ("vit_huge", 224, 14, 1, None, False, 12, 16, 1),
    "ijepa_vith14_in22k": ("vit_huge", 224, 14, 1, None, False, 12, 16, 1),
    "ijepa_vith16_448_in1k": ("vit_huge", 448, 16, 1, None, False, 12, 16, 1),
    "ijepa_vitg16_in22k": ("vit_giant", 224, 16, 1, None, False, 16, 16, 1),
    "vjepa_vitl16": ("vit_large", 224, 16, 16, 2, False, 12, 16, 2),
    "vjepa_vith16": ("vit_huge", 224, 16, 16, 2, False, 12, 16, 2),
    "vjepa_vith16_384": ("vit_huge", 384, 16, 16, 2, False, 12, 16, 2),
    "vjepa2_vitl": ("vit_large", 256, 16, 64, 2, True, 12, 12, 10),
    "vjepa2_vith": ("vit_huge", 256, 16, 64, 2, True, 12, 12, 10),
    "vjepa2_vitg": ("vit_giant_xformers", 256, 16, 64, 2, True, 12, 12, 10),
    "vjepa2_vitg_384": ("vit_giant_xformers", 384, 16, 64, 2, True, 12, 12, 10),
}
# The official V-JEPA 2 hub's names (facebookresearch/vjepa2 hubconf.py) and the release each one loads.
OFFICIAL = {"vjepa2_vit_large": "vjepa2_vitl", "vjepa2_vit_huge": "vjepa2_vith", "vjepa2_vit_giant": "vjepa2_vitg",
            "vjepa2_vit_giant_384": "vjepa2_vitg_384"}  # fmt: skip
# Published sizes, in millions of parameters (I-JEPA: ViT-H 632M, ViT-g 1011M; V-JEPA 2: 300M / 600M / 1B).
PUBLISHED_M = {"ijepa_vith14_in1k": 631, "ijepa_vitg16_in22k": 1011, "vjepa_vitl16": 305, "vjepa2_vitl": 304,
               "vjepa2_vith": 632, "vjepa2_vitg": 1012}  # fmt: skip


def block_params(d: int, hidden: int) -> int:
    # two LayerNorms, qkv, proj, fc1, fc2 (all with biases)
    return 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)


def encoder_params(name: str) -> int:
    size, img, patch, frames, tubelet, rope, *_ = EXPECTED[name]
    d, depth, _, hidden = SIZES[size]
    kernel = 3 * patch * patch * (tubelet or 1)
    tokens = (img // patch) ** 2 * (frames // tubelet if tubelet else 1)
    table = 0 if rope else tokens * d
    return kernel * d + d + table + depth * block_params(d, hidden) + 2 * d


def predictor_params(name: str) -> int:
    size, img, patch, frames, tubelet, rope, depth, _, n_tokens = EXPECTED[name]
    d, p = SIZES[size][0], 384
    tokens = (img // patch) ** 2 * (frames // tubelet if tubelet else 1)
    table = 0 if rope else tokens * p
    embed, proj = d * p + p, p * d + d
    return embed + n_tokens * p + table + depth * block_params(p, 4 * p) + 2 * p + proj


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_hubconf_lists_every_release_and_its_dependencies():
    # What torch.hub.list reports (it only takes GitHub repositories): the public callables of hubconf.
    import hubconf

    entries = [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_")]
    assert sorted(EXPECTED) == sorted(NAMES)
    extra = [*jepa.hub.VJEPA2_1_RELEASES, "vjepa2_ac_vit_giant", "vjepa2_preprocessor"]
    assert sorted(entries) == sorted([*EXPECTED, *OFFICIAL, *extra])

    for dep in hubconf.dependencies:
        __import__(dep)
    assert "einops" not in hubconf.dependencies  # nothing here imports it


@pytest.mark.parametrize("name", NAMES)
def test_entry_point_builds_the_release_architecture(name):
    import hubconf

    size, img, patch, frames, tubelet, rope, pred_depth, pred_heads, n_tokens = EXPECTED[name]
    d, depth, heads, hidden = SIZES[size]
    with torch.device("meta"):  # the real shapes without allocating ViT-g
        encoder, predictor = getattr(hubconf, name)(pretrained=False, with_predictor=True)
    assert count(encoder) == encoder_params(name)
    assert count(predictor) == predictor_params(name)
    if name in PUBLISHED_M:
        assert round(count(encoder) / 1e6) == PUBLISHED_M[name]
    assert (encoder.embed_dim, len(encoder.blocks), encoder.num_heads) == (d, depth, heads)
    assert encoder.blocks[0].mlp.fc1.out_features == hidden
    assert (encoder.img_height, encoder.img_width, encoder.patch_size, encoder.num_frames) == (img, img, patch, frames)
    kernel = (d, 3, tubelet, patch, patch) if tubelet else (d, 3, patch, patch)
    assert tuple(encoder.patch_embed.proj.weight.shape) == kernel
    assert encoder.use_rope == rope and (encoder.pos_embed is None) == rope
    assert encoder.uniform_power == name.startswith("vjepa_")  # V-JEPA's 3D tables
    assert encoder.norm.eps == 1e-6 and encoder.blocks[0].attn.qkv.bias is not None
    assert (predictor.predictor_embed_dim, len(predictor.predictor_blocks), predictor.num_heads) == (
        384,
        pred_depth,
        pred_heads,
    )
    assert predictor.num_mask_tokens == n_tokens and predictor.use_rope == rope
    for model in (encoder, predictor):
        assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_entry_point_overrides_the_grid():
    import hubconf

    with torch.device("meta"):
        encoder, predictor = hubconf.vjepa_vitl16(pretrained=False, with_predictor=True, num_frames=8, img_size=160)
    assert tuple(encoder.pos_embed.shape) == (1, 4 * 10 * 10, 1024)
    assert tuple(predictor.predictor_pos_embed.shape) == (1, 4 * 10 * 10, 384)
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_frame'"):
        with torch.device("meta"):
            hubconf.vjepa_vitl16(pretrained=False, num_frame=8)


def tiny(name: str) -> jepa.hub.Release:
    """The release shrunk to a test size; everything else (2D/3D, patch, tubelet, uniform power, RoPE, number of
    mask tokens) as released."""
    r = jepa.hub.RELEASES[name]
    return dataclasses.replace(
        r,
        model_name=None,
        encoder_extra=dict(embed_dim=48, depth=2, num_heads=3),
        img_size=2 * r.patch_size,
        num_frames=4 if r.num_frames > 1 else 1,
        predictor={**r.predictor, "predictor_embed_dim": 24, "depth": 1, "num_heads": 3},
    )


def official_checkpoint(encoder, predictor, path: Path) -> dict:
    """A training checkpoint in the official layout (DDP prefixes, both encoders, optimizer state) with distinct
    weights for the context and target encoders."""
    target = {k: v + 0.5 if v.is_floating_point() else v for k, v in encoder.state_dict().items()}
    ckpt = {
        "encoder": {f"module.{k}": v for k, v in encoder.state_dict().items()},
        "target_encoder": {f"module.{k}": v for k, v in target.items()},
        "predictor": {f"module.backbone.{k}": v for k, v in predictor.state_dict().items()},
        "opt": {"state": {}, "param_groups": []},
        "scaler": None,
        "epoch": 3,
        "loss": 0.25,
        "batch_size": 8,
        "world_size": 1,
        "lr": 1e-4,
    }
    jepa.save_checkpoint(ckpt, path)
    return ckpt


def perturbed(name: str):
    torch.manual_seed(0)
    encoder, predictor = jepa.hub.load(tiny(name), pretrained=False, with_predictor=True)
    with torch.no_grad():
        for p in [*encoder.parameters(), *predictor.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    return encoder, predictor


def assert_same_weights(model, state):
    got = model.state_dict()
    assert sorted(got) == sorted(state)
    for k, v in state.items():
        torch.testing.assert_close(got[k], v, atol=0, rtol=0, msg=k)


def strip(state: dict) -> dict:
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("which", ["target_encoder", "encoder"])
def test_entry_point_loads_an_official_layout_checkpoint(tmp_path, monkeypatch, name, which):
    monkeypatch.setitem(jepa.hub.RELEASES, name, tiny(name))
    encoder, predictor = perturbed(name)
    path = tmp_path / "release.pth.tar"
    ckpt = official_checkpoint(encoder, predictor, path)
    loaded, loaded_pred = torch.hub.load(
        str(REPO), name, source="local", checkpoint=str(path), which=which, with_predictor=True
    )
    assert_same_weights(loaded, strip(ckpt[which]))
    assert_same_weights(loaded_pred, strip(ckpt["predictor"]))
    assert str(loaded) == str(encoder) and str(loaded_pred) == str(predictor)  # same architecture as built
    for model in (loaded, loaded_pred):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(2, 3, *([4] if encoder.is_video else []), encoder.img_height, encoder.img_width)
    with torch.no_grad():
        if which == "encoder":
            torch.testing.assert_close(loaded(x), encoder(x), atol=1e-6, rtol=0)
        masks_ctxt, masks_tgt = torch.tensor([[0, 1, 2]] * 2), torch.tensor([[3]] * 2)
        out = loaded_pred(loaded(x, masks=masks_ctxt), masks_ctxt, masks_tgt)
        assert out.shape == (2, 1, 48)


def test_torch_hub_load_local_without_weights():
    with torch.device("meta"):
        encoder = torch.hub.load(str(REPO), "ijepa_vith14_in1k", source="local", pretrained=False)
    assert count(encoder) == encoder_params("ijepa_vith14_in1k")
    assert not encoder.training


def test_pretrained_downloads_the_release_url_once(tmp_path, monkeypatch):
    name = "vjepa_vitl16"
    monkeypatch.setitem(jepa.hub.RELEASES, name, tiny(name))
    encoder, predictor = perturbed(name)
    source = tmp_path / "served.pth.tar"
    ckpt = official_checkpoint(encoder, predictor, source)
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        shutil.copyfile(source, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        import hubconf

        first = hubconf.vjepa_vitl16()  # pretrained=True is the default
        second = hubconf.vjepa_vitl16(pretrained=True)
    finally:
        torch.hub.set_dir(previous)
    assert calls == ["https://dl.fbaipublicfiles.com/jepa/vitl16/vitl16.pth.tar"]
    assert (tmp_path / "hub" / "checkpoints" / "vjepa-vitl16.pth.tar").is_file()
    for model in (first, second):
        assert_same_weights(model, strip(ckpt["target_encoder"]))


def test_release_urls():
    urls = {n: r.url for n, r in jepa.hub.RELEASES.items()}
    assert urls["ijepa_vith14_in1k"] == "https://dl.fbaipublicfiles.com/ijepa/IN1K-vit.h.14-300e.pth.tar"
    assert urls["ijepa_vitg16_in22k"] == "https://dl.fbaipublicfiles.com/ijepa/IN22K-vit.g.16-600e.pth.tar"
    assert urls["vjepa_vith16_384"] == "https://dl.fbaipublicfiles.com/jepa/vith16-384/vith16-384.pth.tar"
    assert urls["vjepa2_vitg_384"] == "https://dl.fbaipublicfiles.com/vjepa2/vitg-384.pt"
    assert len({r.file_name for r in jepa.hub.RELEASES.values()}) == len(NAMES)


def test_rope_release_drops_only_an_unused_position_table(tmp_path, caplog):
    release = tiny("vjepa2_vitl")
    encoder, predictor = jepa.hub.load(release, pretrained=False, with_predictor=True)
    state = {
        "target_encoder": {**encoder.state_dict(), "pos_embed": torch.zeros(1, 32, 48)},
        "predictor": {**predictor.state_dict(), "predictor_pos_embed": torch.zeros(1, 32, 24)},
    }
    with caplog.at_level(logging.INFO, logger="jepa.hub"):
        loaded, _ = jepa.hub.load(release, checkpoint=state, with_predictor=True)
    assert loaded.pos_embed is None
    assert "dropping the unused pos_embed" in caplog.text and "predictor_pos_embed" in caplog.text
    # Anything else unexpected still fails, naming the key.
    state["target_encoder"]["blocks.7.attn.qkv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected keys \\['blocks.7.attn.qkv.weight'\\]"):
        jepa.hub.load(release, checkpoint=state)


def test_checkpoint_errors_name_the_file_and_keys(tmp_path):
    release = tiny("ijepa_vith14_in1k")
    encoder, predictor = jepa.hub.load(release, pretrained=False, with_predictor=True)
    path = jepa.save_checkpoint({"encoder": encoder.state_dict()}, tmp_path / "ctx_only.pth.tar")
    with pytest.raises(CheckpointError, match=f"{path} has no 'target_encoder'; its keys are \\['encoder'\\]"):
        jepa.hub.load(release, checkpoint=path)
    assert jepa.hub.load(release, checkpoint=path, which="encoder").embed_dim == 48
    with pytest.raises(CheckpointError, match=f"{path} has no 'predictor'"):
        jepa.hub.load(release, checkpoint=path, which="encoder", with_predictor=True)
    # Weights of another architecture: strict loading lists what does not fit.
    wider = dataclasses.replace(release, encoder_extra=dict(embed_dim=96, depth=2, num_heads=3))
    with pytest.raises(CheckpointError, match=f"{path} \\[encoder\\] does not fit ijepa_vith14_in1k.*shape mismatch"):
        jepa.hub.load(wider, checkpoint=path, which="encoder")
    with pytest.raises(CheckpointError, match="missing.txt does not exist"):
        jepa.hub.load(release, checkpoint=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown release 'vjepa3'"):
        jepa.hub.load("vjepa3")
    with pytest.raises(ValueError, match="which must be"):
        jepa.hub.load(release, pretrained=False, which="ema")


def test_loading_at_another_resolution_resamples_the_table(tmp_path):
    release = tiny("vjepa_vitl16")
    encoder, predictor = perturbed("vjepa_vitl16")
    path = tmp_path / "x.pth.tar"
    official_checkpoint(encoder, predictor, path)
    big, big_pred = jepa.hub.load(release, checkpoint=path, with_predictor=True, img_size=64)
    assert tuple(big.pos_embed.shape) == (1, 2 * 4 * 4, 48)
    assert tuple(big_pred.predictor_pos_embed.shape) == (1, 2 * 4 * 4, 24)
    # The same as the release's model taking a larger input (it resamples its table on the fly).
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(big(x), jepa.hub.load(release, checkpoint=path)(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_vjepa2_names_build_what_the_official_hub_does(name):
    import inspect

    import hubconf

    entry = getattr(hubconf, name)
    params = inspect.signature(entry).parameters
    assert params["pretrained"].kind is inspect.Parameter.KEYWORD_ONLY and params["pretrained"].default is True
    with torch.device("meta"):
        encoder, predictor = entry(pretrained=False)  # always (encoder, predictor), as the official entry points
        ours, ours_pred = getattr(hubconf, OFFICIAL[name])(pretrained=False, with_predictor=True)
        short, short_pred = entry(pretrained=False, num_frames=16)  # keywords reach encoder and predictor
    assert str(encoder) == str(ours) and str(predictor) == str(ours_pred)
    assert short.num_frames == short_pred.num_frames == 16
    # As built, like the official modules: trainable (but the fixed tables, absent with RoPE) and in training mode.
    for model in (encoder, predictor):
        assert model.training and all(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError):
        entry(False)  # pretrained is keyword-only there too


def test_official_vjepa2_name_downloads_and_loads_the_encoder_key(tmp_path, monkeypatch):
    # The official hub loads the checkpoint's "encoder" (not "target_encoder") from BASE_URL/vitl.pt.
    monkeypatch.setitem(jepa.hub.RELEASES, "vjepa2_vitl", tiny("vjepa2_vitl"))
    encoder, predictor = perturbed("vjepa2_vitl")
    source = tmp_path / "served.pt"
    ckpt = official_checkpoint(encoder, predictor, source)
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        shutil.copyfile(source, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        import hubconf

        loaded, loaded_pred = hubconf.vjepa2_vit_large()
        ema, _ = hubconf.vjepa2_vit_large(which="target_encoder")
    finally:
        torch.hub.set_dir(previous)
    assert calls == ["https://dl.fbaipublicfiles.com/vjepa2/vitl.pt"]
    assert_same_weights(loaded, strip(ckpt["encoder"]))
    assert_same_weights(ema, strip(ckpt["target_encoder"]))
    assert_same_weights(loaded_pred, strip(ckpt["predictor"]))
    assert loaded.training and all(p.requires_grad for p in [*loaded.parameters(), *loaded_pred.parameters()])


def test_official_preprocessor_returns_one_view_as_the_official_transform():
    import hubconf
    from jepa.preprocess import Preprocess

    processor = hubconf.vjepa2_preprocessor()
    assert processor.crop_size == 256
    g = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (4, 300, 400, 3), dtype=torch.uint8, generator=g)
    views = processor(clip)
    assert isinstance(views, list) and len(views) == 1 and views[0].shape == (3, 4, 256, 256)
    # The official transform: short side int(256 * 256 / 224) = 292, centre crop 256, ImageNet normalisation.
    expected = Preprocess(crop_size=256, resize_ratio=292 / 256)(clip)
    torch.testing.assert_close(views[0], expected, atol=0, rtol=0)
    # Clips as numpy [T, H, W, 3], as frames, and as the official demo's [T, 3, H, W] tensors give the same view.
    for same in (clip.numpy(), list(clip.numpy()), clip.permute(0, 3, 1, 2)):
        torch.testing.assert_close(processor(same)[0], expected, atol=0, rtol=0)
    small = hubconf.vjepa2_preprocessor(pretrained=False, crop_size=224)(clip)[0]
    assert small.shape == (3, 4, 224, 224)
    with pytest.raises(TypeError):
        hubconf.vjepa2_preprocessor(crop=224)
