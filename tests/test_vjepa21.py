"""V-JEPA 2.1 model options of the one VisionTransformer / predictor: image and video tokenizers with modality
embeddings, four deep-supervised levels, dense prediction, the pairwise RoPE layout and ``interpolate_rope``, and the
released architectures behind the hub entries (loaded strictly under the official key names).

Parity with the official ``app/vjepa_2_1`` code on the same weights is measured outside the repository (README)."""

import dataclasses
import math
from functools import partial

import pytest
import torch
from torch import nn

import jepa.hub
from jepa.checkpoint import CheckpointError
from jepa.config.spec import EncoderSpec, ModelSpec, PredictorSpec, hierarchical_layers_for, spec_differences
from jepa.models import VisionTransformer, VisionTransformerPredictor
from jepa.models.builder import build_models_from_spec
from jepa.models.rope import Rope3D

pytestmark = pytest.mark.usefixtures("one_thread")

LN6 = partial(nn.LayerNorm, eps=1e-6)
D, HEADS, PATCH, IMG, FRAMES = 48, 4, 16, 64, 4  # head width 12: two RoPE pairs per axis
V21 = dict(use_rope=True, img_temporal_dim_size=1, modality_embedding=True, deep_supervision=True,
           hierarchical_layers=(0, 1, 2, 3), rope_layout="pairwise", interpolate_rope=True)  # fmt: skip


def encoder(**kwargs) -> VisionTransformer:
    cfg = dict(img_size=IMG, patch_size=PATCH, num_frames=FRAMES, tubelet_size=2, embed_dim=D, depth=4,
               num_heads=HEADS, norm_layer=LN6, **V21)  # fmt: skip
    return perturbed(VisionTransformer(**{**cfg, **kwargs})).eval()


def predictor(**kwargs) -> VisionTransformerPredictor:
    cfg = dict(img_size=IMG, patch_size=PATCH, num_frames=FRAMES, tubelet_size=2, embed_dim=D, predictor_embed_dim=24,
               depth=2, num_heads=2, num_mask_tokens=2, norm_layer=LN6, use_rope=True, img_temporal_dim_size=1,
               modality_embedding=True, rope_layout="pairwise", interpolate_rope=True, n_output_distillation=4,
               return_all_tokens=True)  # fmt: skip
    return perturbed(VisionTransformerPredictor(**{**cfg, **kwargs})).eval()


def perturbed(model):
    # Move every weight off its initial value (LayerNorms at 1/0 and near-zero modality embeddings hide mistakes).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


VIDEO = (2, 3, FRAMES, IMG, IMG)
IMAGE = (2, 3, IMG, IMG)


# ----------------------------------------------------------------------------------------------------------------
# RoPE: the pairwise layout and interpolate_rope against direct formulas


def rotate_by_formula(x, t, h, w, head_dim):
    """Each axis part of d = 2 * (head_dim // 6) channels (time, height, width, in that order; the rest pass
    through) turns its pair i = (2i, 2i + 1) by pos * 10000^(-i / (d / 2)): a plane rotation (textbook RoPE)."""
    d = 2 * ((head_dim // 3) // 2)
    out = x.clone()
    for axis, pos in enumerate((t, h, w)):
        for n in range(x.shape[-2]):
            for i in range(d // 2):
                a = float(pos[n]) * 10000 ** (-i / (d / 2))
                c0 = axis * d + 2 * i
                x0, x1 = x[..., n, c0], x[..., n, c0 + 1]
                out[..., n, c0] = x0 * math.cos(a) - x1 * math.sin(a)
                out[..., n, c0 + 1] = x1 * math.cos(a) + x0 * math.sin(a)
    return out


@pytest.mark.parametrize("head_dim", [12, 14])
def test_pairwise_rope_is_a_plane_rotation_per_pair(head_dim):
    grid_hw = (3, 5)
    ids = torch.tensor([0, 4, 7, 15, 22, 29])
    t, rem = ids // 15, ids % 15
    h, w = rem // 5, rem % 5
    x = torch.randn(2, 3, len(ids), head_dim, dtype=torch.float64)
    got = Rope3D.from_ids(ids, grid_hw, head_dim, layout="pairwise").rotate(x)
    torch.testing.assert_close(got, rotate_by_formula(x, t, h, w, head_dim), atol=1e-6, rtol=0)
    # A rotation keeps each pair's norm; V-JEPA 2's duplicated layout does not, so the two layouts differ.
    dup = Rope3D.from_ids(ids, grid_hw, head_dim).rotate(x)
    assert not torch.allclose(dup, got)


def test_interpolate_rope_rescales_height_and_width_to_the_reference_grid():
    head_dim, ref = 12, 16
    ids = torch.arange(2 * 4 * 6)
    t, rem = ids // 24, ids % 24
    h, w = rem // 6, rem % 6
    x = torch.randn(1, 1, len(ids), head_dim, dtype=torch.float64)
    got = Rope3D.from_ids(ids, (4, 6), head_dim, layout="pairwise", reference_grid=ref).rotate(x)
    want = rotate_by_formula(x, t, h * (ref - 1) / 3, w * (ref - 1) / 5, head_dim)  # time positions unscaled
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", ["duplicated", "pairwise"])
def test_interpolate_rope_is_the_identity_at_the_reference_grid(layout):
    ids = torch.stack([torch.randperm(2 * 16 * 16)[:40] for _ in range(2)])
    plain = Rope3D.from_ids(ids, (16, 16), 24, layout=layout)
    scaled = Rope3D.from_ids(ids, (16, 16), 24, layout=layout, reference_grid=16)
    assert torch.equal(plain.cos, scaled.cos) and torch.equal(plain.sin, scaled.sin)
    # and so is the encoder at 256 px (patch 16): the same tokens with and without interpolate_rope
    torch.manual_seed(0)
    a = encoder(img_size=256, interpolate_rope=False)
    b = encoder(img_size=256)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 2, 256, 256)
    with torch.no_grad():
        assert torch.equal(a(x, training=True), b(x, training=True))


def test_a_one_token_axis_keeps_position_zero():
    # The official formula divides by (H - 1): a one-row input would get NaN positions; here they stay 0.
    rope = Rope3D.from_ids(torch.arange(5), (1, 5), 12, layout="pairwise", reference_grid=16)
    assert torch.isfinite(rope.cos).all()


def test_rope_options_are_checked():
    with pytest.raises(ValueError, match="rope_layout"):
        Rope3D.from_ids(torch.arange(4), (2, 2), 12, layout="interleaved")
    with pytest.raises(ValueError, match="interpolate_rope"):
        VisionTransformer(embed_dim=D, depth=1, num_heads=HEADS, patch_size=8, use_rope=True, interpolate_rope=True)
    with pytest.raises(ValueError, match="use_rope"):
        VisionTransformer(embed_dim=D, depth=1, num_heads=HEADS, interpolate_rope=True)
    with pytest.raises(TypeError, match="interpolate_ropes"):
        VisionTransformer(embed_dim=D, depth=1, num_heads=HEADS, interpolate_ropes=True)  # type: ignore[call-arg]


# ----------------------------------------------------------------------------------------------------------------
# deep supervision: four levels, each through its own norm


def test_official_level_choice_per_depth():
    assert hierarchical_layers_for(12) == (2, 5, 8, 11)
    assert hierarchical_layers_for(24) == (5, 11, 17, 23)
    assert hierarchical_layers_for(40) == (9, 19, 29, 39)
    assert hierarchical_layers_for(48) == (11, 23, 37, 47)
    assert hierarchical_layers_for(8) == (1, 3, 5, 7)
    with pytest.raises(ValueError, match="hierarchical_layers"):
        hierarchical_layers_for(2)
    with torch.device("meta"):
        model = VisionTransformer(embed_dim=D, depth=12, num_heads=HEADS, num_frames=4, deep_supervision=True)
    assert model.hierarchical_layers == [2, 5, 8, 11] and len(model.norms_block) == 4
    assert not hasattr(model, "norm")  # norms_block replaces it: the official files have no norm.*


@pytest.mark.parametrize("levels", [(0, 1, 2, 3), (1, 3, 4, 5)])
def test_training_mode_concatenates_the_normalised_levels(levels):
    model = encoder(depth=6, hierarchical_layers=levels)
    x = torch.randn(*VIDEO)
    with torch.no_grad():
        raw = model.forward_intermediates(x, list(range(6)), intermediates_only=True)
        want = torch.cat([model.norms_block[k](raw[i]) for k, i in enumerate(levels)], dim=-1)
        torch.testing.assert_close(model(x, training=True), want, atol=1e-6, rtol=0)
        # inference: the last level's norm over the last block (what the official encoder returns)
        torch.testing.assert_close(model(x), model.norms_block[-1](raw[-1]), atol=1e-6, rtol=0)
        model.return_hierarchical = True  # the official switch
        assert model(x).shape == (2, 2 * 4 * 4, 4 * D)
        model.return_hierarchical = False
        model.out_layers = [levels[0], levels[2]]
        outs = model(x)
        torch.testing.assert_close(outs[1], model.norms_block[2](raw[levels[2]]), atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="no norm of its own"):
            model.forward_intermediates(x, [levels[0] + 1 if levels[0] + 1 not in levels else 5], norm=True)


def test_n_output_distillation_one_returns_the_last_level_in_training_mode():
    model = encoder(n_output_distillation=1)
    x = torch.randn(*VIDEO)
    with torch.no_grad():
        assert torch.equal(model(x, training=True), model(x))


def test_training_flag_changes_nothing_without_deep_supervision():
    model = encoder(deep_supervision=False, hierarchical_layers=None)
    x = torch.randn(*VIDEO)
    with torch.no_grad():
        assert torch.equal(model(x, training=True), model(x))
    assert model.norms_block is None and isinstance(model.norm, nn.LayerNorm)


# ----------------------------------------------------------------------------------------------------------------
# images and video in one encoder


def test_images_take_the_tubelet_one_tokenizer_and_the_image_embedding():
    model = encoder()
    img = torch.randn(*IMAGE)
    vid = torch.randn(*VIDEO)
    with torch.no_grad():
        four_d, one_frame = model(img, training=True), model(img.unsqueeze(2), training=True)
        assert torch.equal(four_d, one_frame) and four_d.shape == (2, 16, 4 * D)
        assert model.modality(img) == model.modality(img.unsqueeze(2)) == "image"
        assert model.modality(vid) == "video" and model.input_grid(img.unsqueeze(2)) == (1, 4, 4)
        before_img, before_vid = model(img), model(vid)
        model.patch_embed.proj.weight.add_(1.0)  # the video tokenizer: images do not see it
        assert torch.equal(model(img), before_img) and not torch.equal(model(vid), before_vid)
        before_vid = model(vid)
        model.img_mod_embed.add_(1.0)  # the image embedding: videos do not see it
        assert not torch.equal(model(img), before_img) and torch.equal(model(vid), before_vid)
        # By hand: tubelet-1 tokens + img_mod_embed, through the blocks.
        tokens = model.patch_embed_img.proj(img.unsqueeze(2)).flatten(2).transpose(1, 2) + model.img_mod_embed
        rope = Rope3D.from_ids(torch.arange(16), (4, 4), D // HEADS, "pairwise", reference_grid=16)
        for block in model.blocks:
            tokens = block(tokens, rope)
        torch.testing.assert_close(model(img), model.norms_block[-1](tokens), atol=1e-6, rtol=0)


def test_without_an_image_tokenizer_images_stay_static_clips():
    model = encoder(img_temporal_dim_size=None)
    img = torch.randn(*IMAGE)
    with torch.no_grad():
        clip = img.unsqueeze(2).expand(-1, -1, 2, -1, -1)
        assert torch.equal(model(img), model(clip))
    assert model.patch_embed_img is None and model.modality(img) == "video"
    with pytest.raises(ValueError, match="video encoder"):
        VisionTransformer(embed_dim=D, depth=1, num_heads=HEADS, img_temporal_dim_size=1)  # an image model


# ----------------------------------------------------------------------------------------------------------------
# the predictor: four levels in and out, dense prediction, modality embeddings


def masks(n_tokens: int, n_ctxt: int, batch: int = 2):
    perm = torch.stack([torch.randperm(n_tokens) for _ in range(batch)])
    return perm[:, :n_ctxt], perm[:, n_ctxt:]


def test_predictor_takes_and_predicts_four_levels_with_context_predictions():
    enc, pred = encoder(), predictor()
    assert isinstance(pred.predictor_embed, nn.Sequential) and isinstance(pred.predictor_embed[1], nn.GELU)
    mc, mt = masks(32, 20)
    with torch.no_grad():
        ctx = enc(torch.randn(*VIDEO), masks=mc, training=True)
        z, zc = pred(ctx, mc, mt, mask_index=1, return_context=True)
        assert z.shape == (2, 12, 4 * D) and zc.shape == (2, 20, 4 * D)
        assert torch.equal(pred(ctx, mc, mt, mask_index=1), z)
        # the context predictions are predictor_proj_context of the same trunk outputs
        pred.predictor_proj_context.weight.copy_(pred.predictor_proj.weight)
        pred.predictor_proj_context.bias.copy_(pred.predictor_proj.bias)
        _, zc_same = pred(ctx, mc, mt, mask_index=1, return_context=True)
        whole = pred(ctx, mc, torch.cat([mc, mt], dim=1), mask_index=1)  # predicting the context positions too
        assert zc_same.shape == (2, 20, 4 * D) and whole.shape == (2, 32, 4 * D)
        image_z = pred(ctx, mc, mt, mask_index=1, mod="image")
        assert not torch.allclose(image_z, z)  # the predictor is told which modality it predicts
    with pytest.raises(ValueError, match="return_all_tokens"):
        predictor(return_all_tokens=False)(ctx, mc, mt, return_context=True)
    with pytest.raises(ValueError, match="mod must be"):
        pred(ctx, mc, mt, mod="audio")  # type: ignore[call-overload]


def test_distilled_predictor_width():
    pred = predictor(n_output_distillation=1, teacher_embed_dim=64)
    assert isinstance(pred.predictor_embed, nn.Linear) and pred.predictor_proj.out_features == 64
    assert pred.predictor_proj_context.out_features == 64
    assert predictor(n_output_distillation=4, teacher_embed_dim=4 * 32).predictor_proj.out_features == 4 * 32
    assert predictor(out_embed_dim=20).predictor_proj.out_features == 4 * 20


def test_predictor_grid_hw_decodes_positions_on_the_given_grid():
    pred = predictor(square_rope_grid=False)
    mc, mt = masks(2 * 6 * 6, 40)
    ctx = torch.randn(2, 40, 4 * D)
    with torch.no_grad():
        assert not torch.allclose(pred(ctx, mc, mt), pred(ctx, mc, mt, grid_hw=(6, 6)))


def test_every_parameter_gets_a_gradient_from_an_image_and_a_video_step():
    torch.manual_seed(0)
    enc, pred = encoder().train(), predictor().train()
    loss = torch.zeros(())
    for index, (mod, shape, n) in enumerate((("video", VIDEO, 32), ("image", IMAGE, 16))):
        mc, mt = masks(n, n // 2)
        ctx = enc(torch.randn(*shape), masks=mc, training=True)
        z, zc = pred(ctx, mc, mt, mask_index=index, mod=mod, return_context=True)
        loss = loss + z.abs().mean() + zc.abs().mean()
    loss.backward()
    missing = [n for m in (enc, pred) for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


# ----------------------------------------------------------------------------------------------------------------
# V-JEPA 2 models are unchanged


def test_vjepa2_models_are_unchanged_by_the_new_options():
    def build(**extra):
        torch.manual_seed(0)
        enc = VisionTransformer(img_size=32, patch_size=8, num_frames=4, embed_dim=D, depth=2, num_heads=HEADS,
                                use_rope=True, **extra.get("enc", {}))  # fmt: skip
        pred = VisionTransformerPredictor(img_size=32, patch_size=8, num_frames=4, embed_dim=D, predictor_embed_dim=24,
                                          depth=1, num_heads=2, use_rope=True, **extra.get("pred", {}))  # fmt: skip
        return perturbed(enc).eval(), perturbed(pred).eval()

    explicit = dict(rope_layout="duplicated", interpolate_rope=False, modality_embedding=False)
    a, pa = build()
    b, pb = build(enc={**explicit, "deep_supervision": False, "img_temporal_dim_size": None},
                  pred={**explicit, "n_output_distillation": 1, "return_all_tokens": False})  # fmt: skip
    assert list(a.state_dict()) == list(b.state_dict()) and "norm.weight" in a.state_dict()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert sorted(pa.state_dict()) == sorted(pb.state_dict()) and "predictor_embed.weight" in pa.state_dict()
    x = torch.randn(2, 3, 4, 32, 32)
    mc, mt = masks(32, 20)
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and torch.equal(a(x, training=True), a(x))
        assert torch.equal(pa(a(x, masks=mc), mc, mt), pb(b(x, masks=mc), mc, mt))
    # V-JEPA 2's layout is still the duplicated one: pairs turn by two different angles.
    # Token 5 of a 4 x 4 grid sits at (t, h, w) = (0, 1, 1); channels 4, 5 are the first height pair.
    dup, pair = (Rope3D.from_ids(torch.tensor([5]), (4, 4), 12, layout=lay) for lay in ("duplicated", "pairwise"))
    assert dup.cos[0, 4] != dup.cos[0, 5] and pair.cos[0, 4] == pair.cos[0, 5]


# ----------------------------------------------------------------------------------------------------------------
# specs and the released architectures


def test_the_spec_builds_both_models_and_compares_the_new_keys():
    enc = EncoderSpec(embed_dim=D, depth=4, num_heads=HEADS, img_size=IMG, num_frames=FRAMES, **V21)
    spec = ModelSpec(encoder=enc, predictor=PredictorSpec(predictor_embed_dim=24, depth=1, num_heads=2,
                                                          n_output_distillation=4, return_all_tokens=True,
                                                          interpolate_rope=True))  # fmt: skip
    e, p = build_models_from_spec(spec)
    assert e.patch_embed_img is not None and e.hierarchical_layers == [0, 1, 2, 3] and e.rope_layout == "pairwise"
    assert p.modality_embedding and p.interpolate_rope and p.rope_layout == "pairwise"
    assert p.predictor_embed[0].in_features == 4 * D and p.predictor_proj.out_features == 4 * D
    other = dataclasses.replace(enc, rope_layout="duplicated", interpolate_rope=False)
    assert sorted(d.key for d in spec_differences(enc, other)) == ["interpolate_rope", "rope_layout"]
    with pytest.raises(ValueError, match="rope_layout"):
        dataclasses.replace(enc, rope_layout="interleaved")


# The released architectures, written out from the official hub (src/hub/backbones.py, V-JEPA 2.1 part):
# name: (size, width, depth, heads, MLP hidden, encoder key, predictor depth, levels in/out, predictor out width)
RELEASED = {
    "vjepa2_1_vit_base_384": ("vit_base", 768, 12, 12, 3072, "ema_encoder", 12, 1, 1664),
    "vjepa2_1_vit_large_384": ("vit_large", 1024, 24, 16, 4096, "ema_encoder", 12, 1, 1664),
    "vjepa2_1_vit_giant_384": ("vit_giant_xformers", 1408, 40, 22, 6144, "target_encoder", 24, 4, 4 * 1408),
    "vjepa2_1_vit_gigantic_384": ("vit_gigantic_xformers", 1664, 48, 26, 8192, "target_encoder", 24, 4, 4 * 1664),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_architectures(name):
    size, width, depth, heads, hidden, key, pred_depth, levels, out = RELEASED[name]
    release = jepa.hub.get_release(name)
    assert release.model_name == size and release.encoder_key == key and release.paper == "V-JEPA 2.1"
    assert release.url.startswith("https://dl.fbaipublicfiles.com/vjepa2/vjepa2_1_")
    with torch.device("meta"):
        enc, pred = jepa.hub.load(name, pretrained=False, with_predictor=True)
    got = (enc.embed_dim, len(enc.blocks), enc.num_heads, enc.blocks[0].mlp.fc1.out_features)
    assert got == (width, depth, heads, hidden)
    assert enc.hierarchical_layers == list(hierarchical_layers_for(depth)) and enc.interpolate_rope
    assert tuple(enc.patch_embed.proj.weight.shape) == (width, 3, 2, 16, 16)
    assert tuple(enc.patch_embed_img.proj.weight.shape) == (width, 3, 1, 16, 16)
    assert (pred.predictor_embed_dim, len(pred.predictor_blocks), pred.num_heads, pred.num_mask_tokens) == (
        384, pred_depth, 12, 8)  # fmt: skip
    assert pred.n_output_distillation == levels and pred.predictor_proj.out_features == out
    assert pred.predictor_proj_context.out_features == out and pred.modality_embedding
    # As the official hub builds them: interpolate_rope reaches the encoder only; the encoders keep four levels in
    # training mode (the distilled predictors take the inference output, the last level).
    assert not pred.interpolate_rope and enc.n_output_distillation == 4
    cfg = release.pretrained_cfg
    assert cfg.input_size == (3, 384, 384) and cfg.num_frames == 64 and cfg.tubelet_size == 2
    with torch.device("meta"):
        model = jepa.create_model(name)
    assert model.pretrained_cfg["url"] == release.url and model.training


def official_state_dicts(release: jepa.hub.Release) -> tuple[dict, dict]:
    """Random weights under the official 2.1 key names, written out here (not read from our modules)."""
    spec = release.spec()
    e, p = spec.encoder, spec.predictor
    assert p is not None and e.num_heads is not None
    width, depth, hidden = e.embed_dim, e.depth, int(e.embed_dim * e.mlp_ratio)

    def block(prefix: str, dim: int, hid: int) -> dict:
        shapes = {"norm1": (dim,), "attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "norm2": (dim,),
                  "mlp.fc1": (hid, dim), "mlp.fc2": (dim, hid)}  # fmt: skip
        out = {}
        for name, shape in shapes.items():
            out[f"{prefix}.{name}.weight"] = torch.randn(shape)
            out[f"{prefix}.{name}.bias"] = torch.randn(shape[0])
        return out

    enc = {"patch_embed.proj.weight": torch.randn(width, 3, 2, 16, 16), "patch_embed.proj.bias": torch.randn(width),
           "patch_embed_img.proj.weight": torch.randn(width, 3, 1, 16, 16),
           "patch_embed_img.proj.bias": torch.randn(width),
           "img_mod_embed": torch.randn(1, 1, width), "video_mod_embed": torch.randn(1, 1, width)}  # fmt: skip
    for i in range(depth):
        enc.update(block(f"blocks.{i}", width, hidden))
    for i in range(4):
        enc.update({f"norms_block.{i}.weight": torch.randn(width), f"norms_block.{i}.bias": torch.randn(width)})
    pd, levels = p.predictor_embed_dim, p.n_output_distillation
    out = levels * (p.teacher_embed_dim // levels if p.teacher_embed_dim else width)
    pred = {f"mask_tokens.{i}": torch.randn(1, 1, pd) for i in range(p.num_mask_tokens)}
    if levels == 1:
        pred.update({"predictor_embed.weight": torch.randn(pd, width), "predictor_embed.bias": torch.randn(pd)})
    else:
        pred.update({"predictor_embed.0.weight": torch.randn(width, 4 * width),
                     "predictor_embed.0.bias": torch.randn(width), "predictor_embed.2.weight": torch.randn(pd, width),
                     "predictor_embed.2.bias": torch.randn(pd)})  # fmt: skip
    for i in range(p.depth):
        pred.update(block(f"predictor_blocks.{i}", pd, int(pd * p.mlp_ratio)))
    pred.update({"predictor_norm.weight": torch.randn(pd), "predictor_norm.bias": torch.randn(pd),
                 "predictor_proj.weight": torch.randn(out, pd), "predictor_proj.bias": torch.randn(out),
                 "predictor_proj_context.weight": torch.randn(out, pd), "predictor_proj_context.bias": torch.randn(out),
                 "img_mod_embed": torch.randn(1, 1, pd), "video_mod_embed": torch.randn(1, 1, pd)})  # fmt: skip
    return enc, pred


def tiny(name: str) -> jepa.hub.Release:
    r = jepa.hub.get_release(name)
    distilled = r.encoder_key == "ema_encoder"
    return dataclasses.replace(
        r, model_name=None, img_size=64,
        encoder_extra={**r.encoder_extra, "embed_dim": D, "depth": 4, "num_heads": HEADS,
                       "hierarchical_layers": (0, 1, 2, 3)},
        predictor={**r.predictor, "predictor_embed_dim": 24, "depth": 1, "num_heads": 2,
                   **({"teacher_embed_dim": 64} if distilled else {})},
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_hub_entry_loads_official_key_names_strictly(tmp_path, monkeypatch, name):
    import hubconf

    release = tiny(name)
    monkeypatch.setitem(jepa.hub.VJEPA2_1_RELEASES, name, release)
    enc_sd, pred_sd = official_state_dicts(release)
    key = release.encoder_key
    path = tmp_path / "vjepa2_1.pt"
    prefixed = {key: {f"module.backbone.{k}": v for k, v in enc_sd.items()},
                "predictor": {f"module.backbone.{k}": v for k, v in pred_sd.items()}, "epoch": 1}  # fmt: skip
    jepa.save_checkpoint(prefixed, path)
    encoder_, predictor_ = getattr(hubconf, name)(checkpoint=str(path))  # the official default key
    for model, sd in ((encoder_, enc_sd), (predictor_, pred_sd)):
        got = model.state_dict()
        assert sorted(got) == sorted(sd)  # every key consumed, none missing
        assert all(torch.equal(got[k], v) for k, v in sd.items())
        assert model.training  # official-style entry: as built, trainable
    x = torch.randn(1, 3, 2, 64, 64)
    with torch.no_grad():
        assert encoder_(x).shape == (1, 16, D)
        assert encoder_(x[:, :, :1]).shape == (1, 16, D)
    for broken in ({k: v for k, v in enc_sd.items() if k != "norms_block.2.bias"},
                   {**enc_sd, "norm.weight": torch.randn(D)}):  # fmt: skip
        jepa.save_checkpoint({key: broken, "predictor": pred_sd}, path)
        with pytest.raises(CheckpointError, match="norms_block.2.bias|norm.weight"):
            getattr(hubconf, name)(checkpoint=str(path))
    jepa.save_checkpoint({key: enc_sd, "predictor": {k: v for k, v in pred_sd.items() if k != "img_mod_embed"}}, path)
    with pytest.raises(CheckpointError, match="img_mod_embed"):
        getattr(hubconf, name)(checkpoint=str(path))


def test_weights_alone_describe_a_2_1_encoder_and_predictor():
    from jepa.checkpoint import load_encoder, load_predictor

    release = tiny("vjepa2_1_vit_giant_384")
    enc_sd, pred_sd = official_state_dicts(release)
    # depth 4 has no official levels: give them; everything else is read from the weights
    model = load_encoder({"target_encoder": enc_sd}, num_heads=HEADS, num_frames=4, hierarchical_layers=(0, 1, 2, 3))
    assert model.deep_supervision and model.patch_embed_img is not None and model.modality_embedding
    assert model.rope_layout == "pairwise" and model.interpolate_rope
    pred = load_predictor({"predictor": pred_sd}, num_heads=2, img_size=64, patch_size=16, num_frames=4)
    assert pred.n_output_distillation == 4 and pred.return_all_tokens and pred.modality_embedding
