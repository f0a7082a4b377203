"""jepa.convert: our / official checkpoints to Hugging Face transformers folders and back.

Every tensor is mapped by name (the round trip is bit-identical, the loading report of ``from_pretrained`` is empty),
transformers' forward on converted weights equals ours, and models that transformers itself builds and saves convert
to ours with the same outputs. Tests that run transformers skip when it is not installed; the config checks do not
need it.
"""

import dataclasses
import json
from functools import partial

import pytest
import safetensors.torch
import torch
from conftest import (
    EMBED_DIM,
    NUM_HEADS,
    make_classifier,
    make_encoder,
    make_input,
    make_predictor,
    perturb_,
)
from torch import nn

import jepa.hub
from jepa.checkpoint import load_classifier, load_encoder, load_predictor, read_checkpoint, save_checkpoint
from jepa.convert import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ConversionError,
    from_transformers,
    main,
    spec_from_transformers,
    to_transformers,
    transformers_config,
)
from jepa.masks import apply_masks

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = 4
LN6 = partial(nn.LayerNorm, eps=1e-6)  # transformers has one layer_norm_eps (the released encoders' 1e-6)


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers")


def vjepa2_models(num_mask_tokens: int = 3, probe_depth: int = 2):
    """A perturbed tiny V-JEPA 2 encoder (RoPE, video), its predictor and a V-JEPA 2-style probe (blocks over the
    tokens), all with LayerNorm eps 1e-6, in eval mode."""
    enc = perturb_(make_encoder(FRAMES, use_rope=True, norm_layer=LN6)).eval()
    pred = perturb_(make_predictor(FRAMES, use_rope=True, num_mask_tokens=num_mask_tokens, norm_layer=LN6)).eval()
    clf = perturb_(make_classifier(depth=probe_depth, norm_layer=LN6)).eval()
    return enc, pred, clf


def ijepa_encoder(**kwargs):
    return perturb_(make_encoder(1, norm_layer=LN6, **kwargs)).eval()


def to_hf_video(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 1, 3, 4)  # ours [B, C, T, H, W] -> transformers' pixel_values_videos [B, T, C, H, W]


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def masks(n_tokens: int, batch: int = 2):
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(n_tokens, generator=g) for _ in range(batch)])
    return perm[:, :10], perm[:, 10:16]  # disjoint context and target, unsorted


def test_round_trip_is_bit_identical_and_the_tables_split_and_stack(tmp_path):
    enc, pred, clf = vjepa2_models()
    out = to_transformers(tmp_path / "hf", enc, pred, clf, labels=[f"c{i}" for i in range(5)])
    cfg = json.loads((out / CONFIG_NAME).read_text())
    expected = dict(model_type="vjepa2", architectures=["VJEPA2ForVideoClassification"], hidden_size=48,
                    num_hidden_layers=2, num_attention_heads=3, mlp_ratio=4.0, crop_size=32, patch_size=8,
                    frames_per_clip=4, tubelet_size=2, layer_norm_eps=1e-6, qkv_bias=True, pred_hidden_size=24,
                    pred_num_hidden_layers=2, pred_num_attention_heads=3, pred_num_mask_tokens=3, num_pooler_layers=1,
                    hidden_act="gelu")  # fmt: skip
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["id2label"] == {str(i): f"c{i}" for i in range(5)}

    hf_state = safetensors.torch.load_file(out / WEIGHTS_NAME)
    qkv = enc.state_dict()["blocks.1.attn.qkv.weight"]
    for i, name in enumerate(("query", "key", "value")):
        assert torch.equal(hf_state[f"vjepa2.encoder.layer.1.attention.{name}.weight"], qkv[48 * i : 48 * (i + 1)])
    kv = clf.state_dict()["pooler.cross_attention_block.xattn.kv.bias"]
    assert torch.equal(hf_state["pooler.cross_attention_layer.cross_attn.k_proj.bias"], kv[:48])
    assert torch.equal(hf_state["pooler.cross_attention_layer.cross_attn.v_proj.bias"], kv[48:])
    tokens = hf_state["vjepa2.predictor.embeddings.mask_tokens"]
    assert tokens.shape == (3, 1, 1, 24)
    for j in range(3):
        assert torch.equal(tokens[j], pred.mask_tokens[j].detach())

    back = from_transformers(out)
    assert_same_state(back.encoder, enc)
    assert_same_state(back.predictor, pred)
    assert_same_state(back.classifier, clf)
    assert back.labels == [f"c{i}" for i in range(5)]
    assert not back.encoder.training and not any(p.requires_grad for p in back.encoder.parameters())


def test_ijepa_round_trip_is_bit_identical(tmp_path):
    enc = ijepa_encoder(img_size=(32, 48))  # non-square: transformers' image_size [h, w]
    out = to_transformers(tmp_path, enc)
    cfg = json.loads((out / CONFIG_NAME).read_text())
    assert (cfg["model_type"], cfg["image_size"], cfg["intermediate_size"], cfg["layer_norm_eps"]) == (
        "ijepa", [32, 48], 192, 1e-6
    )  # fmt: skip
    assert_same_state(from_transformers(out).encoder, enc)


@torch.no_grad()
def test_transformers_loads_ours_without_missing_keys_and_computes_the_same(tmp_path, hf):
    enc, pred, clf = vjepa2_models()
    x = make_input(FRAMES)
    tokens = enc(x)
    mc, mt = masks(tokens.shape[1])

    to_transformers(tmp_path / "model", enc, pred)
    model, info = hf.VJEPA2Model.from_pretrained(tmp_path / "model", output_loading_info=True)
    assert {k: set(v) for k, v in info.items()} == {k: set() for k in info}
    out = model.eval()(pixel_values_videos=to_hf_video(x), context_mask=[mc], target_mask=[mt])
    torch.testing.assert_close(out.last_hidden_state, tokens, atol=1e-5, rtol=0)
    # transformers' predictor takes the whole clip's tokens at the context positions and mask token 1.
    ours = pred(apply_masks(tokens, [mc]), [mc], [mt], mask_index=1)
    torch.testing.assert_close(out.predictor_output.last_hidden_state, ours, atol=1e-5, rtol=0)
    other_token = pred(apply_masks(tokens, [mc]), [mc], [mt], mask_index=0)
    assert (out.predictor_output.last_hidden_state - other_token).abs().max() > 1e-3

    to_transformers(tmp_path / "probe", enc, pred, clf)
    classifier, info = hf.VJEPA2ForVideoClassification.from_pretrained(tmp_path / "probe", output_loading_info=True)
    assert {k: set(v) for k, v in info.items()} == {k: set() for k in info}
    logits = classifier.eval()(pixel_values_videos=to_hf_video(x)).logits
    torch.testing.assert_close(logits, clf(tokens), atol=1e-5, rtol=0)

    image_encoder = ijepa_encoder()
    to_transformers(tmp_path / "ijepa", image_encoder)
    ijepa, info = hf.IJepaModel.from_pretrained(tmp_path / "ijepa", output_loading_info=True)
    assert {k: set(v) for k, v in info.items()} == {k: set() for k in info}
    images = make_input(1)
    torch.testing.assert_close(ijepa.eval()(pixel_values=images).last_hidden_state, image_encoder(images),
                               atol=1e-5, rtol=0)  # fmt: skip


def perturbed_hf(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def tiny_vjepa2_config(hf, **kwargs):
    return hf.VJEPA2Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=3, crop_size=32, patch_size=8, frames_per_clip=4,
        tubelet_size=2, pred_hidden_size=24, pred_num_hidden_layers=2, pred_num_attention_heads=3,
        pred_num_mask_tokens=3, pred_zero_init_mask_tokens=False, num_pooler_layers=2, **kwargs,
    )  # fmt: skip


@torch.no_grad()
@pytest.mark.parametrize("size", [32, 48], ids=["native", "larger"])
def test_models_built_and_saved_by_transformers_convert_to_ours(tmp_path, hf, size):
    config = tiny_vjepa2_config(hf, num_labels=4, layer_norm_eps=1e-5)
    model = perturbed_hf(hf.VJEPA2ForVideoClassification(config))
    model.save_pretrained(tmp_path / "probe")
    ours = from_transformers(tmp_path / "probe")

    x = make_input(FRAMES, img_size=size)
    tokens = ours.encoder(x)
    mc, mt = masks(tokens.shape[1])
    out = model.vjepa2(pixel_values_videos=to_hf_video(x), context_mask=[mc], target_mask=[mt])
    torch.testing.assert_close(tokens, out.last_hidden_state, atol=1e-5, rtol=0)
    predicted = ours.predictor(apply_masks(tokens, [mc]), [mc], [mt], mask_index=1)
    torch.testing.assert_close(predicted, out.predictor_output.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.classifier(tokens), model(pixel_values_videos=to_hf_video(x)).logits, atol=1e-5,
                               rtol=0)  # fmt: skip
    assert ours.classifier.pooler.cross_attention_block.norm1.eps == 1e-5
    assert ours.spec.encoder.norm_eps == 1e-5 and len(ours.classifier.pooler.blocks) == 2

    # transformers' default layer_norm_eps (1e-12), MLP ratio 2.5, a non-square image.
    config = hf.IJepaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=120,
                            image_size=[32, 48], patch_size=8)  # fmt: skip
    ijepa = perturbed_hf(hf.IJepaModel(config))
    images = torch.randn(2, 3, 32, 48)
    for layout in ("original", "in_memory"):  # what save_pretrained writes, and transformers 5's own names
        folder = tmp_path / f"ijepa_{layout}"
        ijepa.save_pretrained(folder, save_original_format=layout == "original")
        encoder = from_transformers(folder).encoder
        assert encoder.norm.eps == 1e-12
        torch.testing.assert_close(encoder(images), ijepa(pixel_values=images).last_hidden_state, atol=1e-5, rtol=0)


def test_sharded_folders_are_read(tmp_path, hf):
    model = perturbed_hf(hf.VJEPA2Model(tiny_vjepa2_config(hf)))
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / f"{WEIGHTS_NAME}.index.json").is_file() and not (tmp_path / WEIGHTS_NAME).exists()
    ours = from_transformers(tmp_path)
    x = make_input(FRAMES)
    with torch.no_grad():
        torch.testing.assert_close(ours.encoder(x), model.get_vision_features(to_hf_video(x)), atol=1e-5, rtol=0)


def test_official_layout_file_and_command_line(tmp_path, hf, capsys):
    model = perturbed_hf(hf.VJEPA2ForVideoClassification(tiny_vjepa2_config(hf, num_labels=3)))
    model.save_pretrained(tmp_path / "hf")
    assert main(["from-hf", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "x.pth.tar")]) == 0
    assert json.loads(capsys.readouterr().out)["networks"] == ["encoder", "predictor", "classifier"]

    converted = from_transformers(tmp_path / "hf")
    ckpt = read_checkpoint(tmp_path / "x.pth.tar")
    assert {"encoder", "target_encoder", "predictor", "classifiers", "transformers_config"} <= set(ckpt)
    assert_same_state(load_encoder(ckpt, spec=converted.spec.encoder), converted.encoder)
    assert_same_state(load_predictor(ckpt, spec=converted.spec), converted.predictor)
    assert_same_state(load_classifier(ckpt, num_heads=3), converted.classifier)

    # Back to transformers from the file alone (its stored config gives the architecture): the same tensors.
    path = str(tmp_path / "x.pth.tar")
    args = ["--probe", path, "--probe-num-heads", "3", "--probe-eps-from-encoder", "--out", str(tmp_path / "again")]
    assert main(["to-hf", "--checkpoint", path, *args]) == 0
    first = safetensors.torch.load_file(tmp_path / "hf" / WEIGHTS_NAME)
    again = safetensors.torch.load_file(tmp_path / "again" / WEIGHTS_NAME)
    assert sorted(first) == sorted(again) and all(torch.equal(first[k], again[k]) for k in first)


def tiny_release(name: str) -> jepa.hub.Release:
    r = jepa.hub.RELEASES[name]
    return dataclasses.replace(
        r, model_name=None, encoder_extra=dict(embed_dim=EMBED_DIM, depth=2, num_heads=NUM_HEADS), img_size=32,
        num_frames=FRAMES if r.num_frames > 1 else 1,
        predictor={**r.predictor, "predictor_embed_dim": 24, "depth": 1, "num_heads": NUM_HEADS},
    )  # fmt: skip


@pytest.mark.parametrize("name", ["vjepa2_vitl", "ijepa_vith14_in1k"])
def test_command_line_converts_a_release_checkpoint(tmp_path, monkeypatch, hf, name):
    monkeypatch.setitem(jepa.hub.RELEASES, name, tiny_release(name))
    encoder, predictor = jepa.hub.load(name, pretrained=False, with_predictor=True)
    perturb_(encoder), perturb_(predictor)
    path = save_checkpoint(
        {"target_encoder": {f"module.backbone.{k}": v for k, v in encoder.state_dict().items()},
         "predictor": {f"module.{k}": v for k, v in predictor.state_dict().items()}, "epoch": 3},
        tmp_path / "release.pth.tar",
    )  # fmt: skip
    assert main(["to-hf", "--checkpoint", str(path), "--hub", name, "--out", str(tmp_path / "hf")]) == 0
    cls = hf.VJEPA2Model if name.startswith("vjepa2") else hf.IJepaModel
    model, info = cls.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert {k: set(v) for k, v in info.items()} == {k: set() for k in info}
    x = make_input(encoder.num_frames)
    with torch.no_grad():
        got = model.get_vision_features(to_hf_video(x)) if encoder.is_video else model(pixel_values=x).last_hidden_state
        torch.testing.assert_close(got, encoder(x), atol=1e-5, rtol=0)


def test_a_key_left_over_on_either_side_is_an_error_naming_it(tmp_path, hf):
    enc = ijepa_encoder()
    enc.register_parameter("cls_token", nn.Parameter(torch.zeros(1, 1, EMBED_DIM)))
    with pytest.raises(ConversionError, match=r"no transformers counterpart \['cls_token'\]"):
        to_transformers(tmp_path / "a", enc)

    config = hf.IJepaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                            image_size=32, patch_size=8)  # fmt: skip
    hf.IJepaModel(config, add_pooling_layer=True).save_pretrained(tmp_path / "b")
    with pytest.raises(ConversionError, match=r"no counterpart in our models \['pooler.dense.bias', 'pooler.dense"):
        from_transformers(tmp_path / "b")

    enc, pred, _ = vjepa2_models()
    to_transformers(tmp_path / "c", enc, pred)
    state = safetensors.torch.load_file(tmp_path / "c" / WEIGHTS_NAME)
    del state["encoder.layer.1.norm2.bias"]
    safetensors.torch.save_file(state, tmp_path / "c" / WEIGHTS_NAME, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=r"missing transformers keys \['encoder.layer.1.norm2.bias'\]"):
        from_transformers(tmp_path / "c")


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: (make_encoder(FRAMES, use_rope=True, use_silu=True, norm_layer=LN6), "pred"), "use_silu"),
        (lambda: (make_encoder(FRAMES, norm_layer=LN6), "pred"), r"V-JEPA \(1\) has no transformers class"),
        (lambda: (make_encoder(1, use_rope=True, norm_layer=LN6), None), "V-JEPA 2 video encoder with RoPE"),
        (lambda: (make_encoder(FRAMES, use_rope=True, img_size=(32, 48), norm_layer=LN6), "pred"), "img_size"),
        (lambda: (make_encoder(FRAMES, use_rope=True, qk_scale=0.1, norm_layer=LN6), "pred"), "qk_scale"),
        (lambda: (make_encoder(FRAMES, use_rope=True, norm_layer=LN6), None), "holds the predictor too"),
        (lambda: (make_encoder(1, norm_layer=LN6, drop_path_rate=0.1), None), "drop_path_rate = 0.1"),
        (lambda: (make_encoder(1, norm_layer=LN6), "pred"), "IJepaModel is an encoder only"),
    ],
)
def test_what_transformers_cannot_express_is_an_error_naming_the_field(tmp_path, build, match):
    encoder, with_predictor = build()
    predictor = make_predictor(FRAMES, use_rope=True, norm_layer=LN6) if with_predictor else None
    with pytest.raises(ConversionError, match=match):
        to_transformers(tmp_path, encoder, predictor)
    assert not (tmp_path / CONFIG_NAME).exists()


def test_probe_settings_transformers_lacks(tmp_path, hf, caplog):
    enc, pred, _ = vjepa2_models()
    with pytest.raises(ConversionError, match=r"num_heads = \[4\].*the encoder's 3"):
        to_transformers(tmp_path, enc, pred, make_classifier(depth=2, num_heads=4, norm_layer=LN6))
    with pytest.raises(ConversionError, match="blocks_on_queries"):
        to_transformers(tmp_path, enc, pred, make_classifier(depth=2, blocks_on_queries=True, norm_layer=LN6))
    released_probe = perturb_(make_classifier(depth=2)).eval()  # LayerNorm's 1e-5, as the released probes
    with pytest.raises(ConversionError, match=r"norm eps = \[1e-05\].*probe_eps_from_encoder"):
        to_transformers(tmp_path, enc, pred, released_probe)
    to_transformers(tmp_path, enc, pred, released_probe, probe_eps_from_encoder=True)
    assert "becomes the encoder's 1e-06" in caplog.text
    model = hf.VJEPA2ForVideoClassification.from_pretrained(tmp_path).eval()
    x = make_input(FRAMES)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values_videos=to_hf_video(x)).logits, released_probe(enc(x)),
                                   atol=1e-4, rtol=0)  # fmt: skip


@pytest.mark.parametrize(
    "config, match",
    [
        ({"model_type": "vjepa2", "hidden_act": "gelu_new"}, "hidden_act = 'gelu_new'"),
        ({"model_type": "vjepa2", "crop_size": [32, 48]}, "crop_size"),
        ({"model_type": "vjepa2", "frames_per_clip": 1}, "frames_per_clip = 1"),
        ({"model_type": "ijepa", "hidden_dropout_prob": 0.1}, "hidden_dropout_prob = 0.1"),
        ({"model_type": "ijepa", "hidden_size": 48, "intermediate_size": 100, "num_attention_heads": 3}, None),
        ({"model_type": "vit"}, "model_type 'vit'"),
    ],
)
def test_transformers_configs_we_cannot_build_are_errors_naming_the_field(config, match):
    if match is None:  # 100 / 48 is no exact ratio, but int(48 * ratio) recovers it: accepted
        assert spec_from_transformers(config).encoder.mlp_ratio == 100 / 48
        return
    with pytest.raises(ConversionError, match=match):
        spec_from_transformers(config)


def test_transformers_defaults_fill_a_sparse_config(caplog):
    spec = spec_from_transformers({"model_type": "vjepa2", "some_future_key": 1})
    assert (spec.encoder.embed_dim, spec.encoder.depth, spec.encoder.num_heads, spec.encoder.img_size) == (
        1024, 24, 16, 256
    )  # fmt: skip
    assert (spec.predictor.predictor_embed_dim, spec.predictor.depth, spec.predictor.num_mask_tokens) == (384, 12, 10)
    assert "ignoring config keys this converter does not know: some_future_key" in caplog.text


def test_the_released_vjepa2_vitl_gives_transformers_default_config(hf):
    # transformers' VJEPA2Config defaults are facebook/vjepa2-vitl-fpc64-256: our release must map onto exactly them.
    with torch.device("meta"):
        encoder, predictor = jepa.hub.load("vjepa2_vitl", pretrained=False, with_predictor=True)
    ours = transformers_config(encoder, predictor)
    defaults = hf.VJEPA2Config().to_dict()
    fields = [k for k in ours if k not in ("architectures", "torch_dtype", "model_type", "attention_dropout")]
    assert {k: ours[k] for k in fields} == {k: defaults[k] for k in fields}
    assert len(fields) == 21  # VJEPA2Config's 23 fields but the probe's num_pooler_layers and attention_dropout
    with torch.device("meta"):
        giant, giant_predictor = jepa.hub.load("vjepa2_vitg", pretrained=False, with_predictor=True)
    cfg = transformers_config(giant, giant_predictor)
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]) == (1408, 22, 40)
    assert int(1408 * cfg["mlp_ratio"]) == 6144


def test_command_line_reads_the_config_our_checkpoints_store(tmp_path, hf):
    from jepa.config.pretrain import model_spec_from_config_dict
    from jepa.models import build_models_from_spec

    stored = {
        "app": "vjepa",
        "data": {"crop_size": 32, "patch_size": 8, "num_frames": FRAMES, "tubelet_size": 2},
        "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 1,
                  "pred_embed_dim": 24, "use_rope": True},
        "mask": [{}, {}],
    }  # fmt: skip
    encoder, predictor = build_models_from_spec(model_spec_from_config_dict(stored))
    perturb_(encoder), perturb_(predictor)
    path = save_checkpoint({"target_encoder": encoder.state_dict(), "predictor": predictor.state_dict(),
                            "config": stored}, tmp_path / "ours.pth.tar")  # fmt: skip
    assert main(["to-hf", "--checkpoint", str(path), "--out", str(tmp_path / "hf")]) == 0
    model, info = hf.VJEPA2Model.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert {k: set(v) for k, v in info.items()} == {k: set() for k in info}
    assert model.config.pred_num_mask_tokens == 2  # one per mask config
    x = make_input(FRAMES)
    with torch.no_grad():
        torch.testing.assert_close(model.get_vision_features(to_hf_video(x)), encoder.eval()(x), atol=1e-5, rtol=0)
