"""V-JEPA 2.1's objective as options of the one JEPA module: per-level targets, the dense context loss with its
distance weights and lambda schedule, image and video groups in one batch, and targets from a frozen teacher; the
defaults leave the V-JEPA loss as it was.

The distance weights and the schedule are checked against direct evaluations of the official definitions
(``compute_mask_distance`` and ``Lambda_LinearWarmupHold`` in ``app/vjepa_2_1``)."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jepa.masks import apply_masks
from jepa.models import VisionTransformer, VisionTransformerPredictor
from jepa.training.dense import context_distances, context_lambda_at, context_loss, token_coordinates
from jepa.training.losses import layer_norm_levels
from jepa.training.meta_arch import JEPA, ClipGroup

pytestmark = pytest.mark.usefixtures("one_thread")

LN6 = partial(nn.LayerNorm, eps=1e-6)
D, PATCH, IMG, FRAMES = 48, 8, 32, 4  # 4 x 4 tokens per frame; clips of 2 tubelets
V21_ENC = dict(use_rope=True, img_temporal_dim_size=1, modality_embedding=True, deep_supervision=True,
               hierarchical_layers=(0, 1, 2, 3), rope_layout="pairwise")  # fmt: skip


def encoder(embed_dim: int = D, **kwargs) -> VisionTransformer:
    cfg = dict(img_size=IMG, patch_size=PATCH, num_frames=FRAMES, tubelet_size=2, embed_dim=embed_dim, depth=4,
               num_heads=4, norm_layer=LN6, **V21_ENC)  # fmt: skip
    return perturbed(VisionTransformer(**{**cfg, **kwargs}))


def predictor(**kwargs) -> VisionTransformerPredictor:
    cfg = dict(img_size=IMG, patch_size=PATCH, num_frames=FRAMES, tubelet_size=2, embed_dim=D, predictor_embed_dim=24,
               depth=2, num_heads=2, num_mask_tokens=2, norm_layer=LN6, use_rope=True, img_temporal_dim_size=1,
               modality_embedding=True, rope_layout="pairwise", n_output_distillation=4,
               return_all_tokens=True)  # fmt: skip
    return perturbed(VisionTransformerPredictor(**{**cfg, **kwargs}))


def perturbed(model):
    # Move every weight off its initial value (LayerNorms at 1/0 and near-zero modality embeddings hide mistakes).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def split_masks(n_tokens: int, n_ctxt: int, n_tgt: int, batch: int = 2, seed: int = 0):
    """Disjoint context ``[B, n_ctxt]`` and target ``[B, n_tgt]`` token indices (random order)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(n_tokens, generator=g) for _ in range(batch)])
    return perm[:, :n_ctxt], perm[:, n_ctxt : n_ctxt + n_tgt]


def image_and_video_groups(batch: int = 2) -> list[ClipGroup]:
    torch.manual_seed(3)
    enc_i, pred_i = split_masks(16, 6, 5, batch, seed=1)  # image: 1 x 4 x 4 tokens
    enc_v, pred_v = split_masks(32, 12, 10, batch, seed=2)  # video: 2 x 4 x 4 tokens
    return [
        ClipGroup(torch.randn(batch, 3, IMG, IMG), [([enc_i], [pred_i])], [0], modality="image"),
        ClipGroup(torch.randn(batch, 3, FRAMES, IMG, IMG), [([enc_v], [pred_v])], [1], modality="video"),
    ]


DENSE = dict(loss_type="l1", predict_all=True, weight_distance_loss=True, levels=4, normalize_predictor=True,
             context_lambda={"image": 0.7, "video": 0.5}, lambda_progressive=False)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Targets: every level layer-normed on its own


def test_levels_are_layer_normed_one_by_one():
    h = 3 * torch.randn(2, 5, 4 * 8) + 1
    chunks = h.unflatten(-1, (4, 8))
    mean = chunks.mean(dim=-1, keepdim=True)
    var = chunks.var(dim=-1, unbiased=False, keepdim=True)
    expected = ((chunks - mean) / torch.sqrt(var + 1e-5)).flatten(-2)
    torch.testing.assert_close(layer_norm_levels(h, 4), expected, rtol=0, atol=1e-5)
    official = torch.cat([F.layer_norm(h[..., 8 * i : 8 * (i + 1)], (8,)) for i in range(4)], dim=-1)
    torch.testing.assert_close(layer_norm_levels(h, 4), official, rtol=0, atol=1e-6)
    assert torch.equal(layer_norm_levels(h, 1), F.layer_norm(h, (32,)))
    with pytest.raises(ValueError, match="levels of equal width"):
        layer_norm_levels(h, 3)


def test_deep_supervised_targets_are_the_target_encoders_four_levels():
    model = JEPA(encoder(), predictor(), **DENSE)
    x = torch.randn(2, 3, FRAMES, IMG, IMG)
    with torch.no_grad():
        raw = model.target_encoder(x, training=True)
    assert raw.shape == (2, 32, 4 * D)
    torch.testing.assert_close(model.targets(x), layer_norm_levels(raw, 4), rtol=0, atol=0)
    assert not torch.allclose(model.targets(x), F.layer_norm(raw, (4 * D,)))


# ----------------------------------------------------------------------------------------------------------------
# Distance weights: the official compute_mask_distance, evaluated directly


def official_distances(enc, pred, grid, offset):
    """Per context token, Python loops: the Euclidean distance on the (t, h, w) grid to the nearest predicted
    token, divided by H // 16 with the offset, then the square root."""
    _, H, W = grid

    def coords(i):
        t, rest = divmod(int(i), H * W)
        return (t, *divmod(rest, W))

    rows = []
    for b in range(enc.shape[0]):
        row = []
        for e in enc[b]:
            d = min(math.dist(coords(e), coords(p)) for p in pred[b])
            if offset:
                d = d * (1.0 / (H // 16))
            row.append(d**0.5)
        rows.append(row)
    return torch.tensor(rows)


@pytest.mark.parametrize(
    "grid, offset", [((2, 4, 5), False), ((1, 6, 6), False), ((1, 32, 32), True), ((2, 16, 20), True)]
)
def test_distance_weights_follow_the_official_definition(grid, offset):
    n = grid[0] * grid[1] * grid[2]
    enc, pred = split_masks(n, n // 3, n // 4, batch=3, seed=n)
    got = context_distances([enc], [pred], grid, offset)
    torch.testing.assert_close(got, official_distances(enc, pred, grid, offset), rtol=0, atol=1e-6)


def test_distance_rows_follow_the_predictors_order_for_several_masks():
    grid = (2, 4, 4)
    enc, pred = split_masks(32, 16, 12, seed=1)  # context masks disjoint from every target mask (I-JEPA's layout)
    enc_a, enc_b, pred_a, pred_b = enc[:, :8], enc[:, 8:], pred[:, :6], pred[:, 6:]
    got = context_distances([enc_a, enc_b], [pred_a, pred_b], grid)
    # Rows: target mask 0 with context masks 0, 1, then target mask 1 with context masks 0, 1 (B rows each).
    pairs = [(enc_a, pred_a), (enc_b, pred_a), (enc_a, pred_b), (enc_b, pred_b)]
    expected = torch.cat([official_distances(e, p, grid, False) for e, p in pairs])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_token_coordinates_are_row_major_on_the_grid():
    ids = torch.tensor([0, 4, 5, 19, 20, 39])
    expected = [[0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 4, 3], [1, 0, 0], [1, 4, 3]]
    assert token_coordinates(ids, (2, 5, 4)).tolist() == expected


def test_overlapping_masks_and_small_offset_grids_are_errors():
    enc = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="overlap"):
        context_distances([enc], [torch.tensor([[2, 7]])], (1, 4, 4))
    with pytest.raises(ValueError, match="lower than 16"):
        context_distances([enc], [torch.tensor([[5, 7]])], (1, 8, 8), offset=True)


# ----------------------------------------------------------------------------------------------------------------
# The context loss and its weight


def test_context_loss_is_the_weighted_power_loss():
    torch.manual_seed(0)
    z, h = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    w = torch.rand(3, 4) + 0.5
    p = 1.5
    total = sum(abs(float(z[r, k, c] - h[r, k, c])) ** p / float(w[r, k]) for r in range(3) for k in range(4)
                for c in range(5))  # fmt: skip
    torch.testing.assert_close(context_loss(z, h, p, w), torch.tensor(total / 60 / p), rtol=1e-6, atol=0)
    plain = sum(abs(float(v)) for v in (z - h).flatten()) / 60
    torch.testing.assert_close(context_loss(z, h), torch.tensor(plain), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.0), (14_999, 0.0), (15_000, 0.0), (15_001, 0.5 / 15_000), (22_500, 0.25), (29_999, 0.5 * 14_999 / 15_000),
     (30_000, 0.5), (10**6, 0.5)],
)  # fmt: skip
def test_lambda_schedule_is_zero_then_linear_then_held(step, expected):
    assert context_lambda_at(step, 0.5, 15_000, 30_000) == pytest.approx(expected, rel=1e-12, abs=0)


def test_lambda_per_modality_progressive_or_constant():
    kwargs = dict(loss_type="l1", predict_all=True, levels=4, context_lambda={"image": 0.7, "video": 0.5})
    ramp = JEPA(encoder(), predictor(), lambda_start=10, lambda_end=20, **kwargs)
    assert [ramp.context_weight(s, "image") for s in (9, 10, 15, 20)] == pytest.approx([0, 0, 0.35, 0.7])
    assert ramp.context_weight(15, "video") == pytest.approx(0.25)
    flat = JEPA(encoder(), predictor(), lambda_progressive=False, **kwargs)
    assert flat.context_weight(0, "image") == 0.7 and flat.context_weight(0, "video") == 0.5
    with pytest.raises(ValueError, match="lambda_end"):
        JEPA(encoder(), predictor(), lambda_start=20, lambda_end=20, **kwargs)
    with pytest.raises(ValueError, match="lambda_end"):
        context_lambda_at(0, 0.5, 5, 5)


# ----------------------------------------------------------------------------------------------------------------
# A tiny V-JEPA 2.1 step: one image group and one video group


def test_image_and_video_step_has_finite_losses_and_reaches_every_2_1_parameter():
    model = JEPA(encoder(), predictor(), **DENSE).train()
    out = model(image_and_video_groups(), step=0)
    assert out.loss_context is not None
    for value in (out.loss, out.loss_pred, out.loss_context):
        assert torch.isfinite(value) and value > 0
    out.loss.backward()
    enc, pred = model.encoder, model.predictor
    reached = {
        "patch_embed_img": enc.patch_embed_img.proj.weight,
        "patch_embed": enc.patch_embed.proj.weight,
        "img_mod_embed": enc.img_mod_embed,
        "video_mod_embed": enc.video_mod_embed,
        "norms_block.0": enc.norms_block[0].weight,
        "predictor_proj_context": pred.predictor_proj_context.weight,
        "predictor img_mod_embed": pred.img_mod_embed,
        "predictor_embed.0": pred.predictor_embed[0].weight,
    }
    for name, param in reached.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.target_encoder.parameters())


def test_dense_loss_equals_the_formula_on_the_models_outputs():
    model = JEPA(encoder(), predictor(), **DENSE).eval()
    groups = image_and_video_groups()
    out = model(groups, step=0)
    pred_terms, ctx_terms, lams = [], [], []
    with torch.no_grad():
        for group in groups:
            grid = model.encoder.input_grid(group.x)
            h = layer_norm_levels(model.target_encoder(group.x, training=True), 4)
            (enc,), (tgt,) = group.mask_sets[0]
            ctx = model.encoder(group.x, [enc], training=True)
            grid_hw = grid[1:] if group.modality == "image" else None
            index = group.mask_indices[0]
            z, zc = model.predictor(ctx, [enc], [tgt], index, group.modality, return_context=True, grid_hw=grid_hw)
            z, zc = layer_norm_levels(z, 4), layer_norm_levels(zc, 4)
            pred_terms.append((z - apply_masks(h, [tgt])).abs().mean())
            w = official_distances(enc, tgt, grid, offset=False)
            ctx_terms.append(((zc - apply_masks(h, [enc])).abs() / w.unsqueeze(-1)).mean())
            lams.append(DENSE["context_lambda"][group.modality])  # type: ignore[index]
    torch.testing.assert_close(out.loss_pred, sum(pred_terms) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.loss_context, sum(ctx_terms) / 2, rtol=0, atol=1e-6)
    expected = out.loss_pred + sum(lam * term for lam, term in zip(lams, ctx_terms)) / 2
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-6)


def test_before_the_ramp_the_context_loss_weighs_nothing_but_is_still_computed():
    model = JEPA(encoder(), predictor(), **{**DENSE, "lambda_progressive": True})
    out = model(image_and_video_groups(), step=100)  # before lambda_start (15000)
    assert out.loss_context is not None and out.loss_context > 0
    torch.testing.assert_close(out.loss, out.loss_pred, rtol=0, atol=0)
    out.loss.backward()  # the context head is in the graph (zero gradient), as DDP needs every step
    assert model.predictor.predictor_proj_context.weight.grad is not None


def test_modality_labels_are_checked():
    with pytest.raises(ValueError, match="'image' or 'video'"):
        ClipGroup(torch.zeros(1, 3, IMG, IMG), [], [], modality="img")  # type: ignore[arg-type]
    model = JEPA(encoder(), predictor(), **DENSE)
    image = image_and_video_groups()[0]
    mislabelled = ClipGroup(image.x, image.mask_sets, image.mask_indices, modality="video")
    with pytest.raises(ValueError, match="tokenizes as 'image'"):
        model([mislabelled])
    # A bare image batch takes the label of the tokenizer that reads it.
    torch.testing.assert_close(model(image.x, image.mask_sets, [0]).loss, model([image]).loss)


def test_inconsistent_options_are_errors():
    with pytest.raises(ValueError, match="return_all_tokens"):
        JEPA(encoder(), predictor(return_all_tokens=False), predict_all=True)
    with pytest.raises(ValueError, match="set predict_all"):
        JEPA(encoder(), predictor(), weight_distance_loss=True)
    with pytest.raises(ValueError, match="set predict_all"):
        JEPA(encoder(), predictor(), context_lambda={"video": 0.5})
    with pytest.raises(ValueError, match="unknown modalities"):
        JEPA(encoder(), predictor(), predict_all=True, context_lambda={"vid": 0.5})
    with pytest.raises(ValueError, match="needs weight_distance_loss"):
        JEPA(encoder(), predictor(), predict_all=True, offset_context_loss=True)
    with pytest.raises(ValueError, match="must agree"):
        JEPA(encoder(), predictor(), levels=2)
    with pytest.raises(ValueError, match="must agree"):
        JEPA(encoder(), predictor())  # a four-level predictor, levels=1
    with pytest.raises(ValueError, match="must agree"):
        JEPA(encoder(deep_supervision=False, hierarchical_layers=None), predictor(), levels=4)


# ----------------------------------------------------------------------------------------------------------------
# Distillation: targets from a frozen teacher


def teacher_model() -> VisionTransformer:
    return encoder(embed_dim=64).eval()


def test_teacher_supplies_the_targets_not_the_target_encoder():
    torch.manual_seed(5)
    teacher = teacher_model()
    model = JEPA(encoder(), predictor(teacher_embed_dim=4 * 64), teacher=teacher, **DENSE).train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    groups = image_and_video_groups()
    with torch.no_grad():
        before = model(groups)
        perturbed(model.target_encoder)
        after = model(groups)
    assert torch.equal(before.loss, after.loss) and torch.equal(before.loss_context, after.loss_context)
    with torch.no_grad():
        perturbed(model.teacher)
        assert not torch.isclose(model(groups).loss, before.loss)
    out = model(groups)
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert out.target_pooled.shape == (4, D) and out.position_share is None  # the student's tokens, both groups
    # The EMA target encoder still follows the encoder (checkpoints keep it).
    ema = [p.clone() for p in model.target_encoder.parameters()]
    model.update_target(0.5)
    assert any(not torch.equal(a, b) for a, b in zip(ema, model.target_encoder.parameters()))


def test_teacher_width_and_target_mode_are_checked():
    with pytest.raises(ValueError, match="teacher_embed_dim=256"):
        JEPA(encoder(), predictor(), teacher=teacher_model(), **DENSE)
    with pytest.raises(ValueError, match="target='ema'"):
        JEPA(encoder(), predictor(teacher_embed_dim=256), teacher=teacher_model(), target="online_stopgrad", **DENSE)


# ----------------------------------------------------------------------------------------------------------------
# Defaults: the V-JEPA loss as before


def test_defaults_leave_the_vjepa_loss_unchanged():
    torch.manual_seed(0)
    grid = dict(img_size=IMG, patch_size=PATCH, num_frames=FRAMES, use_rope=True)
    enc = perturbed(VisionTransformer(embed_dim=D, depth=2, num_heads=4, **grid))
    pred = perturbed(VisionTransformerPredictor(embed_dim=D, predictor_embed_dim=24, depth=2, num_heads=2, **grid))
    plain = JEPA(enc, pred, loss_type="l1", reg_coeff=0.1)
    defaults = dict(predict_all=False, weight_distance_loss=False, offset_context_loss=False, lambda_progressive=True,
                    context_lambda={"image": 0.0, "video": 0.0}, lambda_start=15000, lambda_end=30000, levels=1,
                    normalize_predictor=False, teacher=None)  # fmt: skip
    explicit = JEPA(enc, pred, loss_type="l1", reg_coeff=0.1, **defaults)
    explicit.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, FRAMES, IMG, IMG)
    enc_m, pred_m = split_masks(32, 12, 10)
    out = plain(x, [([enc_m], [pred_m])])
    with torch.no_grad():
        h = F.layer_norm(plain.target_encoder(x), (D,))
        z = pred(enc(x, [enc_m]), [enc_m], [pred_m], mask_index=0)
        expected = (z - apply_masks(h, [pred_m])).abs().mean()
    assert torch.equal(out.loss_pred.detach(), expected)
    assert out.loss_context is None
    again = explicit(x, [([enc_m], [pred_m])])
    assert torch.equal(out.loss, again.loss) and torch.equal(out.target_pooled, again.target_pooled)
