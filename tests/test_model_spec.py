"""One model spec (jepa.config.spec), many producers, one builder (jepa.models.builder).

Each producer (pretraining config, eval config, a checkpoint's stored config, the hub release table, the extraction
command line) gives the expected spec; the builder gives the same modules, to the bit, as the code it replaced; an
eval config or command line that disagrees with a checkpoint's stored config is refused naming both values; and the
config layer imports no torch.
"""

import copy
import dataclasses
import inspect
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

import jepa.hub
from jepa.checkpoint import CheckpointError, load_encoder, save_checkpoint
from jepa.config import ConfigError, from_dict, to_dict
from jepa.config.evals import EvalConfig
from jepa.config.pretrain import PretrainConfig, model_spec_from_config_dict
from jepa.config.spec import VIT_SIZES as SPEC_SIZES
from jepa.config.spec import (
    Difference,
    EncoderSpec,
    ModelSpec,
    PredictorSpec,
    spec_differences,
    with_architecture_of,
)
from jepa.models import VIT_SIZES, VisionTransformer, VisionTransformerPredictor, build_encoder, vit_predictor
from jepa.models.builder import build_encoder_from_spec, build_models_from_spec, build_predictor_from_spec

REPO = Path(__file__).resolve().parents[1]
LN6 = partial(nn.LayerNorm, eps=1e-6)

IMAGE = {
    "app": "ijepa",
    "data": {"dataset_type": "digits", "batch_size": 16, "crop_size": 32, "patch_size": 8},
    "mask": {"min_keep": 1, "num_pred_masks": 2},
    "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 2.0, "pred_depth": 1,
              "pred_embed_dim": 24},
    "optimization": {"epochs": 2, "warmup": 1},
}  # fmt: skip
VIDEO = {
    "app": "vjepa",
    "data": {"dataset_type": "moving_digits", "crop_size": 32, "patch_size": 8, "num_frames": 4, "root_path": "x"},
    "mask": [{"num_blocks": 2}, {"num_blocks": 1}],
    "meta": {"use_sdpa": False},
    "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 1, "pred_embed_dim": 24,
              "pred_num_heads": 2, "uniform_power": True, "use_silu": True, "drop_path_rate": 0.1},
    "optimization": {"epochs": 2, "warmup": 1},
}  # fmt: skip
EVAL = {
    "eval_name": "video_classification_frozen",
    "data": {"dataset_type": "moving_digits", "frames_per_clip": 4},
    "optimization": {"resolution": 32, "batch_size": 2, "num_epochs": 1},
    "pretrain": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8,
                 "frames_per_clip": 4, "uniform_power": True, "use_silu": True, "checkpoint": None},
}  # fmt: skip


def with_keys(base: dict, **sections) -> dict:
    raw = copy.deepcopy(base)
    for name, values in sections.items():
        raw[name].update(values)
    return raw


def same_modules(a: nn.Module, b: nn.Module) -> None:
    """Same class, repr, state-dict keys, shapes and values (to the bit)."""
    assert type(a) is type(b) and str(a) == str(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].shape == sb[k].shape, k
        if sa[k].device.type != "meta":
            assert torch.equal(sa[k], sb[k]), k


def seeded(build, seed: int = 0):
    torch.manual_seed(seed)
    return build()


# -- the spec itself ---------------------------------------------------------------------------------------------
def test_size_table_is_the_models_table():
    # jepa.config.spec holds the table without torch; the models' factories must build exactly these sizes.
    assert SPEC_SIZES == VIT_SIZES


def test_encoder_spec_is_the_constructor_without_torch():
    """Every VisionTransformer keyword is a field with the same default, but norm_layer (norm_eps stands for it,
    defaulting to the official factories' 1e-6 instead of torch's 1e-5)."""
    params = inspect.signature(VisionTransformer.__init__).parameters
    fields = {f.name: f.default for f in dataclasses.fields(EncoderSpec)}
    assert set(params) - {"self", "norm_layer"} == set(fields) - {"model_name", "norm_eps"}
    required = {"embed_dim", "depth", "num_heads"}
    assert {k: fields[k] for k in fields if k in params and k not in required} == {
        k: params[k].default for k in fields if k in params and k not in required
    }
    assert fields["norm_eps"] == 1e-6 and params["norm_layer"].default is nn.LayerNorm


def test_predictor_spec_fields_are_predictor_keywords():
    params = inspect.signature(VisionTransformerPredictor.__init__).parameters
    fields = {f.name: f.default for f in dataclasses.fields(PredictorSpec)}
    assert {k: fields[k] for k in fields if k != "num_heads"} == {
        k: params[k].default for k in fields if k != "num_heads"
    }


def test_released_sizes_are_filled_in_and_fixed():
    spec = EncoderSpec.of("vit_giant", patch_size=14)
    assert (spec.embed_dim, spec.depth, spec.num_heads, spec.mlp_ratio) == (1408, 40, 16, 48 / 11)
    with pytest.raises(TypeError, match="vit_giant fixes num_heads"):
        EncoderSpec.of("vit_giant", num_heads=22)
    with pytest.raises(ValueError, match="unknown model_name 'vit_enormous'"):
        EncoderSpec.of("vit_enormous")
    with pytest.raises(ValueError, match="set model_name=None"):
        dataclasses.replace(spec, depth=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_frame'"):
        EncoderSpec.of("vit_tiny", num_frame=8)


def test_differences_name_both_values_and_skip_what_does_not_shape_the_model():
    base = EncoderSpec(embed_dim=48, depth=2, num_heads=3, num_frames=4, patch_size=8)
    other = dataclasses.replace(base, num_heads=4, patch_size=16, img_size=64, use_sdpa=False)
    assert [str(d) for d in spec_differences(base, other)] == [
        "num_heads: checkpoint 3 vs config 4",
        "patch_size: checkpoint 8 vs config 16",
    ]  # img_size and use_sdpa say how it runs, not what the weights are
    assert spec_differences(base, dataclasses.replace(base, num_heads=None)) == []  # not known: agrees
    assert spec_differences(base, dataclasses.replace(base, wide_silu=False)) == []  # no SwiGLU to widen
    image = dataclasses.replace(base, num_frames=1)
    assert spec_differences(image, dataclasses.replace(image, tubelet_size=1, uniform_power=True)) == []
    rope = dataclasses.replace(base, use_rope=True)
    assert spec_differences(rope, dataclasses.replace(rope, num_frames=16)) == []  # no table tied to frames
    assert spec_differences(base, dataclasses.replace(base, num_frames=16)) == [Difference("num_frames", 4, 16)]
    a = ModelSpec(encoder=base, predictor=PredictorSpec(num_heads=3, predictor_embed_dim=24))
    b = dataclasses.replace(a, predictor=dataclasses.replace(a.predictor, num_mask_tokens=2))
    assert [str(d) for d in spec_differences(a, b)] == ["predictor.num_mask_tokens: checkpoint 1 vs config 2"]


def test_with_architecture_of_keeps_the_weights_and_takes_how_to_run():
    trained = EncoderSpec(embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0, num_frames=4, use_rope=True,
                          drop_path_rate=0.1, use_activation_checkpointing=True)  # fmt: skip
    asked = EncoderSpec(embed_dim=48, depth=2, num_heads=None, num_frames=8, img_size=64, use_rope=True)
    got = with_architecture_of(asked, trained)
    assert (got.num_heads, got.mlp_ratio, got.num_frames, got.img_size) == (3, 2.0, 8, 64)
    assert (got.drop_path_rate, got.use_activation_checkpointing) == (0.0, False)


# -- producers ---------------------------------------------------------------------------------------------------
def test_pretrain_config_produces_the_spec():
    cfg = from_dict(PretrainConfig, VIDEO)
    assert cfg.model_spec() == ModelSpec(
        encoder=EncoderSpec(
            embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0, img_size=32, patch_size=8, num_frames=4,
            tubelet_size=2, uniform_power=True, use_silu=True, use_sdpa=False, drop_path_rate=0.1,
        ),
        predictor=PredictorSpec(predictor_embed_dim=24, depth=1, num_heads=2, num_mask_tokens=2,
                                square_rope_grid=False),
    )  # fmt: skip
    image = from_dict(PretrainConfig, with_keys(IMAGE, model={"model_name": "vit_tiny", "embed_dim": None,
                                                              "depth": None, "num_heads": None}))  # fmt: skip
    spec = image.model_spec()
    assert spec.encoder == EncoderSpec.of("vit_tiny", img_size=32, patch_size=8, num_frames=1)  # MLP: the size's
    assert spec.predictor.num_heads == 3 and spec.predictor.num_mask_tokens == 1  # the encoder's heads, one mask


def test_stored_config_produces_the_same_spec():
    for raw in (IMAGE, VIDEO):
        cfg = from_dict(PretrainConfig, raw)
        stored = json.loads(json.dumps(to_dict(cfg)))  # as a checkpoint keeps it (lists, no tuples)
        assert model_spec_from_config_dict(stored) == cfg.model_spec()
    # Another version's file: unknown keys are ignored, missing ones take their defaults.
    stored = {"app": "vjepa", "data": {"num_frames": 4, "crop_size": 32, "patch_size": 8, "gone": 1},
              "model": {"model_name": "vit_tiny", "new_key": True}, "mask": [{}, {}, {}]}  # fmt: skip
    spec = model_spec_from_config_dict(stored)
    assert spec.encoder == EncoderSpec.of("vit_tiny", img_size=32, patch_size=8, num_frames=4)
    assert spec.predictor == PredictorSpec(predictor_embed_dim=384, depth=6, num_heads=3, num_mask_tokens=3,
                                           square_rope_grid=False)  # fmt: skip
    with pytest.raises(ConfigError, match="model.model_name: unknown size 'vit_enormous'"):
        model_spec_from_config_dict({"model": {"model_name": "vit_enormous"}})


def test_eval_config_produces_the_spec():
    cfg = from_dict(EvalConfig, EVAL)
    assert cfg.encoder_spec() == EncoderSpec(embed_dim=48, depth=2, num_heads=3, img_size=32, patch_size=8,
                                             num_frames=4, uniform_power=True, use_silu=True)  # fmt: skip
    open_heads = from_dict(EvalConfig, with_keys(EVAL, pretrain={"num_heads": None}))
    assert open_heads.encoder_spec().num_heads is None  # left to the checkpoint's stored config


@pytest.mark.parametrize("name", list(jepa.hub.RELEASES))
def test_hub_releases_produce_their_spec(name):
    release = jepa.hub.RELEASES[name]
    spec = release.spec()
    e, p = spec.encoder, spec.predictor
    for key in ("model_name", "img_size", "patch_size", "num_frames", "tubelet_size", "uniform_power", "use_rope"):
        assert getattr(e, key) == getattr(release, key), key
    assert (e.norm_eps, e.qkv_bias) == (1e-6, True)  # the official factories' LayerNorm and qkv bias
    assert dataclasses.asdict(p) == {**dataclasses.asdict(PredictorSpec(num_heads=1)), **release.predictor}
    assert release.spec(num_frames=8, use_sdpa=False).encoder == dataclasses.replace(e, num_frames=8, use_sdpa=False)


# -- one builder, the same modules as before ---------------------------------------------------------------------
def old_build_models(cfg: PretrainConfig):
    """app.pretrain.build_models before the spec (the reference)."""
    d, m = cfg.data, cfg.model
    num_frames = d.num_frames if cfg.is_video else 1
    custom = (
        {} if m.model_name else dict(embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio)
    )
    grid = dict(img_size=d.crop_size, patch_size=d.patch_size, num_frames=num_frames, tubelet_size=d.tubelet_size)
    switches = dict(uniform_power=m.uniform_power, use_sdpa=cfg.meta.use_sdpa, use_rope=m.use_rope,
                    use_silu=m.use_silu, wide_silu=m.wide_silu,
                    use_activation_checkpointing=m.use_activation_checkpointing)  # fmt: skip
    encoder = build_encoder(m.model_name, **grid, **switches, drop_path_rate=m.drop_path_rate, **custom)
    predictor = vit_predictor(
        **grid, **switches, embed_dim=encoder.embed_dim, predictor_embed_dim=m.pred_embed_dim, depth=m.pred_depth,
        num_heads=m.pred_num_heads or encoder.num_heads, use_mask_tokens=m.use_mask_tokens,
        num_mask_tokens=len(cfg.mask) if isinstance(cfg.mask, list) else 1,
        zero_init_mask_tokens=m.zero_init_mask_tokens, square_rope_grid=False,
    )  # fmt: skip
    return encoder, predictor


@pytest.mark.parametrize(
    "raw",
    [
        IMAGE,
        VIDEO,
        with_keys(VIDEO, model={"use_rope": True, "use_silu": False, "use_activation_checkpointing": True}),
        with_keys(IMAGE, model={"model_name": "vit_tiny", "embed_dim": None, "depth": None, "num_heads": None}),
    ],
    ids=["image", "video", "video-rope", "image-vit_tiny"],
)
def test_pretraining_builds_the_same_models(raw):
    import app.pretrain

    cfg = from_dict(PretrainConfig, raw)
    for new, old in zip(seeded(lambda: app.pretrain.build_models(cfg)), seeded(lambda: old_build_models(cfg))):
        same_modules(new, old)


def old_hub_models(release: jepa.hub.Release, **overrides):
    """jepa.hub's keywords before the spec (the reference)."""
    kwargs = dict(qkv_bias=True, norm_layer=LN6, img_size=release.img_size, patch_size=release.patch_size,
                  num_frames=release.num_frames, tubelet_size=release.tubelet_size,
                  uniform_power=release.uniform_power, use_rope=release.use_rope, **release.encoder_extra)  # fmt: skip
    encoder = build_encoder(release.model_name, **{**kwargs, **overrides})
    predictor = vit_predictor(
        img_size=(encoder.img_height, encoder.img_width), patch_size=encoder.patch_size,
        num_frames=encoder.num_frames, tubelet_size=encoder.tubelet_size, embed_dim=encoder.embed_dim,
        uniform_power=release.uniform_power, use_rope=release.use_rope, use_mask_tokens=True, **release.predictor,
    )  # fmt: skip
    return encoder, predictor


@pytest.mark.parametrize("name", list(jepa.hub.RELEASES))
def test_hub_releases_build_the_same_modules(name):
    release = jepa.hub.RELEASES[name]
    with torch.device("meta"):  # the real shapes without allocating ViT-g
        new = jepa.hub.load(name, pretrained=False, with_predictor=True)
        old = old_hub_models(release)
    for a, b in zip(new, old):
        same_modules(a, b.eval().requires_grad_(False))
    tiny = dataclasses.replace(
        release,
        model_name=None,
        encoder_extra=dict(embed_dim=48, depth=2, num_heads=3),
        img_size=2 * release.patch_size,
        num_frames=4 if release.num_frames > 1 else 1,
        predictor={**release.predictor, "predictor_embed_dim": 24, "depth": 1, "num_heads": 3},
    )
    new = seeded(lambda: jepa.hub.load(tiny, pretrained=False, with_predictor=True, img_size=32))
    old = seeded(lambda: old_hub_models(tiny, img_size=32))
    for a, b in zip(new, old):
        same_modules(a, b.eval().requires_grad_(False))


def test_eval_random_encoder_is_the_same_as_before():
    import evals.encoder

    cfg = from_dict(EvalConfig, with_keys(EVAL, pretrain={"seed": 3}))
    new, source = evals.encoder.build_frozen_encoder(cfg)
    old_kwargs = dict(img_size=32, patch_size=8, num_frames=4, tubelet_size=2, uniform_power=True, use_rope=False,
                      use_sdpa=True, use_silu=True, wide_silu=True, embed_dim=48, depth=2, num_heads=3)  # fmt: skip
    old = seeded(lambda: build_encoder(None, **old_kwargs), seed=3)
    assert source is None
    same_modules(new, old.eval().requires_grad_(False))


def test_builder_needs_known_heads_and_a_predictor():
    with pytest.raises(ValueError, match="num_heads open"):
        build_encoder_from_spec(EncoderSpec(embed_dim=48, depth=2, num_heads=None))
    with pytest.raises(ValueError, match="no predictor"):
        build_predictor_from_spec(ModelSpec(encoder=EncoderSpec(embed_dim=48, depth=2, num_heads=3)))
    spec = ModelSpec(encoder=EncoderSpec(embed_dim=48, depth=2, num_heads=3, img_size=32, patch_size=8),
                     predictor=PredictorSpec(predictor_embed_dim=24, depth=1, num_heads=3))  # fmt: skip
    encoder, predictor = build_models_from_spec(spec)
    assert isinstance(predictor, VisionTransformerPredictor) and predictor.embed_dim == encoder.embed_dim == 48
    with pytest.raises(TypeError, match="spec= fixes the architecture"):
        load_encoder(encoder.state_dict(), spec=spec, num_heads=3)


# -- evals and extraction take the architecture from a checkpoint's stored config -------------------------------
@pytest.fixture
def trained_run(tmp_path) -> tuple[Path, nn.Module]:
    """One of our checkpoints: weights of a custom-width encoder (MLP ratio 2, SwiGLU) and the config it stores."""
    cfg = from_dict(PretrainConfig, with_keys(VIDEO, model={"mlp_ratio": 2.0}))
    encoder = build_encoder_from_spec(cfg.model_spec())
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = save_checkpoint({"target_encoder": encoder.state_dict(), "config": to_dict(cfg)}, tmp_path / "run.pt")
    return path, encoder.eval().requires_grad_(False)


def eval_of(path: Path, **pretrain) -> EvalConfig:
    return from_dict(EvalConfig, with_keys(EVAL, pretrain={"folder": str(path.parent), "checkpoint": path.name,
                                                           **pretrain}))  # fmt: skip


def test_evals_take_the_architecture_from_the_stored_config(trained_run):
    import evals.encoder

    path, encoder = trained_run
    # No head count and no MLP ratio in the eval config: both come from the stored config.
    loaded, source = evals.encoder.build_frozen_encoder(eval_of(path, num_heads=None))
    assert source == str(path) and loaded.num_heads == 3 and loaded.blocks[0].mlp.fc1.out_features == 2 * 48 * 2 // 3
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():  # the eval runs SDPA, the run trained without it (meta.use_sdpa: false): last bits differ
        torch.testing.assert_close(loaded(x), encoder(x), atol=1e-5, rtol=0)


def test_an_eval_that_disagrees_with_the_stored_config_is_refused(trained_run):
    import evals.encoder

    path, _ = trained_run
    with pytest.raises(ConfigError) as e:
        evals.encoder.build_frozen_encoder(eval_of(path, num_heads=4, patch_size=16))
    message = str(e.value)
    assert f"pretrain.num_heads: got 4, but the checkpoint {path} was trained with 3 (its stored config)" in message
    assert "pretrain.patch_size: got 16, but the checkpoint" in message and "with 8" in message


def test_extraction_takes_the_architecture_from_the_stored_config(trained_run):
    from jepa import extract

    path, encoder = trained_run
    args = extract._parse_args(["--checkpoint", str(path), "--data", "x", "--out", "f.npy", "--img-size", "64"])
    spec = extract.encoder_spec_from_args(args, torch.load(path, weights_only=True)["config"])
    assert spec == dataclasses.replace(from_dict(PretrainConfig, with_keys(VIDEO, model={"mlp_ratio": 2.0}))
                                       .model_spec().encoder, img_size=64)  # fmt: skip
    loaded = extract.build_from_args(args)
    assert loaded.img_height == 64 and loaded.blocks[0].mlp.fc3 is not None
    bad = extract._parse_args(["--checkpoint", str(path), "--model", "vit_tiny", "--data", "x", "--out", "f.npy"])
    with pytest.raises(CheckpointError, match="embed_dim: checkpoint 48 vs command line 192"):
        extract.build_from_args(bad)


# -- the config layer sits below torch ---------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["jepa.config", "jepa.config.evals", "jepa.config.checks", "jepa.config.spec"])
def test_config_modules_import_no_torch(module):
    code = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision') "
        "or m.startswith('jepa.models')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_package_exports_stay_importable_lazily():
    code = (
        "import jepa; from jepa import load_encoder, EncoderSpec; print(jepa.checkpoint.load_encoder is load_encoder)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "True"
