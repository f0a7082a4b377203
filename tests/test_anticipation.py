"""Action anticipation (EK100): config, annotation reader and clip rule, the built-in task, the encoder + predictor
wrapper (and its parity with the official one), the probe, focal loss, class-mean recall@5, and a run end to end."""

import csv
import dataclasses
import importlib.util
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from evals.action_anticipation_frozen.eval import anticipation_trainer
from evals.action_anticipation_frozen.metrics import ClassMeanRecall
from evals.action_anticipation_frozen.model import (
    AnticipativeWrapper,
    build_anticipation_model,
    extend_position_table,
)
from evals.action_anticipation_frozen.probe import AnticipationClassifier, head_loss, sigmoid_focal_loss
from evals.probing import EpochResult
from jepa.checkpoint import CheckpointError
from jepa.config import ConfigError, load_pretrain_config, to_dict
from jepa.config.evals import load_eval_config
from jepa.data import SkippedSample
from jepa.models.builder import build_encoder_from_spec, build_predictor_from_spec
from jepa.runtime import distributed as jd
from jepa.video.anticipation_digits import CLOCKWISE, make_anticipation_digits, next_action
from jepa.video.decoding import make_decoder
from jepa.video.epickitchens import (
    ActionClasses,
    ActionSegment,
    AnticipationClips,
    anticipation_clip_indices,
    ek100_video_path,
    read_ek100_csv,
)
from tests import test_evals

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "evals" / "tiny_anticipation_cpu.yaml"
OFFICIAL = ROOT.parent / "shared" / "official_configs" / "vjepa2" / "configs"
OFFICIAL_EK100 = sorted(OFFICIAL.glob("*/*/ek100.yaml"))
OFFICIAL_CODE = ROOT.parent / "scratch" / "vjepa2"


_one_thread = test_evals._one_thread  # autouse: one thread per test


def tiny_config(tmp_path: Path, *overrides: str):
    """The shipped tiny CPU config, writing into ``tmp_path``."""
    sets = [f"folder={tmp_path / 'out'}", f"data.root_path={tmp_path / 'data'}", "data.num_workers=0", *overrides]
    return load_eval_config(TINY, sets)


def write_config(tmp_path: Path, changes: dict) -> Path:
    raw = yaml.safe_load(TINY.read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        if value is None and last in node:
            del node[last]
        else:
            node[last] = value
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# -- config ---------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not OFFICIAL_EK100, reason="official configs not available")
@pytest.mark.parametrize("path", OFFICIAL_EK100, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_official_ek100_configs_validate_unchanged(path):
    raw = yaml.safe_load(path.read_text())
    cfg = load_eval_config(path)
    exp, model = raw["experiment"], raw["model_kwargs"]
    d = cfg.data
    assert (d.frames_per_clip, d.frames_per_second, d.resolution) == (32, 8, exp["data"]["resolution"])
    assert d.anticipation_time_sec == tuple(exp["data"]["anticipation_time_sec"])
    assert d.train_anticipation_time_sec == tuple(exp["data"]["train_anticipation_time_sec"])
    assert d.train_anticipation_point == tuple(exp["data"]["train_anticipation_point"])
    assert (d.file_format, d.anticipation_anchor, d.val_anticipation_point) == (0, "official", (0.0, 0.0))
    assert cfg.optimization.use_focal_loss is True and cfg.optimization.clip_grad is None
    assert [p.lr for p in cfg.optimization.probes] == [h["lr"] for h in exp["optimization"]["multihead_kwargs"]]
    assert cfg.val_only is raw.get("val_only", False)
    assert cfg.pretrain.model_name == model["pretrain_kwargs"]["encoder"]["model_name"]
    assert cfg.pretrain.checkpoint_path == Path(model["checkpoint"])
    pred = model["pretrain_kwargs"]["predictor"]
    assert (cfg.predictor.num_frames, cfg.predictor.num_mask_tokens, cfg.predictor.depth) == (
        pred["num_frames"], pred["num_mask_tokens"], pred["depth"])  # fmt: skip
    assert (cfg.wrapper.num_output_frames, cfg.wrapper.num_steps, cfg.wrapper.no_predictor) == (2, 1, False)
    assert (cfg.classifier.num_probe_blocks, cfg.classifier.num_heads) == (4, 16)
    # where the official code writes: <folder>/action_anticipation_frozen/<tag>
    assert cfg.output_folder == Path(raw["folder"]) / "action_anticipation_frozen" / raw["tag"]


def test_shipped_configs_validate():
    tiny = load_eval_config(TINY)
    assert tiny.data.is_builtin and tiny.pretrain.checkpoint is None and tiny.data.anticipation_anchor == "action_start"
    paper = load_eval_config(ROOT / "configs" / "evals" / "ek100.yaml")
    assert len(paper.optimization.probes) == 20 and paper.data.anticipation_anchor == "official"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data.anticipation_anchr": "official"}, "did you mean 'anticipation_anchor'"),
        ({"data.anticipation_anchor": "action_end"}, "expected one of 'official', 'action_start'"),
        ({"data.train_anticipation_point": [0.5, 0.25]}, "train_anticipation_point"),
        ({"predictor.num_frames": 12}, "predictor.num_frames: got 12.*set it >= 16"),
        ({"predictor.use_mask_tokens": False}, "predictor.use_mask_tokens"),
        ({"wrapper.out_layers": [1]}, "wrapper.out_layers: a classification-eval key"),
        ({"data.dataset_train": "/x.csv"}, "generates its own videos"),
        ({"data.dataset": "EK100"}, "base_path is required"),
        ({"data.file_format": 2}, "file_format: got 2"),
        ({"optimization.attend_across_segments": True}, "one clip per action"),
        ({"pretrain.frames_per_clip": 16}, "pretrain.frames_per_clip \\(16\\) and data.frames_per_clip \\(8\\)"),
    ],
)
def test_config_errors_name_the_key(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_eval_config(write_config(tmp_path, changes))


def test_check_paths_reports_every_ek100_input(tmp_path):
    from jepa.config.checks import check_paths

    (tmp_path / "train.csv").write_text("video_id,start_frame\nP01_01,1\n")
    cfg = load_eval_config(write_config(tmp_path, {
        "data.dataset": "EK100", "data.root_path": None, "data.base_path": str(tmp_path / "videos"),
        "data.dataset_train": str(tmp_path / "train.csv"), "data.dataset_val": str(tmp_path / "val.csv"),
        "folder": str(tmp_path / "out"), "pretrain.checkpoint": str(tmp_path / "vitl.pt"),
    }))  # fmt: skip
    with pytest.raises(ConfigError) as error:
        check_paths(cfg)
    message = str(error.value)
    assert message.startswith("4 problems")
    assert "data.dataset_train: " in message and "missing columns ['stop_frame', 'verb_class', 'noun_class']" in message
    assert "val.csv does not exist" in message and "video folder" in message and "vitl.pt does not exist" in message


def test_anchor_ranges():
    cfg = load_eval_config(TINY)
    assert cfg.data.anticipation_points("train") == cfg.data.anticipation_points("val") == (1.0, 1.0)
    official = load_eval_config(TINY, ["data.anticipation_anchor=official"])
    assert official.data.anticipation_points("train") == (0.0, 0.25)  # the default of both official files
    assert official.data.anticipation_points("val") == (0.0, 0.0)
    assert official.data.anticipation_times("train") == (0.25, 0.75)
    assert official.data.anticipation_times("val") == (0.5, 0.5)


# -- EK100 annotations and clips ------------------------------------------------------------------------------------
EK100_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
                "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes")  # fmt: skip
EK100_ROWS = [
    "P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,door,8,['door'],[8]",
    "P01_01_1,P01,P01_01,00:00:02.629,00:00:04.37,00:00:06.17,262,370,turn on,turn-on,6,light,113,['light'],[113]",
    # quoted fields with commas, as in the official file
    'P02_03_7,P02,P02_03,00:00:05.0,00:00:05.0,00:00:06.0,300,360,"put pan, spoon",put,1,pan,10,"[\'pan\']","[10, 22]"',
]


def test_read_ek100_csv(tmp_path):
    path = tmp_path / "EPIC_100_train.csv"
    path.write_text("\n".join([EK100_HEADER, *EK100_ROWS]) + "\n")
    segments = read_ek100_csv(path)
    assert segments == [
        ActionSegment("P01_01", 8, 202, 3, 8, "P01_01_0"),
        ActionSegment("P01_01", 262, 370, 6, 113, "P01_01_1"),
        ActionSegment("P02_03", 300, 360, 1, 10, "P02_03_7"),
    ]
    assert segments[2].participant_id == "P02"
    (tmp_path / "bad.csv").write_text("video_id,start_frame,stop_frame,verb_class\nP01_01,1,2,3\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing columns \['noun_class'\]"):
        read_ek100_csv(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("video_id,start_frame,stop_frame,verb_class,noun_class\nP01_01,1,x,3,4\n")
    with pytest.raises(ValueError, match="bad2.csv:2: column stop_frame holds 'x'"):
        read_ek100_csv(tmp_path / "bad2.csv")


def test_video_layouts():
    assert ek100_video_path("/ek", "P01_11", 0) == Path("/ek/P01/videos/P01_11.MP4")
    assert ek100_video_path("/ek", "P01_11", 1) == Path("/ek/P01/P01_11.MP4")
    with pytest.raises(ValueError, match="file_format"):
        ek100_video_path("/ek", "P01_11", 2)


def test_action_classes_come_from_training_and_filter_validation():
    train = [ActionSegment("P01_01", 0, 9, v, n) for v, n in [(3, 8), (6, 13), (3, 8), (1, 10), (3, 13)]]
    classes = ActionClasses.from_training(train)
    assert classes.sizes == (3, 3, 4)
    assert classes.verbs == {1: 0, 3: 1, 6: 2} and classes.nouns == {8: 0, 10: 1, 13: 2}  # small ints: ascending
    # EK100's 97 verbs and 300 nouns, met in any order: ascending too (the official numbering of released probes)
    segments = [ActionSegment("P01_01", 0, 9, (7 * i) % 97, (11 * i) % 300) for i in range(900)]
    many = ActionClasses.from_training(segments)
    assert many.verbs == {v: v for v in range(97)} and many.nouns == {n: n for n in range(300)}
    assert sorted(classes.actions.values()) == [0, 1, 2, 3]
    val = [ActionSegment("P02_01", 0, 9, v, n) for v, n in [(3, 8), (6, 8), (1, 10)]]
    kept = classes.keep(val)  # (6, 8) never occurs in training: dropped, as officially
    assert [s.action for s in kept] == [(3, 8), (1, 10)]
    assert classes.labels(kept[0]) == (1, 0, classes.actions[(3, 8)])
    listed = classes.to_dict()
    assert [tuple(a) for a in listed["actions"]] == sorted(classes.actions, key=classes.actions.get)


@pytest.mark.parametrize(
    ("point", "time", "expected"),
    [
        (0.0, 1.0, [130, 135, 140, 145]),  # the official validation rule: 1 s before the action's END (200)
        (1.0, 1.0, [30, 35, 40, 45]),  # the EK100 protocol: 1 s before the action's START (100)
        (0.25, 1.0, [105, 110, 115, 120]),  # anchor 0.25 * 100 + 0.75 * 200 = 175, minus 50 frames
        (1.0, 0.5, [55, 60, 65, 70]),
        (1.0, 2.5, [0, 0, 0, 0]),  # before the video's start: its first frame
    ],
)
def test_clip_indices_hand_computed(point, time, expected):
    # 50 fps video, clip of 4 frames at 10 fps (every 5th frame), action frames 100..200
    got = anticipation_clip_indices(100, 200, video_fps=50.0, frames_per_clip=4, fps=10, anticipation_time=time,
                                    anticipation_point=point)  # fmt: skip
    assert got.tolist() == expected


def test_clip_indices_refuse_a_video_slower_than_the_clip():
    with pytest.raises(ValueError, match="runs at 4 fps, below the 8"):
        anticipation_clip_indices(10, 20, video_fps=4, frames_per_clip=4, fps=8, anticipation_time=0,
                                  anticipation_point=1)  # fmt: skip


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("anticipation_digits")
    return out, make_anticipation_digits(out, num_videos=8, split="train", seed=3)


def test_anticipation_digits_files_and_labels(digits):
    out, csv_path = digits
    manifest = json.loads((out / "train_manifest.json").read_text())
    segments = read_ek100_csv(csv_path)
    assert len(segments) == 8 and all(s.video_id.startswith("P90_") for s in segments)
    assert all((s.start_frame, s.stop_frame) == (16, 23) for s in segments)
    for s, video in zip(segments, manifest["videos"], strict=True):
        assert (s.verb, s.noun) == next_action(video["digit"], video["direction"])
        assert s.verb == CLOCKWISE[video["direction"]] and s.noun == (video["digit"] + 1) % 10
        assert ek100_video_path(out / "videos", s.video_id, 1) == Path(video["path"])
    # each part moves in its labelled direction (intensity-weighted centre, grey = red channel)
    steps = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}
    frames = make_decoder("pyav").read(manifest["videos"][0]["path"], range(24))[..., 0].astype(float)
    ys, xs = np.indices(frames.shape[1:])
    centre = np.stack([(frames * ys).sum((1, 2)), (frames * xs).sum((1, 2))], 1) / frames.sum((1, 2))[:, None]
    for part, direction in ((slice(0, 16), manifest["videos"][0]["direction"]), (slice(16, 24), segments[0].verb)):
        move = centre[part][-1] - centre[part][0]
        assert np.dot(move, steps[direction]) > 2.0
    assert make_anticipation_digits(out, num_videos=8, split="train", seed=3) == csv_path  # already there


def _clips(digits, **kwargs) -> AnticipationClips:
    out, csv_path = digits
    segments = read_ek100_csv(csv_path)
    args = dict(base_path=out / "videos", file_format=1, frames_per_clip=8, fps=8, anticipation_time=(0.5, 0.5),
                anticipation_point=(1.0, 1.0), decoder="pyav")  # fmt: skip
    return AnticipationClips(segments, ActionClasses.from_training(segments), **{**args, **kwargs})


def test_clips_are_the_frames_before_the_anchor(digits):
    data = _clips(digits)
    clip, labels, at, index = data[2]
    full = torch.from_numpy(make_decoder("pyav").read(data.paths[2], range(24)))
    assert torch.equal(clip, full[4:12])  # the action starts at frame 16: 8 frames ending 4 frames (0.5 s) before
    assert labels.tolist() == list(data.classes.labels(data.segments[2])) and float(at) == 0.5 and index == 2
    official = _clips(digits, anticipation_point=(0.0, 0.0))  # anchored at the action's last frame (23)
    assert torch.equal(official[2][0], full[11:19])  # shows frames 16..18 of the action itself


def test_unreadable_videos_are_skipped_and_listed(digits):
    data = _clips(digits, on_error="skip")
    data.paths[1] = data.paths[1].with_name("missing.MP4")
    skipped = data[1]
    assert isinstance(skipped, SkippedSample) and "missing.MP4" in skipped.path and "P90_0001_0" in skipped.path
    assert data.skip_counter.skipped == 1
    replaced = _clips(digits, on_error="random")
    replaced.paths[1] = replaced.paths[1].with_name("missing.MP4")
    assert replaced[1][-1] != 1  # another clip in its place


# -- the frozen model ------------------------------------------------------------------------------------------------
def _tiny_model(tmp_path, *overrides) -> AnticipativeWrapper:
    model, source = build_anticipation_model(tiny_config(tmp_path, *overrides))
    assert source is None
    return model


def test_wrapper_output_is_context_then_predicted_frames(tmp_path):
    model = _tiny_model(tmp_path, "wrapper.num_steps=2")
    times = torch.tensor([0.25, 0.5, 0.75])
    # 32 px / patch 8 -> 16 tokens per time slot; 8 frames -> 4 slots (64 tokens); slots ahead int(t * 8 / 2)
    assert model.future_positions(64, 16, times)[:, 0].tolist() == [64 + 16, 64 + 32, 64 + 48]
    x = torch.randn(3, 3, 8, 32, 32)
    out = model(x, times)
    assert out.shape == (3, 64 + 2 * 16, 48)
    assert torch.equal(out[:, :64], model.encoder(x))
    encoder_only = _tiny_model(tmp_path, "wrapper.no_predictor=true")
    assert encoder_only(x, times).shape == (3, 64, 48)
    with pytest.raises(ValueError, match="does not reach position"):
        model(x, torch.tensor([0.25, 0.5, 2.0]))


def _official_modules():
    """The official wrapper module and the official ViT / predictor modules (vjepa2's ``src``)."""
    if str(OFFICIAL_CODE) not in sys.path:
        sys.path.append(str(OFFICIAL_CODE))  # appended: its `evals` package must not shadow ours
    import src.models.predictor as official_predictor  # noqa: I001
    import src.models.vision_transformer as official_vit

    path = OFFICIAL_CODE / "evals" / "action_anticipation_frozen" / "modelcustom" / "vit_encoder_predictor_concat_ar.py"
    spec = importlib.util.spec_from_file_location("official_concat_ar", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, official_vit, official_predictor


@pytest.mark.skipif(not OFFICIAL_CODE.is_dir(), reason="the official vjepa2 code is not at ../scratch/vjepa2")
@pytest.mark.parametrize("use_rope", [True, False], ids=["rope", "sincos"])
@pytest.mark.parametrize(("num_steps", "no_predictor"), [(1, False), (2, False), (1, True)],
                         ids=["1step", "2steps", "encoder-only"])  # fmt: skip
def test_wrapper_matches_the_official_one(tmp_path, use_rope, num_steps, no_predictor):
    ours = _tiny_model(tmp_path, f"pretrain.use_rope={use_rope}", f"predictor.use_rope={use_rope}",
                       f"wrapper.num_steps={num_steps}", f"wrapper.no_predictor={no_predictor}")  # fmt: skip
    module, vit, pred = _official_modules()
    norm = partial(nn.LayerNorm, eps=1e-6)
    encoder = vit.VisionTransformer(img_size=32, patch_size=8, num_frames=8, tubelet_size=2, embed_dim=48, depth=2,
                                    num_heads=4, norm_layer=norm, uniform_power=True, use_rope=use_rope)  # fmt: skip
    predictor = pred.vit_predictor(img_size=32, embed_dim=48, patch_size=8, tubelet_size=2, num_frames=16, depth=2,
                                   num_heads=2, predictor_embed_dim=24, num_mask_tokens=2, use_mask_tokens=True,
                                   uniform_power=True, use_rope=use_rope, use_silu=False, wide_silu=True)  # fmt: skip
    encoder.load_state_dict(ours.encoder.state_dict())
    if not no_predictor:
        for token in ours.predictor.mask_tokens:  # zero-initialised: made distinct, so that which one is used shows
            nn.init.normal_(token)
        predictor.load_state_dict(ours.predictor.state_dict())
    official = module.AnticipativeWrapper(encoder, predictor, frames_per_second=8, crop_size=32, patch_size=8,
                                          tubelet_size=2, no_predictor=no_predictor, num_output_frames=2,
                                          num_steps=num_steps).eval()  # fmt: skip
    x, times = torch.randn(3, 3, 8, 32, 32), torch.tensor([0.25, 0.3, 0.75])
    with torch.no_grad():
        expected, got = official(x, times), ours(x, times)
    assert got.shape == expected.shape
    diff = float((got - expected).abs().max())
    print(f"max |ours - official| = {diff:.3g} (use_rope={use_rope}, num_steps={num_steps}, "
          f"no_predictor={no_predictor})")  # fmt: skip
    assert diff < 1e-5
    if not no_predictor:  # the official wrapper uses the predictor's mask token 1 (its default mask_index)
        ours.mask_index = 0
        with torch.no_grad():
            assert not torch.allclose(ours(x, times), expected, atol=1e-3)


def test_checkpoint_loads_strictly_and_extends_the_predictor_table(tmp_path):
    # a sine-cosine model "trained" on 8-frame clips; the eval's predictor covers 16 frames (the future)
    cfg = tiny_config(tmp_path, "pretrain.use_rope=false", "predictor.use_rope=false")
    spec = cfg.encoder_spec()
    trained = cfg.predictor_spec(spec)
    trained = dataclasses.replace(trained, encoder=dataclasses.replace(trained.encoder, num_frames=8))
    encoder, predictor = build_encoder_from_spec(spec), build_predictor_from_spec(trained)
    path = tmp_path / "official.pt"
    torch.save({"target_encoder": {f"module.backbone.{k}": v for k, v in encoder.state_dict().items()},
                "predictor": {f"module.{k}": v for k, v in predictor.state_dict().items()}}, path)  # fmt: skip
    cfg = tiny_config(tmp_path, "pretrain.use_rope=false", "predictor.use_rope=false", f"pretrain.checkpoint={path}")
    model, source = build_anticipation_model(cfg)
    assert source == str(path)
    assert torch.equal(model.encoder.pos_embed, encoder.pos_embed)
    table = model.predictor.predictor_pos_embed
    assert table.shape[1] == 8 * 16 and torch.equal(table[:, :64], predictor.predictor_pos_embed)
    assert torch.equal(table, build_predictor_from_spec(cfg.predictor_spec(spec)).predictor_pos_embed)
    qkv = model.predictor.predictor_blocks[0].attn.qkv.weight
    assert torch.equal(qkv, predictor.predictor_blocks[0].attn.qkv.weight)
    state = {"predictor_pos_embed": predictor.predictor_pos_embed.flip(1)}
    with pytest.raises(CheckpointError, match="not the start of"):
        extend_position_table(state, cfg.predictor_spec(spec), "f")
    torch.save({"target_encoder": encoder.state_dict()}, path)
    with pytest.raises(CheckpointError, match="predictor"):
        build_anticipation_model(cfg)
    # our checkpoints store their config: an eval describing another model is refused, naming both values
    stored = to_dict(load_pretrain_config(ROOT / "configs" / "pretrain" / "tiny_vjepa_cpu.yaml"))
    torch.save({"config": stored, "target_encoder": {}, "predictor": {}}, path)
    with pytest.raises(ConfigError, match="pretrain.embed_dim: got 48, but .* was trained with 96.*predictor.depth"):
        build_anticipation_model(tiny_config(tmp_path, f"pretrain.checkpoint={path}", "predictor.depth=3"))


# -- probe, loss, metric --------------------------------------------------------------------------------------------
def test_probe_keys_and_gradients():
    probe = AnticipationClassifier(embed_dim=48, num_heads=4, depth=2, num_verbs=4, num_nouns=10, num_actions=40)
    keys = probe.state_dict().keys()
    assert {"pooler.query_tokens", "verb_classifier.weight", "noun_classifier.bias", "action_classifier.weight",
            "pooler.cross_attention_block.xattn.q.weight", "pooler.blocks.0.attn.qkv.weight"} <= set(keys)  # fmt: skip
    assert probe.pooler.query_tokens.shape == (1, 3, 48)
    verb, noun, action = probe(torch.randn(2, 20, 48))
    assert (verb.shape, noun.shape, action.shape) == ((2, 4), (2, 10), (2, 40))
    (verb.sum() + noun.sum() + action.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in probe.parameters())
    with pytest.raises(TypeError):
        AnticipationClassifier(embed_dim=48, num_heads=4, depth=1, num_verbs=4, num_nouns=10, num_action=40)


def test_focal_loss_matches_the_formula():
    torchvision_ops = pytest.importorskip("torchvision.ops")
    logits, labels = torch.randn(2, 6, 5), torch.tensor([0, 4, 2, 2, 1, 3])
    targets = nn.functional.one_hot(labels, 5).float()
    for k in range(2):
        expected = torchvision_ops.sigmoid_focal_loss(logits[k], targets, alpha=0.25, gamma=2.0, reduction="sum")
        torch.testing.assert_close(sigmoid_focal_loss(logits, labels)[k], expected)
    # one entry by hand: logit 0 for the true class: p = 0.5, 0.25 * 0.5**2 * log 2
    one = sigmoid_focal_loss(torch.tensor([[0.0, -50.0]]), torch.tensor([0]))
    torch.testing.assert_close(one, torch.tensor(0.25 * 0.25 * np.log(2), dtype=torch.float32))
    ce = head_loss(logits, labels, focal=False)
    torch.testing.assert_close(ce[1], nn.functional.cross_entropy(logits[1], labels))


# 7 samples, 6 classes; class 5 never occurs (not counted); k = 2.
RECALL_LOGITS = torch.tensor([
    [9, 8, 0, 0, 0, 0],  # label 0: top-2 {0, 1} -> hit
    [0, 9, 8, 0, 0, 0],  # label 0: top-2 {1, 2} -> miss
    [0, 0, 9, 8, 0, 0],  # label 3: hit
    [0, 0, 0, 0, 9, 8],  # label 3: miss
    [0, 0, 0, 0, 9, 8],  # label 3: miss
    [8, 0, 9, 0, 0, 0],  # label 2: hit
    [0, 0, 0, 0, 8, 9],  # label 4: hit
], dtype=torch.float32)  # fmt: skip
RECALL_LABELS = torch.tensor([0, 0, 3, 3, 3, 2, 4])
# per class: 0 -> 1/2, 2 -> 1/1, 3 -> 1/3, 4 -> 1/1; classes 1 and 5 have no samples
RECALL_EXPECTED = 100 * (1 / 2 + 1 + 1 / 3 + 1) / 4
ACCURACY_EXPECTED = 100 * 4 / 7


def test_class_mean_recall_hand_computed():
    metric = ClassMeanRecall(num_probes=2, num_classes=6, device="cpu", k=2)
    metric.update(torch.stack([RECALL_LOGITS, RECALL_LOGITS[:, [5, 4, 3, 2, 1, 0]]]), RECALL_LABELS)
    recall, accuracy = metric.reduce().recall(), metric.accuracy()
    assert recall[0].item() == pytest.approx(RECALL_EXPECTED) and accuracy[0].item() == pytest.approx(ACCURACY_EXPECTED)
    # probe 1 sees the columns reversed: top-2 per row {4, 5}, {3, 4}, {2, 3}, {0, 1}, {0, 1}, {3, 5}, {0, 1}, so
    # only row 2 (label 3) is a hit: class 3 has recall 1/3, classes 0, 2 and 4 have 0
    assert recall[1].item() == pytest.approx(100 * (1 / 3) / 4)
    assert metric.samples == 7
    # in batches: the same counts, hence the same metric (counts are summed, not per-batch means averaged)
    batched = ClassMeanRecall(num_probes=1, num_classes=6, device="cpu", k=2)
    for rows in (slice(0, 3), slice(3, 7)):
        batched.update(RECALL_LOGITS[rows].unsqueeze(0), RECALL_LABELS[rows])
    assert batched.recall().item() == pytest.approx(RECALL_EXPECTED)


def _recall_on_rank(rank: int, world_size: int, device: torch.device) -> float:
    rows = slice(0, 2) if rank == 0 else slice(2, 7)  # rank 0 holds class 0; rank 1 classes 2, 3 and 4
    metric = ClassMeanRecall(num_probes=1, num_classes=6, device=device, k=2)
    metric.update(RECALL_LOGITS[rows].unsqueeze(0), RECALL_LABELS[rows])
    return metric.reduce().recall().item()


@pytest.mark.slow  # two processes that import torch: about 15 s on a 2-core machine
def test_class_mean_recall_sums_counts_over_ranks(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = jd.spawn(_recall_on_rank, ["cpu", "cpu"])
    assert results == pytest.approx([RECALL_EXPECTED, RECALL_EXPECTED])
    per_rank = [100 * (1 / 2) / 1, 100 * (1 / 3 + 1 + 1) / 3]  # what averaging the ranks' own metrics would give
    assert np.mean(per_rank) != pytest.approx(RECALL_EXPECTED)


# -- probe training: resume, refusals, official probe files ---------------------------------------------------------
def _fake_batches(classes: ActionClasses, seed: int, batches: int = 3, size: int = 4) -> list[tuple]:
    """Random clips with labels of ``classes`` (no decoding: the trainer's contract is the batch layout)."""
    g = torch.Generator().manual_seed(seed)
    actions = list(classes.actions.items())
    out = []
    for _ in range(batches):
        picked = [actions[int(i)] for i in torch.randint(len(actions), (size,), generator=g)]
        labels = torch.tensor([[classes.verbs[v], classes.nouns[n], a] for (v, n), a in picked])
        clips = torch.randn(size, 3, 8, 32, 32, generator=g)
        out.append((clips, labels, torch.full((size,), 0.5), torch.arange(size)))
    return out


def test_resumed_probes_continue_exactly_and_files_are_checked(tmp_path):
    classes = ActionClasses.from_training([ActionSegment("P01_01", 0, 9, v, n) for v in range(3) for n in range(4)])
    train, val = _fake_batches(classes, 0), _fake_batches(classes, 1)

    def trainer(folder: str, seed: int, *overrides: str, with_classes: ActionClasses = classes):
        cfg = tiny_config(tmp_path / folder, "optimization.num_epochs=2", *overrides)
        model, _ = build_anticipation_model(cfg)
        torch.manual_seed(seed)  # the probes' initialisation
        loader = None if cfg.val_only else train
        return anticipation_trainer(cfg, model, loader, val, with_classes, device=torch.device("cpu"))

    straight = trainer("a", 0)
    straight.run()
    interrupted = trainer("b", 0)  # epoch 1 of 2, saved, then the job ends
    interrupted.files.prepare()
    interrupted.history.append(EpochResult(1, interrupted.train_epoch(), interrupted.evaluate()))
    interrupted.epoch = 1
    interrupted.files.save(interrupted.state_dict())
    resumed = trainer("b", 1)  # other initial probes: the checkpoint replaces them
    resumed.run(resume=True)
    assert resumed.epoch == 2
    for a, b in zip(straight.bank.state_dict().values(), resumed.bank.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.history[-1].val == straight.history[-1].val

    other = ActionClasses.from_training([ActionSegment("P01_01", 0, 9, v, n) for v in range(4) for n in range(3)])
    with pytest.raises(ConfigError, match="other verb/noun/action classes"):
        trainer("b", 0, with_classes=other).load(resumed.files.latest)

    # an official probe file (DDP prefixes, no class lists) in the official place: val_only evaluates it as it is
    official = tmp_path / "c" / "out" / "tiny-anticipation" / "latest.pt"
    official.parent.mkdir(parents=True)
    states = [{f"module.{k}": v for k, v in p.state_dict().items()} for p in straight.bank.probes]
    torch.save({"classifiers": states, "epoch": 2}, official)
    summary = trainer("c", 5, "val_only=true").run()
    assert summary["probe_checkpoint"] == str(official) and summary["epochs"] == 2
    assert summary["action_recall5"] == pytest.approx(straight.summary()["action_recall5"])


# -- end to end -----------------------------------------------------------------------------------------------------
def test_tiny_eval_end_to_end_then_val_only(tmp_path, capsys):
    from evals.main import main as evals_main

    sets = [f"folder={tmp_path / 'out'}", f"data.root_path={tmp_path / 'data'}", "optimization.num_epochs=1",
            "optimization.batch_size=32", "data.num_workers=0"]  # fmt: skip
    assert evals_main(["--fname", str(TINY), "--devices", "cpu", "--set", *sets]) == 0
    assert "action recall@5" in capsys.readouterr().out
    folder = tmp_path / "out" / "tiny-anticipation"
    summary = json.loads((folder / "results.json").read_text())
    keys = ("verb_recall5", "noun_recall5", "action_recall5", "verb_top1", "best_probe", "max_over_probes",
            "val_samples", "val_unreadable", "skipped_files", "probes", "anticipation_anchor", "config")  # fmt: skip
    assert [k for k in keys if k not in summary] == []
    assert summary["val_samples"] == 100 and summary["val_unreadable"] == 0 and summary["epochs"] == 1
    assert summary["classes"] == {"verbs": 4, "nouns": 10, "actions": 40}
    for m in ("verb_recall5", "noun_recall5", "action_recall5"):
        assert 0.0 <= summary[m] <= 100.0  # percent, as the classification evals' top-1
        assert summary["max_over_probes"][m] >= summary[m]
    assert summary["verb_recall5"] == 100.0  # 4 verbs: every one is in any top 5
    with (folder / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2  # one row per probe
    ckpt = torch.load(folder / "jepa-latest.pth.tar", weights_only=True)
    assert len(ckpt["classifiers"]) == 2 and ckpt["epoch"] == 1 and len(ckpt["classes"]["actions"]) == 40
    before = (folder / "jepa-latest.pth.tar").read_bytes()

    # val_only: the saved probes, evaluated once, give the same metrics; their file is left as it was
    cfg = tiny_config(tmp_path, "val_only=true", "optimization.batch_size=32")
    model, _ = build_anticipation_model(cfg)
    from evals.action_anticipation_frozen.data import make_datasets, make_loaders

    train, val, classes = make_datasets(cfg)
    _, val_batches = make_loaders(cfg, train, val, 0, 1)
    again = anticipation_trainer(cfg, model, None, val_batches, classes, device=torch.device("cpu")).run()
    assert again["val_only"] is True
    for m in ("verb_recall5", "noun_recall5", "action_recall5"):
        assert again[m] == pytest.approx(summary[m])
    assert (folder / "jepa-latest.pth.tar").read_bytes() == before
    assert (folder / "results_val_only.json").is_file()
