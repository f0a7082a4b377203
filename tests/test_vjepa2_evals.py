"""V-JEPA 2 eval and inference files (``experiment`` + ``model_kwargs``): every official file validates, no key of
theirs is dropped silently, the wrapper / module / predictor keys are checked, and ``val_only`` evaluates saved
probes without training them."""

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from jepa.config import ConfigError, from_dict, to_dict
from jepa.config.evals import (
    VJEPA2_UNUSED,
    EvalConfig,
    accepted_unused_keys,
    load_eval_config,
    normalize_vjepa2,
    vjepa2_key,
)
from tests import test_evals
from tests.test_evals import video_eval_config, write_yaml

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "official_configs"
V2_FILES = sorted((OFFICIAL / "vjepa2" / "configs").glob("eval/*/*.yaml")) + sorted(
    (OFFICIAL / "vjepa2" / "configs").glob("inference/*/*.yaml")
)
V1_FILES = sorted((OFFICIAL / "jepa" / "configs" / "evals").glob("*.yaml"))
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "evals"
# Fixtures shared with tests/test_evals.py: tiny tests on one thread (autouse), the moving-digit clips.
_one_thread = test_evals._one_thread
digit_csvs = test_evals.digit_csvs


def _official(files: list[Path], folder: str) -> list:
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {OFFICIAL / folder}"))]
    return [pytest.param(f, id=str(f.relative_to(OFFICIAL))) for f in files]


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a YAML tree by dotted path (list entries that are mappings by index: ``a.0.b``)."""
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(leaves(value, f"{prefix}.{i}"))
        return out
    return {prefix: node}


def lookup(tree: Any, path: str) -> tuple[bool, Any]:
    node = tree
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def registry_path(path: str) -> str:
    """``optimization.multihead_kwargs.0.lr`` -> ``optimization.multihead_kwargs[].lr`` (the registry's form)."""
    return ".".join(p if not p.isdigit() else "[]" for p in path.split(".")).replace(".[]", "[]")


def load_quietly(path: Path, caplog) -> tuple[Any, str]:
    if "action_anticipation_frozen" in path.read_text():
        try:
            import jepa.config.anticipation  # noqa: F401
        except ModuleNotFoundError:
            pytest.fail(f"{path}: eval_name action_anticipation_frozen needs jepa.config.anticipation (helper H3)")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cfg = load_eval_config(path)
    return cfg, caplog.text


# -- every official file, strictly, nothing dropped ----------------------------------------------------------------
@pytest.mark.parametrize("path", _official(V2_FILES, "vjepa2/configs") + _official(V1_FILES, "jepa/configs/evals"))
def test_no_key_of_an_official_eval_file_is_dropped_silently(path, caplog):
    """Each leaf key of the file is either in the resolved config, with the file's value, or in the registry of
    accepted-unused keys and named by a warning."""
    raw = yaml.safe_load(path.read_text())
    cfg, log = load_quietly(path, caplog)
    resolved = to_dict(cfg)
    registry = accepted_unused_keys(type(cfg))
    v2 = "experiment" in raw or "model_kwargs" in raw
    dropped, checked = [], 0
    for source, value in leaves(raw).items():
        ours = vjepa2_key(source) if v2 else source
        if source in registry or (ours is not None and registry_path(ours) in registry):
            named = source if source in registry else ours
            assert f"'{named}' is accepted but not used" in log, f"{source}: in the registry but not warned about"
            checked += 1
            continue
        assert ours is not None, f"{source} maps nowhere but is not in the registry"
        found, got = lookup(resolved, ours)
        if v2 and source == "folder":  # the official code writes to <folder>/<eval_name>/<tag>
            value = f"{value}/{raw['eval_name']}"
        if not found or got != value:
            dropped.append(f"{source} -> {ours}: file {value!r}, resolved {got!r}" if found else f"{source} -> {ours}")
        checked += 1
    assert not dropped, f"{path}: keys lost or changed: {dropped}"
    assert checked == len(leaves(raw))


@pytest.mark.parametrize("path", _official(V2_FILES, "vjepa2/configs"))
def test_official_vjepa2_files_validate_with_their_meaning(path):
    raw = yaml.safe_load(path.read_text())
    cfg = load_eval_config(path)
    wrapper = raw["model_kwargs"].get("wrapper_kwargs") or {}
    assert cfg.eval_name == raw["eval_name"] and cfg.module_name == raw["model_kwargs"]["module_name"]
    assert cfg.val_only is bool(raw.get("val_only", False)) and (
        cfg.val_only is (path.parent.parent.name == "inference")
    )
    assert cfg.output_folder == Path(raw["folder"]) / raw["eval_name"] / raw["tag"]  # where the official code writes
    assert cfg.wrapper.out_layers == wrapper.get("out_layers")
    if raw["eval_name"] == "action_anticipation_frozen":
        predictor = raw["model_kwargs"]["pretrain_kwargs"]["predictor"]
        assert {k: getattr(cfg.predictor, k) for k in predictor} == predictor
        assert cfg.wrapper.num_steps == wrapper["num_steps"] and cfg.wrapper.no_predictor is False
    else:
        assert cfg.predictor is None
    if raw["eval_name"] == "video_classification_frozen":
        # the official wrapper concatenates the tokens of all of a view's segments (ClipAggregation)
        assert cfg.optimization.attend_across_segments is True
        assert cfg.pretrain.frames_per_clip == raw["experiment"]["data"]["frames_per_clip"]
    if raw["eval_name"] == "image_classification_frozen":
        assert cfg.pretrain.frames_per_clip == wrapper["img_as_video_nframes"]


def test_the_multilevel_official_files_keep_their_blocks():
    files = [f for f in V2_FILES if f.name in ("diving48.yaml", "jester.yaml")]
    if not files:
        pytest.skip("official configs not available")
    for f in files:
        cfg = load_eval_config(f)
        assert cfg.wrapper.out_layers == ([17, 19, 21, 23] if f.parent.name == "vitl" else [24, 29, 34, 39]), f


def test_the_accepted_unused_registry_names_every_ignored_field_and_the_vjepa2_only_keys():
    registry = accepted_unused_keys()
    assert registry["wrapper.max_frames"] and registry["optimization.use_pos_embed"]
    assert set(VJEPA2_UNUSED) <= set(registry)
    assert "wrapper.out_layers" not in registry and "wrapper.use_pos_embed" not in registry


# -- the mapping and its checks ------------------------------------------------------------------------------------
def v2_file(**over) -> dict:
    raw = {
        "eval_name": "video_classification_frozen", "tag": "t", "folder": "/out",
        "experiment": {
            "classifier": {"num_heads": 3, "num_probe_blocks": 1},
            "data": {"dataset_type": "VideoDataset", "dataset_train": "a.csv", "dataset_val": "b.csv",
                     "num_classes": 4, "frames_per_clip": 4, "resolution": 32},
            "optimization": {"batch_size": 2, "num_epochs": 1, "multihead_kwargs": [{"lr": 1e-3}]},
        },
        "model_kwargs": {
            "checkpoint": None,
            "module_name": "evals.video_classification_frozen.modelcustom.vit_encoder_multiclip",
            "wrapper_kwargs": {"max_frames": 128, "use_pos_embed": False},
            "pretrain_kwargs": {"encoder": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3,
                                            "patch_size": 8, "tubelet_size": 2, "use_rope": True}},
        },
    }  # fmt: skip
    for key, value in over.items():
        *parents, last = key.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        if value is None and last in node and key != "model_kwargs.checkpoint":
            del node[last]
        else:
            node[last] = value
    return raw


MULTICLIP = "evals.video_classification_frozen.modelcustom.vit_encoder_multiclip"


@pytest.mark.parametrize(
    "over, message",
    [
        (
            {"model_kwargs.module_name": "evals.video_classification_frozen.modelcustom.vit_encoder_typo"},
            "module_name: got .*vit_encoder_typo.*expected one of",
        ),
        (
            {"model_kwargs.module_name": "evals.image_classification_frozen.modelcustom.vit_encoder"},
            "wrappers of eval_name video_classification_frozen",
        ),
        ({"model_kwargs.module_name": MULTICLIP + "_multilevel"}, "wrapper.out_layers is required"),
        ({"model_kwargs.wrapper_kwargs.out_layers": [0, 1]}, "probes the last block only"),
        ({"model_kwargs.wrapper_kwargs.use_pos_embed": True}, "wrapper.use_pos_embed: got True"),
        ({"model_kwargs.wrapper_kwargs.out_layer": [1]}, "did you mean 'out_layers'"),
        ({"model_kwargs.pretrain_kwargs.encoder.use_rop": True}, "did you mean 'use_rope'"),
        ({"model_kwargs.extra": 1}, r"model_kwargs: unknown keys \['extra'\]"),
        ({"experiment.evaluation": {}}, r"experiment: unknown keys \['evaluation'\]"),
        (
            {"num_workers": 3, "experiment.data.num_workers": 5},
            "num_workers: 3 and experiment.data.num_workers: 5 both set data.num_workers",
        ),
        (
            {"model_kwargs.module_name": MULTICLIP + "_multilevel", "model_kwargs.wrapper_kwargs.out_layers": [0, 2]},
            r"wrapper.out_layers: got \[0, 2\], expected block indices < depth 2",
        ),
    ],
)
def test_wrapper_module_and_mapping_errors_name_the_key(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message):
        load_eval_config(write_yaml(tmp_path, v2_file(**over)))


def test_the_multilevel_module_with_its_blocks_validates(tmp_path):
    path = write_yaml(tmp_path, v2_file(**{"model_kwargs.module_name": MULTICLIP + "_multilevel",
                                           "model_kwargs.wrapper_kwargs.out_layers": [1, 0]}))  # fmt: skip
    cfg = load_eval_config(path)
    assert cfg.wrapper.out_layers == [1, 0] and cfg.output_folder == Path("/out/video_classification_frozen/t")


def test_keys_a_classification_eval_does_not_read_are_named(tmp_path, caplog):
    raw = v2_file(**{"model_kwargs.pretrain_kwargs.predictor": {"depth": 2, "num_heads": 2},
                     "model_kwargs.wrapper_kwargs.num_steps": 3})  # fmt: skip
    with caplog.at_level(logging.WARNING):
        cfg = load_eval_config(write_yaml(tmp_path, raw))
    assert cfg.predictor is not None and cfg.predictor.depth == 2
    assert "config key 'predictor' is set but not used" in caplog.text
    assert "config key 'wrapper.num_steps' is set but not used" in caplog.text


def test_normalize_passes_other_files_through_and_maps_every_section():
    plain = {"eval_name": "x", "data": {}}
    assert normalize_vjepa2(plain) is plain
    out = normalize_vjepa2(v2_file(**{"max_workers": 6}))
    assert set(out) == {"eval_name", "tag", "folder", "classifier", "data", "optimization", "pretrain", "wrapper",
                        "module_name"}  # fmt: skip
    assert out["data"]["num_workers"] == 6 and out["folder"] == "/out/video_classification_frozen"
    assert out["wrapper"] == {"max_frames": 128, "use_pos_embed": False} and out["pretrain"]["use_rope"] is True
    assert vjepa2_key("experiment.data.frame_step") == "data.frame_step"
    assert vjepa2_key("model_kwargs.pretrain_kwargs.predictor.depth") == "predictor.depth"
    assert vjepa2_key("model_kwargs.pretrain_kwargs.encoder.img_temporal_dim_size") is None


def test_the_anticipation_eval_dispatches_to_its_own_config():
    files = [f for f in V2_FILES if f.name == "ek100.yaml"]
    if not files:
        pytest.skip("official configs not available")
    anticipation = pytest.importorskip("jepa.config.anticipation")
    assert all(isinstance(load_eval_config(f), anticipation.AnticipationConfig) for f in files)


# -- shipped configs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["diving48.yaml", "jester.yaml", "coin.yaml"])
def test_shipped_vjepa2_configs_follow_the_official_files(name, capsys):
    from evals.main import main

    assert main(["--fname", str(CONFIGS / name), "--validate"]) == 0  # placeholder absolute paths are tolerated
    ours = load_eval_config(CONFIGS / name)
    assert ours.optimization.attend_across_segments and ours.pretrain.use_rope and ours.resolution == 256
    official = OFFICIAL / "vjepa2" / "configs" / "eval" / "vitl" / name
    if not official.is_file():
        pytest.skip("official configs not available")
    theirs = load_eval_config(official)
    for key in ("frames_per_clip", "frame_step", "num_segments", "num_views_per_segment", "num_classes"):
        assert getattr(ours.data, key) == getattr(theirs.data, key), key
    assert ours.optimization.probes == theirs.optimization.probes
    assert ours.optimization.num_epochs == theirs.optimization.num_epochs
    assert ours.wrapper.out_layers == theirs.wrapper.out_layers and ours.classifier == theirs.classifier
    assert ours.encoder_spec() == theirs.encoder_spec()


# -- the summary line ----------------------------------------------------------------------------------------------
def test_the_summary_line_prints_the_metrics_the_eval_has(capsys):
    from evals.main import _print_summary

    _print_summary({"eval_name": "action_anticipation_frozen", "tag": "ek", "encoder_checkpoint": "e.pt",
                    "verb_recall5": 51.5, "noun_recall5": 40.25, "action_recall5": 20.0}, "/out")  # fmt: skip
    line = capsys.readouterr().out
    assert "verb recall@5 51.50%, noun recall@5 40.25%, action recall@5 20.00%" in line and "top-1" not in line
    _print_summary({"eval_name": "video_classification_frozen", "tag": "v", "encoder_checkpoint": None, "top1": 50.0,
                    "top5": 75.0, "val_samples": 4, "val_unreadable": 0, "best_probe": 1,
                    "probes": [{"probe": 0, "lr": 1.0, "weight_decay": 0.0, "val_top1": 25.0, "val_top5": 50.0},
                               {"probe": 1, "lr": 2.0, "weight_decay": 0.0, "val_top1": 50.0, "val_top5": 75.0}]},
                   "/out")  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert "random init: top-1 50.00%, top-5 75.00% over 4 of 4 val samples" in out[0] and "(probe 1 of 2)" in out[0]
    assert json.loads(out[1])[1] == {"probe": 1, "lr": 2.0, "weight_decay": 0.0, "val_top1": 50.0, "val_top5": 75.0}


# -- val_only ------------------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_val_only_evaluates_the_saved_probes_without_changing_them(tmp_path, digit_csvs, monkeypatch):
    from evals import probing
    from evals.main import main

    cfg = video_eval_config(tmp_path, digit_csvs)
    cfg["optimization"]["multihead_kwargs"] = [{"lr": 1e-3}, {"lr": 3e-3}]
    assert main(["--fname", str(write_yaml(tmp_path, cfg)), "--devices", "cpu"]) == 0
    folder = tmp_path / "out" / "video"
    latest = folder / "jepa-latest.pth.tar"
    trained = json.loads((folder / "results.json").read_text())
    before = sha256(latest), sha256(folder / "results.json")
    # the training split is not read: a missing training CSV does not matter
    inference = {**cfg, "val_only": True, "data": {**cfg["data"], "dataset_train": str(tmp_path / "gone.csv")}}
    steps = []
    monkeypatch.setattr(probing.ProbeTrainer, "train_step", lambda self, batch: steps.append(1))
    assert main(["--fname", str(write_yaml(tmp_path, inference, "inference.yaml")), "--devices", "cpu"]) == 0
    assert steps == [] and (sha256(latest), sha256(folder / "results.json")) == before
    result = json.loads((folder / "results_val_only.json").read_text())
    assert result["val_only"] is True and result["probe_checkpoint"] == str(latest) and result["epochs"] == 1
    # the same probes on the same clips: the very numbers the training run measured
    assert [p["val_top1"] for p in result["probes"]] == [p["val_top1"] for p in trained["probes"]]
    assert result["top1"] == trained["top1"] and result["val_samples"] == trained["val_samples"] == 4
    # one probe (an inference config) on the folder of several: the file's best one
    one = {**inference, "optimization": {**cfg["optimization"], "multihead_kwargs": [{"lr": 0.0}]}}
    assert main(["--fname", str(write_yaml(tmp_path, one, "one.yaml")), "--devices", "cpu"]) == 0
    result = json.loads((folder / "results_val_only.json").read_text())
    assert result["top1"] == trained["probes"][trained["best_probe"]]["val_top1"]
    assert sha256(latest) == before[0]


def test_val_only_reads_an_official_latest_pt(tmp_path, digit_csvs):
    """The official inference layout: ``<folder>/<eval_name>/<tag>/latest.pt`` holding ``classifiers`` with
    DDP-prefixed keys; an explicit ``probe_checkpoint`` is read as given."""
    from evals.video_classification_frozen.eval import main as video_main
    from jepa.models import AttentiveClassifier

    cfg = from_dict(EvalConfig, {**video_eval_config(tmp_path, digit_csvs), "val_only": True})
    torch.manual_seed(5)
    probe = AttentiveClassifier(embed_dim=48, num_heads=3, depth=1, num_classes=4)
    state = {f"module.{k}": v for k, v in probe.state_dict().items()}
    cfg.output_folder.mkdir(parents=True)
    torch.save({"classifiers": [state], "opt": [None], "scaler": None, "epoch": 20}, cfg.output_folder / "latest.pt")
    digest = sha256(cfg.output_folder / "latest.pt")
    summary = video_main(cfg, "cpu")
    assert summary["probe_checkpoint"] == str(cfg.output_folder / "latest.pt") and summary["epochs"] == 20
    assert sha256(cfg.output_folder / "latest.pt") == digest
    elsewhere = tmp_path / "probe.pt"
    (cfg.output_folder / "latest.pt").rename(elsewhere)
    cfg.probe_checkpoint = str(elsewhere)
    again = video_main(cfg, "cpu")
    assert again["probe_checkpoint"] == str(elsewhere) and again["top1"] == summary["top1"]


def test_a_missing_probe_checkpoint_is_an_error_before_any_work(tmp_path, digit_csvs, monkeypatch, capsys):
    from evals import encoder, probing
    from evals.main import main
    from evals.video_classification_frozen.eval import main as video_main

    cfg = from_dict(EvalConfig, {**video_eval_config(tmp_path, digit_csvs), "val_only": True})
    monkeypatch.setattr(encoder, "build_frozen_encoder", lambda cfg: pytest.fail("the encoder was built"))
    with pytest.raises(FileNotFoundError) as e:
        probing.run_eval(cfg, lambda *a: pytest.fail("the data were built"), "cpu")
    want = [str(cfg.output_folder / "jepa-latest.pth.tar"), str(cfg.output_folder / "latest.pt")]
    assert all(w in str(e.value) for w in want)
    with pytest.raises(FileNotFoundError, match="val_only: no probe checkpoint"):
        video_main(cfg, "cpu")
    # through the entry point: a config error (exit 1) naming the path, before a run starts
    raw = {**video_eval_config(tmp_path, digit_csvs), "val_only": True, "probe_checkpoint": "nope.pt"}
    assert main(["--fname", str(write_yaml(tmp_path, raw)), "--devices", "cpu"]) == 1
    assert f"probe_checkpoint: no probe checkpoint to evaluate: {cfg.output_folder / 'nope.pt'} exists" in (
        capsys.readouterr().err
    )
