"""Encoder, predictor and attentive probe: shapes, equivalences between options, gradients, factory sizes."""

import copy
import math

import pytest
import torch
from conftest import (
    EMBED_DIM,
    FRAMES,
    NUM_HEADS,
    PRED_DIM,
    TUBELET,
    grid_of,
    make_classifier,
    make_encoder,
    make_input,
    make_predictor,
    num_tokens,
    perturb_,
    random_mask,
)

from jepa.models import (
    VIT_SIZES,
    AttentiveClassifier,
    AttentivePooler,
    VisionTransformer,
    VisionTransformerPredictor,
    vit_base,
    vit_giant_xformers,
    vit_gigantic,
    vit_gigantic_xformers,
    vit_huge,
    vit_large,
    vit_predictor,
    vit_small,
)


def clone_with(model: torch.nn.Module, builder, **kwargs) -> torch.nn.Module:
    """A model built by ``builder(**kwargs)`` carrying ``model``'s weights (strict load)."""
    other = builder(**kwargs)
    other.load_state_dict(model.state_dict(), strict=True)
    return other.train(model.training)


# ================================================================================================================
# Encoder


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_encoder_shapes(num_frames, use_rope):
    enc = make_encoder(num_frames, use_rope=use_rope).eval()
    x = make_input(num_frames, batch=3)
    n = num_tokens(num_frames)
    with torch.no_grad():
        assert enc(x).shape == (3, n, EMBED_DIM)
        m = random_mask(3, n, 5)
        assert enc(x, masks=m).shape == (3, 5, EMBED_DIM)
        masks = [random_mask(3, n, 5) for _ in range(3)]
        assert enc(x, masks=masks).shape == (9, 5, EMBED_DIM)
        assert enc(x, masks=tuple(masks)).shape == (9, 5, EMBED_DIM)


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_encoder_non_square_construction(num_frames, use_rope):
    enc = make_encoder(num_frames, img_size=(32, 48), use_rope=use_rope).eval()
    assert enc.grid == grid_of(num_frames, (32, 48))
    x = make_input(num_frames, img_size=(32, 48))
    n = num_tokens(num_frames, (32, 48))
    if not use_rope:
        assert enc.pos_embed.shape == (1, n, EMBED_DIM)
        tokens, _ = enc.prepare_tokens(x)
        torch.testing.assert_close(tokens - enc.patch_embed(x), enc.pos_embed.expand(2, -1, -1), atol=1e-6, rtol=0)
    with torch.no_grad():
        assert enc(x).shape == (2, n, EMBED_DIM)
        assert enc(x, masks=[random_mask(2, n, 7)] * 2).shape == (4, 7, EMBED_DIM)


def test_encoder_img_size_forms_agree():
    assert make_encoder(1, img_size=[32]).grid == make_encoder(1, img_size=32).grid == (1, 4, 4)
    assert make_encoder(1, img_size=(32, 48)).grid == (1, 4, 6)
    with pytest.raises(ValueError):
        make_encoder(1, img_size=(32, 32, 32))


def test_encoder_rejects_wrong_input_rank(num_frames):
    enc = make_encoder(num_frames)
    bad = torch.randn(2, 3, 32) if num_frames > 1 else torch.randn(2, 3, 4, 32, 32)
    with pytest.raises(ValueError):
        enc(bad)


def test_image_encoder_accepts_single_frame_clip():
    enc = make_encoder(1).eval()
    x = make_input(1)
    with torch.no_grad():
        torch.testing.assert_close(enc(x.unsqueeze(2)), enc(x), atol=0, rtol=0)


def test_out_layers(num_frames):
    torch.manual_seed(1)
    enc = perturb_(make_encoder(num_frames, depth=3, out_layers=[0, 2])).eval()
    x = make_input(num_frames)
    with torch.no_grad():
        outs = enc(x)
        assert isinstance(outs, list) and len(outs) == 2
        tokens, _ = enc.prepare_tokens(x)
        h0 = enc.blocks[0](tokens)
        h2 = enc.blocks[2](enc.blocks[1](h0))
        torch.testing.assert_close(outs[0], enc.norm(h0), atol=1e-6, rtol=0)
        torch.testing.assert_close(outs[1], enc.norm(h2), atol=1e-6, rtol=0)
        # normed: each token is a LayerNorm output (mean of (out - bias) / weight is 0, its variance 1)
        z = (outs[0] - enc.norm.bias) / enc.norm.weight
        torch.testing.assert_close(z.mean(-1), torch.zeros(z.shape[:-1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(z.shape[:-1]), atol=1e-3, rtol=0)

        last = clone_with(enc, make_encoder, num_frames=num_frames, depth=3, out_layers=[2])
        plain = clone_with(enc, make_encoder, num_frames=num_frames, depth=3)
        (only,) = last(x)
        torch.testing.assert_close(only, plain(x), atol=0, rtol=0)
        # with masks as well
        m = random_mask(2, num_tokens(num_frames), 5)
        torch.testing.assert_close(last(x, masks=m)[0], plain(x, masks=m), atol=0, rtol=0)


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_video_encoder_on_image_equals_static_clip(use_rope):
    enc = make_encoder(FRAMES, use_rope=use_rope).eval()
    img = torch.randn(2, 3, 32, 32)
    clip = img.unsqueeze(2).repeat(1, 1, TUBELET, 1, 1)
    with torch.no_grad():
        out = enc(img)
        assert out.shape == (2, 16, EMBED_DIM)
        torch.testing.assert_close(out, enc(clip), atol=1e-6, rtol=0)
        m = random_mask(2, 16, 4)
        torch.testing.assert_close(enc(img, masks=m), enc(clip, masks=m), atol=1e-6, rtol=0)


def test_depth0_encoder_is_norm_of_positioned_patches(num_frames):
    enc = make_encoder(num_frames, depth=0)
    x = make_input(num_frames)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc.norm(enc.patch_embed(x) + enc.pos_embed), atol=1e-6, rtol=0)


# ================================================================================================================
# Predictor


def predictor_inputs(num_frames: int, batch: int = 2, k_ctxt: int = 6, k_tgt: int = 4, n_tgt: int = 1):
    n = num_tokens(num_frames)
    perm = torch.stack([torch.randperm(n) for _ in range(batch)])
    ctxt_mask = perm[:, :k_ctxt]
    tgt_masks = [perm[:, k_ctxt + j * k_tgt : k_ctxt + (j + 1) * k_tgt] for j in range(n_tgt)]
    ctxt = torch.randn(batch, k_ctxt, EMBED_DIM)
    return ctxt, ctxt_mask, tgt_masks


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_predictor_one_pair_shape(num_frames, use_rope):
    pred = make_predictor(num_frames, use_rope=use_rope).eval()
    ctxt, mc, (mt,) = predictor_inputs(num_frames, k_ctxt=7, k_tgt=3)
    with torch.no_grad():
        out = pred(ctxt, mc, mt)
    assert out.shape == (2, 3, EMBED_DIM)
    with torch.no_grad():
        assert pred(ctxt, [mc], [mt]).shape == (2, 3, EMBED_DIM)
        torch.testing.assert_close(pred(ctxt, [mc], [mt]), out, atol=0, rtol=0)


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_predictor_several_targets_ijepa_order(num_frames, use_rope):
    pred = perturb_(make_predictor(num_frames, use_rope=use_rope)).eval()
    ctxt, mc, tgts = predictor_inputs(num_frames, k_ctxt=4, k_tgt=4, n_tgt=3)
    with torch.no_grad():
        out = pred(ctxt, [mc], tgts)
        assert out.shape == (3 * 2, 4, EMBED_DIM)
        for j, mt in enumerate(tgts):
            torch.testing.assert_close(out[2 * j : 2 * j + 2], pred(ctxt, mc, mt), atol=1e-5, rtol=1e-5)
        # the three targets really are different predictions
        assert not torch.allclose(out[0:2], out[2:4], atol=1e-4)


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_predictor_several_contexts_and_targets_order(num_frames, use_rope):
    # [M_t * M_c * B]: for target mask 0 every context chunk, then target mask 1, ...
    pred = perturb_(make_predictor(num_frames, use_rope=use_rope)).eval()
    n = num_tokens(num_frames)
    B = 2
    mcs = [random_mask(B, n, 5), random_mask(B, n, 5)]
    mts = [random_mask(B, n, 3), random_mask(B, n, 3), random_mask(B, n, 3)]
    ctxt = torch.randn(2 * B, 5, EMBED_DIM)
    with torch.no_grad():
        out = pred(ctxt, mcs, mts)
        assert out.shape == (3 * 2 * B, 3, EMBED_DIM)
        for j, mt in enumerate(mts):
            for c, mc in enumerate(mcs):
                start = (j * len(mcs) + c) * B
                want = pred(ctxt[c * B : (c + 1) * B], mc, mt)
                torch.testing.assert_close(out[start : start + B], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_predictor_target_permutation_permutes_outputs(num_frames, use_rope):
    pred = perturb_(make_predictor(num_frames, use_rope=use_rope)).eval()
    ctxt, mc, (mt,) = predictor_inputs(num_frames, k_tgt=5)
    perm = torch.randperm(5)
    with torch.no_grad():
        torch.testing.assert_close(pred(ctxt, mc, mt[:, perm]), pred(ctxt, mc, mt)[:, perm], atol=1e-5, rtol=1e-5)


def test_predictor_square_rope_grid(num_frames):
    # square_rope_grid=True decodes RoPE positions on an H x H grid (as the released predictor does); that only
    # matters for non-square grids.
    for img_size, same in ((32, True), ((32, 48), False)):
        a = perturb_(make_predictor(num_frames, img_size=img_size, use_rope=True)).eval()
        b = clone_with(
            a, make_predictor, num_frames=num_frames, img_size=img_size, use_rope=True, square_rope_grid=False
        )
        n = num_tokens(num_frames, img_size)
        mc, mt = random_mask(2, n, 8), random_mask(2, n, 6)
        ctxt = torch.randn(2, 8, EMBED_DIM)
        with torch.no_grad():
            out_a, out_b = a(ctxt, mc, mt), b(ctxt, mc, mt)
        if same:
            torch.testing.assert_close(out_a, out_b, atol=0, rtol=0)
        else:
            assert not torch.allclose(out_a, out_b, atol=1e-4)


def test_predictor_mask_index_selects_mask_token(num_frames):
    pred = perturb_(make_predictor(num_frames, num_mask_tokens=2)).eval()
    ctxt, mc, (mt,) = predictor_inputs(num_frames)
    with torch.no_grad():
        before = [pred(ctxt, mc, mt, mask_index=i) for i in range(4)]
        # a random change (a constant shift of every channel would be removed by the LayerNorms)
        pred.mask_tokens[1].add_(torch.randn(PRED_DIM))
        after = [pred(ctxt, mc, mt, mask_index=i) for i in range(4)]
    # only the calls using mask_tokens[1] (index 1, and 3 modulo 2) change
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)
    torch.testing.assert_close(after[2], before[2], atol=0, rtol=0)
    assert not torch.allclose(after[1], before[1], atol=1e-4)
    torch.testing.assert_close(after[3], after[1], atol=0, rtol=0)
    torch.testing.assert_close(before[3], before[1], atol=0, rtol=0)


def test_predictor_context_values_matter(num_frames):
    pred = perturb_(make_predictor(num_frames)).eval()
    ctxt, mc, (mt,) = predictor_inputs(num_frames)
    with torch.no_grad():
        assert not torch.allclose(pred(ctxt, mc, mt), pred(ctxt + 1.0, mc, mt), atol=1e-4)


def test_predictor_ijepa_construction():
    pred = VisionTransformerPredictor(
        num_patches=16, patch_size=8, embed_dim=EMBED_DIM, predictor_embed_dim=PRED_DIM, depth=1, num_heads=NUM_HEADS
    )
    assert pred.grid == (1, 4, 4)
    assert pred.num_patches == 16
    assert pred.predictor_pos_embed.shape == (1, 16, PRED_DIM)
    ctxt, mc, (mt,) = predictor_inputs(1)
    assert pred(ctxt, mc, mt).shape == (2, 4, EMBED_DIM)
    with pytest.raises(ValueError):
        VisionTransformerPredictor(
            num_patches=15,
            patch_size=8,
            embed_dim=EMBED_DIM,
            predictor_embed_dim=PRED_DIM,
            depth=1,
            num_heads=NUM_HEADS,
        )


def test_predictor_rejects_unsupported_options():
    with pytest.raises(ValueError):
        make_predictor(1, use_mask_tokens=False)
    with pytest.raises(ValueError):
        make_predictor(1, num_mask_tokens=0)


def test_predictor_loads_ijepa_mask_token_key():
    src = make_predictor(1)
    sd = src.state_dict()
    token = torch.randn(1, 1, PRED_DIM)
    del sd["mask_tokens.0"]
    sd["mask_token"] = token
    dst = make_predictor(1, num_mask_tokens=1)
    dst.load_state_dict(sd, strict=True)
    assert torch.equal(dst.mask_tokens[0].detach(), token)
    assert "mask_token" in sd  # the caller's dict is left alone


def test_predictor_zero_init_mask_tokens_flag():
    assert all(torch.count_nonzero(t) == 0 for t in make_predictor(1, num_mask_tokens=2).mask_tokens)
    assert all(
        torch.count_nonzero(t) > 0
        for t in make_predictor(1, num_mask_tokens=2, zero_init_mask_tokens=False).mask_tokens
    )


# ================================================================================================================
# Attentive pooler and probe


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("complete_block", [True, False])
def test_pooler_shapes(depth, complete_block):
    pool = AttentivePooler(
        num_queries=4, embed_dim=EMBED_DIM, num_heads=NUM_HEADS, depth=depth, complete_block=complete_block
    )
    assert pool(torch.randn(3, 10, EMBED_DIM)).shape == (3, 4, EMBED_DIM)
    assert (pool.blocks is None) == (depth == 1)


def test_classifier_shape():
    clf = make_classifier(num_classes=7, depth=2)
    assert clf(torch.randn(3, 10, EMBED_DIM)).shape == (3, 7)


def test_pooler_block_order(num_frames):
    # depth 4: blocks over the tokens before the cross-attention (default) differ from blocks over the queries
    torch.manual_seed(3)
    a = perturb_(make_classifier(depth=4)).eval()
    b = clone_with(a, make_classifier, depth=4, blocks_on_queries=True)
    x = torch.randn(2, 12, EMBED_DIM)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x), atol=1e-4)
        # the default order is exactly: blocks(tokens) -> cross-attention
        toks = x
        for blk in a.pooler.blocks:
            toks = blk(toks)
        q = a.pooler.cross_attention_block(a.pooler.query_tokens.expand(2, -1, -1), toks)
        torch.testing.assert_close(a(x), a.linear(q.squeeze(1)), atol=1e-6, rtol=0)
    # depth 1: nothing to reorder
    c = perturb_(make_classifier(depth=1)).eval()
    d = clone_with(c, make_classifier, depth=1, blocks_on_queries=True)
    with torch.no_grad():
        torch.testing.assert_close(c(x), d(x), atol=0, rtol=0)


def test_classifier_ignores_vjepa1_xattn_proj():
    clf = perturb_(make_classifier()).eval()
    x = torch.randn(2, 9, EMBED_DIM)
    with torch.no_grad():
        want = clf(x)
    sd = clf.state_dict()
    sd["pooler.cross_attention_block.xattn.proj.weight"] = torch.randn(EMBED_DIM, EMBED_DIM)
    sd["pooler.cross_attention_block.xattn.proj.bias"] = torch.randn(EMBED_DIM)
    other = make_classifier()
    other.load_state_dict(sd, strict=True)
    assert not hasattr(other.pooler.cross_attention_block.xattn, "proj")
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(x), want, atol=0, rtol=0)


def test_pooler_query_tokens_are_mixed_by_input():
    pool = AttentivePooler(num_queries=2, embed_dim=EMBED_DIM, num_heads=NUM_HEADS).eval()
    x = torch.randn(2, 10, EMBED_DIM)
    with torch.no_grad():
        out = pool(x)
        # permuting the tokens does not change attention pooling
        torch.testing.assert_close(pool(x[:, torch.randperm(10)]), out, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(pool(x + torch.randn_like(x)), out, atol=1e-4)


# ================================================================================================================
# SDPA vs. written-out attention


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_sdpa_matches_explicit_attention_encoder(num_frames, use_rope):
    a = perturb_(make_encoder(num_frames, use_rope=use_rope, use_sdpa=True)).eval()
    b = clone_with(a, make_encoder, num_frames=num_frames, use_rope=use_rope, use_sdpa=False)
    x = make_input(num_frames)
    m = [random_mask(2, num_tokens(num_frames), 6)] * 2
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(a(x, masks=m), b(x, masks=m), atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_sdpa_matches_explicit_attention_predictor(num_frames, use_rope):
    a = perturb_(make_predictor(num_frames, use_rope=use_rope, use_sdpa=True)).eval()
    b = clone_with(a, make_predictor, num_frames=num_frames, use_rope=use_rope, use_sdpa=False)
    ctxt, mc, tgts = predictor_inputs(num_frames, n_tgt=2)
    with torch.no_grad():
        torch.testing.assert_close(a(ctxt, mc, tgts), b(ctxt, mc, tgts), atol=1e-5, rtol=0)


@pytest.mark.parametrize("depth", [1, 3])
def test_sdpa_matches_explicit_attention_classifier(depth):
    a = perturb_(make_classifier(depth=depth, use_sdpa=True)).eval()
    b = clone_with(a, make_classifier, depth=depth, use_sdpa=False)
    x = torch.randn(3, 10, EMBED_DIM)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)


# ================================================================================================================
# Gradients (every trainable parameter is used)


def assert_all_grads(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None and not p.grad.any()]
    assert not missing, f"no gradient for {missing}"
    assert not zero, f"zero gradient for {zero}"


def weighted_sum(out: torch.Tensor) -> torch.Tensor:
    # A plain sum of LayerNorm outputs is constant in the inputs at init (unit weight, zero bias), so the outputs
    # are summed with fixed random weights.
    g = torch.Generator().manual_seed(123)
    return (out * torch.randn(out.shape, generator=g)).sum()


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_encoder_all_params_get_grads(num_frames, use_rope):
    enc = make_encoder(num_frames, use_rope=use_rope, drop_path_rate=0.1).train()
    weighted_sum(enc(make_input(num_frames))).backward()
    assert_all_grads(enc)
    if not use_rope:
        assert not enc.pos_embed.requires_grad and enc.pos_embed.grad is None


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_predictor_all_params_get_grads(num_frames, use_rope):
    pred = make_predictor(num_frames, use_rope=use_rope).train()
    ctxt, mc, tgts = predictor_inputs(num_frames, n_tgt=2)
    weighted_sum(pred(ctxt, mc, tgts)).backward()
    assert_all_grads(pred)


def test_predictor_unused_mask_token_gets_no_grad():
    pred = make_predictor(1, num_mask_tokens=3).train()
    ctxt, mc, (mt,) = predictor_inputs(1)
    weighted_sum(pred(ctxt, mc, mt, mask_index=1)).backward()
    assert pred.mask_tokens[1].grad is not None and pred.mask_tokens[1].grad.any()
    assert pred.mask_tokens[0].grad is None and pred.mask_tokens[2].grad is None


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("blocks_on_queries", [False, True])
def test_classifier_all_params_get_grads(depth, blocks_on_queries):
    clf = make_classifier(depth=depth, blocks_on_queries=blocks_on_queries).train()
    clf(torch.randn(3, 10, EMBED_DIM)).sum().backward()
    assert_all_grads(clf)


# ================================================================================================================
# Activation checkpointing and stochastic depth


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_run(a, b, run):
    torch.manual_seed(7)
    out_a = run(a)
    weighted_sum(out_a).backward()
    torch.manual_seed(7)
    out_b = run(b)
    weighted_sum(out_b).backward()
    torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=0)
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_activation_checkpointing_encoder(num_frames, use_rope):
    # train mode with stochastic depth: recomputation must replay the same random drops
    a = make_encoder(num_frames, use_rope=use_rope, drop_path_rate=0.3).train()
    b = clone_with(
        a, make_encoder, num_frames=num_frames, use_rope=use_rope, drop_path_rate=0.3, use_activation_checkpointing=True
    )
    x = make_input(num_frames)
    m = random_mask(2, num_tokens(num_frames), 6)
    _assert_same_run(a, b, lambda mdl: mdl(x, masks=m))


@pytest.mark.parametrize("use_rope", [False, True], ids=["sincos", "rope"])
def test_activation_checkpointing_predictor(num_frames, use_rope):
    a = make_predictor(num_frames, use_rope=use_rope).train()
    b = clone_with(a, make_predictor, num_frames=num_frames, use_rope=use_rope, use_activation_checkpointing=True)
    ctxt, mc, tgts = predictor_inputs(num_frames, n_tgt=2)
    _assert_same_run(a, b, lambda mdl: mdl(ctxt, mc, tgts))


def test_activation_checkpointing_classifier():
    a = make_classifier(depth=3).train()
    b = clone_with(a, make_classifier, depth=3, use_activation_checkpointing=True)
    x = torch.randn(2, 10, EMBED_DIM)
    _assert_same_run(a, b, lambda mdl: mdl(x))


def test_drop_path_train_vs_eval(num_frames):
    enc = make_encoder(num_frames, drop_path_rate=0.5)
    x = make_input(num_frames, batch=4)
    enc.train()
    with torch.no_grad():
        assert not torch.allclose(enc(x), enc(x))
    enc.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc(x), atol=0, rtol=0)


def test_drop_path_rates_increase_linearly():
    enc = make_encoder(1, depth=3, drop_path_rate=0.4)
    assert isinstance(enc.blocks[0].drop_path, torch.nn.Identity)  # rate 0 for the first block
    assert [blk.drop_path.drop_prob for blk in enc.blocks[1:]] == pytest.approx([0.2, 0.4])


# ================================================================================================================
# Factories: sizes and parameter counts


def vit_param_count(D, depth, mlp_ratio, in_chans, tubelet, patch, n_tokens):
    """Count from the formula: blocks, patch embedding, position table, final norm."""
    H = int(D * mlp_ratio)
    attn = (3 * D * D + 3 * D) + (D * D + D)
    mlp = (D * H + H) + (H * D + D)
    norms = 2 * (2 * D)
    block = attn + mlp + norms
    patch_embed = D * in_chans * tubelet * patch * patch + D
    return depth * block + patch_embed + n_tokens * D + 2 * D


class _CpuLinspaceTorch:
    """Stands in for the ``torch`` module inside the model modules: same attributes, but ``linspace`` is computed
    on the CPU. (The global ``torch.linspace`` is not patched: torch caches its set of factory functions.)"""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def linspace(*args, **kwargs):
        if kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        return torch.linspace(*args, **kwargs)


@pytest.fixture
def meta_build(monkeypatch):
    """Build models on the meta device (no memory, no init cost).

    The constructors turn ``torch.linspace(...)`` into a Python list (the stochastic-depth rates), which a meta
    tensor cannot do; that one call is computed on the CPU here (see test_factories_build_on_meta_device).
    """
    import jepa.models.predictor
    import jepa.models.vision_transformer

    for module in (jepa.models.vision_transformer, jepa.models.predictor):
        monkeypatch.setattr(module, "torch", _CpuLinspaceTorch())

    def build(factory, **kwargs):
        with torch.device("meta"):
            return factory(**kwargs)

    return build


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_vit_large_video_param_count(meta_build):
    m = meta_build(vit_large, img_size=224, num_frames=16)
    assert m.pos_embed.device.type == "meta"
    n = n_params(m)
    assert n == vit_param_count(1024, 24, 4.0, 3, 2, 16, 8 * 14 * 14)
    assert n == 305_490_944
    assert round(n / 1e6, 1) == 305.5


@pytest.mark.parametrize(
    "factory,kwargs,n_tokens,tubelet",
    [
        (vit_small, dict(img_size=224), 14 * 14, 1),
        (vit_base, dict(img_size=224), 14 * 14, 1),
        (vit_huge, dict(img_size=224, num_frames=16), 8 * 14 * 14, 2),
        (vit_giant_xformers, dict(img_size=256, num_frames=16), 8 * 16 * 16, 2),
        (vit_gigantic, dict(img_size=(224, 448)), 14 * 28, 1),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_factory_param_counts(meta_build, factory, kwargs, n_tokens, tubelet):
    cfg = VIT_SIZES[factory.__name__]
    m = meta_build(factory, **kwargs)
    want = vit_param_count(cfg["embed_dim"], cfg["depth"], cfg["mlp_ratio"], 3, tubelet, 16, n_tokens)
    assert n_params(m) == want


def test_factory_sizes(meta_build):
    g = meta_build(vit_giant_xformers)
    assert (g.embed_dim, len(g.blocks), g.num_heads) == (1408, 40, 22)
    assert g.blocks[0].attn.num_heads == 22
    assert g.blocks[0].mlp.fc1.out_features == 6144
    gg = meta_build(vit_gigantic)
    assert (gg.embed_dim, len(gg.blocks), gg.num_heads) == (1664, 48, 16)
    assert gg.blocks[0].attn.num_heads == 16
    assert gg.blocks[0].mlp.fc1.out_features == 8192
    ggx = meta_build(vit_gigantic_xformers)
    assert ggx.blocks[0].attn.num_heads == 26 and ggx.blocks[0].mlp.fc1.out_features == 8192
    large = meta_build(vit_large)
    assert large.patch_size == 16 and large.blocks[0].attn.qkv.bias is not None
    assert large.norm.eps == 1e-6 and large.blocks[0].norm1.eps == 1e-6


def test_factories_build_on_meta_device():
    """Models should be constructible under ``torch.device('meta')`` (deferred init / cheap size inspection).

    Exposes a library bug: ``torch.linspace(0, drop_path_rate, depth).tolist()`` in the constructors of
    VisionTransformer and VisionTransformerPredictor reads a meta tensor and raises NotImplementedError.
    """
    with torch.device("meta"):
        enc = vit_small(img_size=32)
        pred = vit_predictor(img_size=32, embed_dim=384, predictor_embed_dim=192, depth=2, num_heads=6)
    assert enc.pos_embed.device.type == "meta"
    assert pred.predictor_embed.weight.device.type == "meta"


def test_factory_rejects_size_override():
    with pytest.raises(TypeError):
        vit_large(embed_dim=512)


# ================================================================================================================
# Misspelt keywords fail loudly


@pytest.mark.parametrize(
    "build",
    [
        lambda: VisionTransformer(mpl_ratio=4),
        lambda: vit_large(mpl_ratio=4),
        lambda: VisionTransformerPredictor(use_SiLU=True),
        lambda: vit_predictor(use_SiLU=True),
        lambda: AttentiveClassifier(foo=1),
        lambda: AttentivePooler(foo=1),
    ],
    ids=[
        "VisionTransformer",
        "vit_large",
        "VisionTransformerPredictor",
        "vit_predictor",
        "AttentiveClassifier",
        "AttentivePooler",
    ],
)
def test_misspelt_keyword_raises_type_error(build):
    with pytest.raises(TypeError):
        build()


# ================================================================================================================
# Misc options


def test_swiglu_encoder(num_frames):
    enc = make_encoder(num_frames, use_silu=True)
    fc = enc.blocks[0].mlp
    hidden = (int(2 * 4 * EMBED_DIM / 3) + 7) // 8 * 8  # 2/3 of the nominal width, rounded up to 8
    assert (fc.fc1.out_features, fc.fc2.out_features, fc.fc3.in_features) == (hidden, hidden, hidden)
    narrow = make_encoder(num_frames, use_silu=True, wide_silu=False)
    assert narrow.blocks[0].mlp.fc1.out_features == 4 * EMBED_DIM
    x = make_input(num_frames)
    with torch.no_grad():
        assert enc(x).shape == (2, num_tokens(num_frames), EMBED_DIM)


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError):
        make_encoder(1, num_heads=5)


def test_eval_is_deterministic_and_batch_independent(num_frames):
    enc = perturb_(make_encoder(num_frames)).eval()
    x = make_input(num_frames, batch=3)
    with torch.no_grad():
        full = enc(x)
        torch.testing.assert_close(enc(x[1:2]), full[1:2], atol=1e-5, rtol=1e-5)


def test_deepcopy_keeps_outputs(num_frames):
    enc = make_encoder(num_frames).eval()
    x = make_input(num_frames)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(enc)(x), enc(x), atol=0, rtol=0)


def test_head_dim_and_token_counts():
    enc = make_encoder(FRAMES, img_size=(32, 48))
    assert enc.head_dim == EMBED_DIM // NUM_HEADS
    assert enc.num_patches == math.prod(grid_of(FRAMES, (32, 48))) == 2 * 4 * 6


def test_attention_mask_is_an_option_of_the_shared_attention():
    """A boolean mask (True: may attend): SDPA and the written-out path agree, an all-True mask changes nothing,
    and a token that may attend only to itself gets its own value projection back."""
    from jepa.models.layers import Attention

    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    sdpa, explicit = Attention(16, 4, use_sdpa=True).eval(), Attention(16, 4, use_sdpa=False).eval()
    explicit.load_state_dict(sdpa.state_dict())
    mask = torch.tril(torch.ones(5, 5, dtype=torch.bool))
    assert torch.allclose(sdpa(x, attn_mask=mask), explicit(x, attn_mask=mask), atol=1e-6)
    assert torch.allclose(sdpa(x, attn_mask=torch.ones(5, 5, dtype=torch.bool)), sdpa(x), atol=1e-6)
    assert not torch.allclose(sdpa(x, attn_mask=mask), sdpa(x), atol=1e-3)
    v = sdpa.qkv(x)[..., 32:]
    assert torch.allclose(sdpa(x, attn_mask=mask)[:, 0], sdpa.proj(v[:, 0]), atol=1e-6)
