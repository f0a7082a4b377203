"""Impossible configs are refused before anything is built (jepa.config rules, jepa.config.checks), keys the chosen
path never reads are errors or named warnings, and the training CSV log is LF-terminated."""

import copy
import errno
import logging
import os
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

import app.main
import app.pretrain
import evals.main
from jepa.config import ConfigError, apply_overrides, load_pretrain_config, to_dict
from jepa.config.checks import check_paths
from jepa.config.evals import load_eval_config
from jepa.config.pretrain import ImageMaskConfig, VideoMaskConfig
from jepa.runtime.logging_utils import CSVLogger

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "official_configs"
ABSENT_ROOT = "/jepa-no-such-top-level-folder"  # an absolute path of "another machine"

IMAGE = {
    "app": "ijepa",
    "data": {"dataset_type": "digits", "batch_size": 16, "crop_size": 32, "patch_size": 8},
    "mask": {"min_keep": 1, "num_pred_masks": 2},
    "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 2, "pred_embed_dim": 48},
    "optimization": {"epochs": 2, "warmup": 1},
}
VIDEO = {
    "app": "vjepa",
    "data": {"dataset_type": "moving_digits", "batch_size": 4, "crop_size": 32, "patch_size": 8, "num_frames": 4},
    "mask": [{"num_blocks": 2, "spatial_scale": [0.15, 0.15]}, {"num_blocks": 1, "spatial_scale": [0.5, 0.5]}],
    "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 2, "pred_embed_dim": 48},
    "optimization": {"epochs": 2, "warmup": 1},
}
EVAL = {
    "eval_name": "video_classification_frozen",
    "data": {"dataset_type": "moving_digits", "frames_per_clip": 4},
    "optimization": {"resolution": 32, "batch_size": 2, "num_epochs": 1},
    "pretrain": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8,
                 "frames_per_clip": 4, "checkpoint": None},
}  # fmt: skip
IMAGE_EVAL = {
    "eval_name": "image_classification_frozen",
    "data": {"dataset_name": "digits", "resolution": 32},
    "optimization": {"batch_size": 2, "num_epochs": 1},
    "pretrain": {**EVAL["pretrain"], "frames_per_clip": 1},
}


@pytest.fixture(autouse=True)
def _quiet_entry_points(monkeypatch):
    # The entry points configure logging; leave pytest's capture alone.
    monkeypatch.setattr(app.main, "setup_logging", lambda **_: None)
    monkeypatch.setattr(evals.main, "setup_logging", lambda **_: None)


def raw_config(base: dict, tmp_path: Path, *overrides: str) -> dict:
    raw = copy.deepcopy(base)
    if "eval_name" in raw:
        raw["folder"] = str(tmp_path / "out")
    else:
        raw["logging"] = {"folder": str(tmp_path / "run")}
    if raw["data"].get("dataset_type") == "moving_digits":
        raw["data"]["root_path"] = str(tmp_path / "clips")
    apply_overrides(raw, list(overrides))
    if raw["data"].get("dataset_type") != "moving_digits" and raw["data"].get("root_path") == str(tmp_path / "clips"):
        del raw["data"]["root_path"]  # switched to a data set that reads no clip folder
    return raw


def write(tmp_path: Path, raw: dict, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def validate(path: Path, capsys, *extra: str) -> tuple[int, str]:
    main = evals.main.main if "eval_name" in yaml.safe_load(path.read_text()) else app.main.main
    code = main(["--fname", str(path), "--validate", *extra])
    out = capsys.readouterr()
    if code:
        assert out.out == ""  # nothing resolved is printed for an invalid config
    return code, out.err


def no_models(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built for a config that should have been refused")

    monkeypatch.setattr(app.pretrain, "Pretrainer", refuse)
    monkeypatch.setattr(app.pretrain, "build_models", refuse)


# Each impossible value: (base config, override, text the message must hold besides "config error").
IMPOSSIBLE = [
    (IMAGE, "optimization.lr=-1e-3", "optimization.lr: got -0.001"),
    (IMAGE, "optimization.start_lr=-1e-4", "optimization.start_lr"),
    (IMAGE, "optimization.final_lr=-1e-6", "optimization.final_lr"),
    (IMAGE, "optimization.weight_decay=-0.04", "optimization.weight_decay"),
    (IMAGE, "optimization.final_weight_decay=-0.4", "optimization.final_weight_decay"),
    (IMAGE, "optimization.clip_grad=-1.0", "optimization.clip_grad"),
    (IMAGE, "optimization.clip_grad=0", "optimization.clip_grad"),
    (IMAGE, "optimization.lr=.nan", "optimization.lr: got nan, expected a finite number"),
    (IMAGE, "optimization.lr=nan", "optimization.lr"),
    (IMAGE, "optimization.weight_decay=.inf", "optimization.weight_decay"),
    (IMAGE, "meta.log_freq=0", "meta.log_freq: got 0"),
    (IMAGE, "meta.checkpoint_freq=0", "meta.checkpoint_freq: got 0"),
    (IMAGE, "meta.seed=-1", "meta.seed"),
    (IMAGE, "optimization.ipe=0", "optimization.ipe: got 0"),
    (IMAGE, "optimization.ipe=-5", "optimization.ipe"),
    (IMAGE, "data.patch_size=0", "data.patch_size: got 0"),
    (IMAGE, "data.crop_size=0", "data.crop_size"),
    (IMAGE, "model.depth=0", "model.depth: got 0"),
    (IMAGE, "model.embed_dim=0", "model.embed_dim"),
    (IMAGE, "model.pred_depth=0", "model.pred_depth: got 0"),
    (IMAGE, "optimization.betas=[0.9, 1.0]", "optimization.betas"),
    (IMAGE, "optimization.betas=[-0.1, 0.999]", "optimization.betas"),
    (IMAGE, "model.num_heads=5", "model.embed_dim 48 is not divisible by num_heads 5"),
    (IMAGE, "model.pred_num_heads=5", "model.pred_embed_dim 48 is not divisible"),
    (IMAGE, "model.embed_dim=42", "model.embed_dim: the sine-cosine position table"),
    (IMAGE, "mask.min_keep=17", "mask.min_keep: got 17, expected at most the 16 tokens"),
    (IMAGE, "mask.min_keep=0", "mask.min_keep"),
    (IMAGE, "mask.enc_mask_scale=[0.0, 1.0]", "mask.enc_mask_scale"),
    (IMAGE, "mask.pred_mask_scale=[0, 0.2]", "mask.pred_mask_scale"),
    (IMAGE, "model.drop_path_rate=2", "model.drop_path_rate: got 2.0"),
    (IMAGE, "model.drop_path_rate=1.0", "model.drop_path_rate"),
    (IMAGE, "loss.loss_exp=0", "loss.loss_exp: got 0.0"),
    (IMAGE, "data.dataset_type=digts", "data.dataset_type: got 'digts'"),
    (IMAGE, "data.dataset_type=moving_digits", "app ijepa reads image data sets"),
    (IMAGE, "optimization.epochs=0", "optimization.epochs"),
    (IMAGE, "optimization.warmup=-3", "optimization.warmup: got -3.0, expected epochs >= 0"),
    (IMAGE, "data.batch_size=0", "data.batch_size: got 0"),
    (IMAGE, "data.num_workers=-1", "data.num_workers: got -1"),
    (IMAGE, "optimization.ema=[1.0, 0.99]", "optimization.ema"),
    (IMAGE, "optimization.ema=[0.9, 1.1]", "optimization.ema"),
    (IMAGE, "optimization.ipe_scale=0", "optimization.ipe_scale"),
    (IMAGE, "data.crop_scale=[0.0, 1.0]", "data.crop_scale"),
    (IMAGE, "nodes=0", "nodes: got 0"),
    (IMAGE, "data.dataset_type=ImageFolder", "data.root_path: required"),
    (VIDEO, "data.num_frames=0", "data.num_frames: got 0"),
    (VIDEO, "data.tubelet_size=0", "data.tubelet_size: got 0"),
    (VIDEO, "data.num_frames=5", "data.num_frames 5 is not a multiple of tubelet_size 2"),
    (VIDEO, "data.sampling_rate=0", "data.sampling_rate"),
    (VIDEO, "data_aug.reprob=2", "data_aug.reprob: got 2.0"),
    (VIDEO, "data_aug.random_resize_scale=[0.0, 1.0]", "data_aug.random_resize_scale"),
    (VIDEO, "mask.0.spatial_scale=[0.0, 0.15]", "mask[0].spatial_scale"),
    (VIDEO, "mask.1.temporal_scale=[0.5, 1.5]", "mask[1].temporal_scale"),
    (VIDEO, "mask.0.num_blocks=0", "mask[0].num_blocks"),
    (VIDEO, "mask.0.max_temporal_keep=0", "mask[0].max_temporal_keep"),
    (VIDEO, "mask.0.aspect_ratio=[0, 1.5]", "mask[0].aspect_ratio"),
    (VIDEO, "data.dataset_type=VideoDatset", "did you mean 'VideoDataset'"),
    (VIDEO, "data.dataset_type=digits", "app vjepa reads video data sets"),
    (VIDEO, "data.dataset_type=VideoDataset", "data.datasets: lists no annotation CSV"),
    (VIDEO, "model.embed_dim=36", "model.embed_dim: the sine-cosine position table needs a width divisible by 8"),
    (EVAL, "optimization.lr=-1e-3", "optimization.lr: got -0.001"),
    (EVAL, "optimization.start_lr=-1e-3", "optimization.start_lr"),
    (EVAL, "optimization.final_lr=-1e-3", "optimization.final_lr"),
    (EVAL, "optimization.weight_decay=-0.01", "optimization.weight_decay"),
    (EVAL, "optimization.final_weight_decay=-0.01", "optimization.final_weight_decay"),
    (EVAL, "optimization.warmup=-1", "optimization.warmup"),
    (EVAL, "optimization.lr=.nan", "optimization.lr"),
    (EVAL, "optimization.num_epochs=0", "optimization.num_epochs: got 0"),
    (EVAL, "optimization.warmup=2", "warmup 2.0 of probe 0 exceeds num_epochs 1"),
    (EVAL, "optimization.batch_size=0", "optimization.batch_size: got 0"),
    (EVAL, "optimization.clip_grad=0", "optimization.clip_grad"),
    (EVAL, "optimization.betas=[0.9, 1.5]", "optimization.betas"),
    (EVAL, "optimization.multihead_kwargs=[{lr: -1.0}]", "optimization.multihead_kwargs[0].lr: got -1.0"),
    (EVAL, "classifier.num_probe_blocks=0", "classifier.num_probe_blocks: got 0"),
    (EVAL, "classifier.num_heads=0", "classifier.num_heads"),
    (EVAL, "classifier.num_heads=5", "classifier.num_heads 5 does not divide the encoder width 48"),
    (EVAL, "pretrain.num_heads=5", "pretrain.embed_dim 48 is not divisible by num_heads 5"),
    (EVAL, "pretrain.patch_size=0", "pretrain.patch_size: got 0"),
    (EVAL, "pretrain.depth=0", "pretrain.depth"),
    (EVAL, "pretrain.tubelet_size=0", "pretrain.tubelet_size"),
    (EVAL, "data_aug.reprob=2", "data_aug.reprob: got 2.0"),
    (EVAL, "data.frames_per_clip=0", "data.frames_per_clip: got 0"),
    (EVAL, "data.num_workers=-1", "data.num_workers"),
    (EVAL, "data.dataset_type=moving_digit", "did you mean 'moving_digits'"),
    (EVAL, "data.num_classes=400", "data.num_classes: got 400, but moving_digits with label digit has 10"),
    (EVAL, "data.resolution=0", "data.resolution"),
]


def _id(case) -> str:
    base, override, _ = case
    kind = "eval" if base is EVAL else base["app"]
    return f"{kind}:{override}"


@pytest.mark.parametrize("base, override, expected", IMPOSSIBLE, ids=[_id(c) for c in IMPOSSIBLE])
def test_validate_refuses_an_impossible_value_naming_the_key(tmp_path, capsys, base, override, expected):
    path = write(tmp_path, raw_config(base, tmp_path))
    code, err = validate(path, capsys, "--set", override)
    assert code == 1, err
    assert err.startswith(f"config error: {path}: ") and expected in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("base", [IMAGE, VIDEO, EVAL, IMAGE_EVAL], ids=["ijepa", "vjepa", "eval", "image-eval"])
def test_the_base_configs_of_these_tests_are_valid(tmp_path, capsys, base):
    code, err = validate(write(tmp_path, raw_config(base, tmp_path)), capsys)
    assert code == 0, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()  # --validate leaves no folder


def test_a_patch_size_of_zero_is_refused_before_any_division(tmp_path):
    raw = raw_config(IMAGE, tmp_path, "data.patch_size=0", "mask.patch_size=0")
    with pytest.raises(ConfigError, match="patch_size: got 0"):
        load_pretrain_config(write(tmp_path, raw))


def _accepted(build) -> bool:
    try:
        build()
    except (ConfigError, ValueError):  # the config's refusal, the collator's
        return False
    return True


@pytest.mark.parametrize("scale", [(0.0, 0.2), (1e-3, 0.2), (0.5, 1.0), (0.5, 1.01)])
def test_image_mask_scale_bounds_are_the_collators(scale):
    from jepa.image.masks import MultiblockMaskCollator2D

    config_ok = _accepted(lambda: ImageMaskConfig(pred_mask_scale=scale, min_keep=1))
    collator_ok = _accepted(lambda: MultiblockMaskCollator2D(input_size=32, patch_size=8, pred_mask_scale=scale,
                                                            min_keep=1))  # fmt: skip
    assert config_ok == collator_ok


@pytest.mark.parametrize("key", ["spatial_scale", "temporal_scale"])
@pytest.mark.parametrize("scale", [(0.0, 0.2), (1e-3, 0.2), (0.5, 1.0), (0.5, 1.01)])
def test_video_mask_scale_bounds_are_the_collators(key, scale):
    from jepa.video.masks import MultiblockMaskCollator3D

    values = {"spatial_scale": (0.15, 0.15), "temporal_scale": (1.0, 1.0), key: scale}
    assert _accepted(lambda: VideoMaskConfig(**values)) == _accepted(
        lambda: MultiblockMaskCollator3D([dict(aspect_ratio=(0.75, 1.5), num_blocks=2, **values)], crop_size=32,
                                         num_frames=2, patch_size=8)  # fmt: skip
    )


# -- keys the chosen path never reads ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "base, overrides, expected",
    [
        (VIDEO, ["data.datasets=[k400.csv]"], "data.datasets is set, but dataset_type moving_digits"),
        (IMAGE, ["data.datasets=[k400.csv]"], "data.datasets lists video annotation CSVs, but app ijepa"),
        (IMAGE, ["data.root_path=/data/imagenet"], "data.root_path is set, but dataset_type digits is built in"),
        (IMAGE, ["data.image_folder=imagenet"], "data.image_folder is set"),
        (EVAL, ["data.dataset_train=train.csv"], "data.dataset_train is set, but dataset_type moving_digits"),
        (IMAGE_EVAL, ["data.dataset_val=v.csv"], "data.dataset_val lists video annotation CSVs"),
        (
            IMAGE_EVAL,
            ["data.dataset_name=mnist5k", "data.image_folder=x"],
            "data.image_folder is set, but dataset_name mnist5k is built in",
        ),
    ],  # fmt: skip
    ids=[
        "moving-digits-with-csvs",
        "ijepa-with-csvs",
        "digits-with-root",
        "digits-with-folder",
        "eval-moving-digits-with-csv",
        "image-eval-with-csv",
        "eval-mnist5k-with-folder",
    ],  # fmt: skip
)
def test_a_key_that_contradicts_the_chosen_data_is_an_error(tmp_path, capsys, base, overrides, expected):
    code, err = validate(write(tmp_path, raw_config(base, tmp_path, *overrides)), capsys)
    assert code == 1 and expected in err, err


@pytest.mark.parametrize(
    "base, overrides, key",
    [
        (IMAGE, ["data.num_frames=8"], "data.num_frames"),
        (IMAGE, ["data.decoder=pyav"], "data.decoder"),
        (IMAGE, ["data_aug.reprob=0.25"], "data_aug.reprob"),
        (IMAGE, ["loss.loss_exp=2"], "loss.loss_exp"),
        (VIDEO, ["data.crop_scale=[0.5, 1.0]"], "data.crop_scale"),
        (VIDEO, ["data.use_horizontal_flip=true"], "data.use_horizontal_flip"),
        (VIDEO, ["data.image_folder=x"], "data.image_folder"),
        (EVAL, ["data.dataset_name=ImageNet"], "data.dataset_name"),
        (EVAL, ["optimization.multihead_kwargs=[{lr: 0.01}]", "optimization.lr=0.5"], "optimization.lr"),
        (IMAGE_EVAL, ["data.num_segments=4"], "data.num_segments"),
        (IMAGE_EVAL, ["data.frame_step=2"], "data.frame_step"),
    ],  # fmt: skip
)
def test_a_key_the_chosen_path_ignores_is_a_named_warning(tmp_path, capsys, caplog, base, overrides, key):
    raw = raw_config(base, tmp_path, *overrides)
    with caplog.at_level(logging.WARNING, logger="jepa.config.strict"):
        code, err = validate(write(tmp_path, raw), capsys)
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if "is set but not used" in r.getMessage()]
    assert len(warnings) == 1 and f"'{key}'" in warnings[0], warnings


def test_a_video_dataset_config_with_a_root_path_warns(tmp_path, caplog):
    csv = tmp_path / "k.csv"
    csv.write_text("a.mp4 0\n")
    raw = raw_config(VIDEO, tmp_path, "data.dataset_type=VideoDataset", f"data.datasets=[{csv}]")
    raw["data"]["root_path"] = str(tmp_path)
    with caplog.at_level(logging.WARNING, logger="jepa.config.strict"):
        load_pretrain_config(write(tmp_path, raw))
    assert "'data.root_path' is set but not used" in caplog.text


def _official(folder: str) -> list:
    files = sorted((OFFICIAL / folder).glob("**/*.yaml"))
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {OFFICIAL / folder}"))]
    return [pytest.param(f, id=str(f.relative_to(OFFICIAL))) for f in files]


@pytest.mark.parametrize(
    "path", _official("ijepa/configs") + _official("jepa/configs") + _official("vjepa2/configs/eval")
)
def test_official_configs_set_no_key_their_path_ignores(path, caplog):
    raw = yaml.safe_load(path.read_text())
    load = load_pretrain_config if "mask" in raw or "app" in raw else load_eval_config
    try:
        with caplog.at_level(logging.WARNING, logger="jepa.config.strict"):
            load(path)
    except ConfigError as e:
        if "eval_name" not in str(e):  # evals this toolkit does not run (action anticipation) are refused as such
            raise
    assert "is set but not used" not in caplog.text


# -- data, checkpoints and folders ---------------------------------------------------------------------------------
def video_dataset_config(tmp_path: Path, csv: str | Path) -> Path:
    return write(tmp_path, raw_config(VIDEO, tmp_path, "data.dataset_type=VideoDataset", f"data.datasets=['{csv}']"))


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, "annotation file {csv} does not exist"),
        ("", "annotation file {csv} lists no videos"),
        ("\n\n", "annotation file {csv} lists no videos"),
        ("a.mp4 0\nb.mp4 dog\n", "{csv}:2: expected '<video path> <integer label>', got 'b.mp4 dog'"),
        ("a.mp4,0\n", "{csv}:1: expected '<video path> <integer label>'"),
    ],
    ids=["missing", "empty", "blank", "bad-label", "comma-separated"],
)
def test_validate_reads_the_annotation_csvs(tmp_path, capsys, text, expected):
    csv = tmp_path / "k400.csv"
    if text is not None:
        csv.write_text(text)
    code, err = validate(video_dataset_config(tmp_path, csv), capsys)
    assert code == 1 and "data.datasets[0]: " + expected.format(csv=csv) in err, err


def test_a_parsing_csv_validates(tmp_path, capsys):
    csv = tmp_path / "k400.csv"
    csv.write_text("clips/a b.mp4 3\n\n/abs/c.mp4 0\n")  # paths may hold spaces; the videos are read later
    code, err = validate(video_dataset_config(tmp_path, csv), capsys)
    assert code == 0, err


def test_a_run_with_a_missing_csv_fails_before_building_anything(tmp_path, capsys, monkeypatch):
    no_models(monkeypatch)
    path = video_dataset_config(tmp_path, tmp_path / "missing.csv")
    assert app.main.main(["--fname", str(path), "--devices", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"config error: {path}: data.datasets[0]: annotation file {tmp_path / 'missing.csv'}" in err


def test_validate_only_logs_paths_of_another_machine_and_a_run_refuses_them(tmp_path, capsys, caplog, monkeypatch):
    path = video_dataset_config(tmp_path, f"{ABSENT_ROOT}/k400.csv")
    with caplog.at_level(logging.WARNING, logger="jepa.config.checks"):
        code, err = validate(path, capsys)
    assert code == 0, err
    assert f"data.datasets[0]: {ABSENT_ROOT}/k400.csv not checked" in caplog.text
    no_models(monkeypatch)
    assert app.main.main(["--fname", str(path), "--devices", "cpu"]) == 1
    assert "data.datasets[0]: annotation file" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["missing", "no-classes", "ok"])
def test_an_image_folder_needs_class_folders_under_train(tmp_path, capsys, layout):
    root = tmp_path / "data"
    if layout != "missing":
        (root / "in1k" / "train").mkdir(parents=True)
    if layout == "ok":
        (root / "in1k" / "train" / "n01440764").mkdir()
    raw = raw_config(IMAGE, tmp_path, "data.dataset_type=ImageFolder", f"data.root_path={root}",
                     "data.image_folder=in1k")  # fmt: skip
    code, err = validate(write(tmp_path, raw), capsys)
    if layout == "ok":
        assert code == 0, err
    else:
        expected = "does not exist" if layout == "missing" else "holds no class folders"
        assert code == 1 and f"data.root_path / data.image_folder: image split folder {root}/in1k/train" in err
        assert expected in err


def test_read_checkpoint_must_exist_relative_to_the_logging_folder(tmp_path, capsys):
    raw = raw_config(IMAGE, tmp_path, "meta.load_checkpoint=true", "meta.read_checkpoint=ep3.pth.tar")
    code, err = validate(write(tmp_path, raw), capsys)
    assert code == 1 and f"meta.read_checkpoint: {tmp_path / 'run' / 'ep3.pth.tar'} does not exist" in err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ep3.pth.tar").write_bytes(b"")
    assert validate(write(tmp_path, raw), capsys)[0] == 0
    # Not read at all when the run is not asked to load a checkpoint, or resumes from an existing `latest`.
    (tmp_path / "run" / "ep3.pth.tar").unlink()
    assert validate(write(tmp_path, {**raw, "meta": {"read_checkpoint": "ep3.pth.tar"}}), capsys)[0] == 0
    (tmp_path / "run" / "jepa-latest.pth.tar").write_bytes(b"")
    assert validate(write(tmp_path, raw), capsys, "--resume")[0] == 0


def test_an_unwritable_logging_folder_is_a_config_error(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    raw = raw_config(IMAGE, tmp_path)
    raw["logging"]["folder"] = str(blocker / "run")
    code, err = validate(write(tmp_path, raw), capsys)
    assert code == 1 and f"logging.folder: cannot create or write the folder {blocker / 'run'}" in err
    no_models(monkeypatch)
    assert app.main.main(["--fname", str(write(tmp_path, raw)), "--devices", "cpu"]) == 1


def test_a_read_only_logging_folder_is_a_config_error(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes into read-only folders: make the write fail as it would for a user

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    raw = raw_config(IMAGE, tmp_path)
    raw["logging"]["folder"] = str(folder)
    code, err = validate(write(tmp_path, raw), capsys)
    assert code == 1 and f"logging.folder: cannot create or write the folder {folder}: Permission denied" in err


def test_all_path_problems_are_reported_at_once(tmp_path):
    raw = raw_config(VIDEO, tmp_path, "data.dataset_type=VideoDataset", "data.datasets=[a.csv, b.csv]")
    cfg = load_pretrain_config(write(tmp_path, raw))
    with pytest.raises(ConfigError) as e:
        check_paths(cfg)
    assert str(e.value).startswith("2 problems with the paths it names:")
    assert "data.datasets[0]: annotation file a.csv" in str(e.value) and "data.datasets[1]" in str(e.value)


# -- evals -----------------------------------------------------------------------------------------------------------
def csv_eval(tmp_path: Path, train: str, val: str, *overrides: str) -> Path:
    raw = raw_config(EVAL, tmp_path, "data.dataset_type=VideoDataset", f"data.dataset_train={train}",
                     f"data.dataset_val={val}", "data.num_classes=4", *overrides)  # fmt: skip
    return write(tmp_path, raw, "eval.yaml")


def test_eval_csvs_must_exist_and_hold_labels_below_num_classes(tmp_path, capsys):
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("a.mp4 0\nb.mp4 3\n")
    code, err = validate(csv_eval(tmp_path, train, val), capsys)
    assert code == 1 and f"data.dataset_val: annotation file {val} does not exist" in err
    val.write_text("a.mp4 1\nb.mp4 4\n")
    code, err = validate(csv_eval(tmp_path, train, val), capsys)
    assert code == 1 and f"data.dataset_val: {val}:2: label 4 is outside [0, num_classes=4)" in err
    val.write_text("a.mp4 1\n")
    assert validate(csv_eval(tmp_path, train, val), capsys)[0] == 0


def test_image_eval_needs_train_and_val_with_the_same_classes(tmp_path, capsys):
    root = tmp_path / "images"
    for split, classes in (("train", 3), ("val", 2)):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
    raw = raw_config(IMAGE_EVAL, tmp_path, "data.dataset_name=ImageFolder", f"data.root_path={root}",
                     "data.num_classes=3")  # fmt: skip
    code, err = validate(write(tmp_path, raw), capsys)
    assert code == 1 and "train has 3 class folders but val has 2" in err
    raw["data"]["image_folder"] = "nowhere"
    code, err = validate(write(tmp_path, raw), capsys)
    assert code == 1 and f"{root}/nowhere/train does not exist" in err and f"{root}/nowhere/val" in err


def test_a_missing_eval_checkpoint_fails_before_building_anything(tmp_path, capsys, monkeypatch):
    import evals.encoder

    def refuse(*args, **kwargs):
        raise AssertionError("an encoder was built for a config that should have been refused")

    monkeypatch.setattr(evals.encoder, "build_frozen_encoder", refuse)
    raw = raw_config(EVAL, tmp_path, f"pretrain.folder={tmp_path}", "pretrain.checkpoint=nope.pt")
    path = write(tmp_path, raw)
    assert evals.main.main(["--fname", str(path), "--devices", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"pretrain.checkpoint: {tmp_path / 'nope.pt'} does not exist" in err


def pretrain_checkpoint(tmp_path: Path, *overrides: str) -> Path:
    """A file with what our checkpoints store besides weights: the run's resolved config."""
    cfg = load_pretrain_config(write(tmp_path, raw_config(VIDEO, tmp_path, *overrides), "pretrain.yaml"))
    path = tmp_path / "jepa-latest.pth.tar"
    torch.save({"target_encoder": {"w": torch.zeros(1)}, "config": to_dict(cfg)}, path)
    return path


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["pretrain.frames_per_clip=8", "data.frames_per_clip=8"], "pretrain.frames_per_clip: got 8, but the"),
        (["pretrain.num_heads=4"], "pretrain.num_heads: got 4"),
        (["pretrain.patch_size=4"], "pretrain.patch_size: got 4"),
        (["pretrain.uniform_power=true"], "pretrain.uniform_power: got True"),
        (
            [
                "pretrain.model_name=vit_tiny",
                "pretrain.embed_dim=null",
                "pretrain.depth=null",
                "pretrain.num_heads=null",
            ],
            "pretrain.embed_dim: got 192",
        ),
    ],  # fmt: skip
    ids=["frames", "heads", "patch", "uniform-power", "named-size"],
)
def test_eval_architecture_must_match_the_checkpoints_stored_config(tmp_path, capsys, overrides, expected):
    ckpt = pretrain_checkpoint(tmp_path)
    raw = raw_config(EVAL, tmp_path, f"pretrain.folder={tmp_path}", f"pretrain.checkpoint={ckpt.name}", *overrides)
    code, err = validate(write(tmp_path, raw), capsys)
    assert code == 1 and expected in err and str(ckpt) in err and "(its stored config)" in err, err


def test_an_eval_agreeing_with_the_checkpoint_validates(tmp_path, capsys):
    ckpt = pretrain_checkpoint(tmp_path)
    raw = raw_config(EVAL, tmp_path, f"pretrain.folder={tmp_path}", f"pretrain.checkpoint={ckpt.name}")
    assert validate(write(tmp_path, raw), capsys) == (0, f"# {tmp_path / 'cfg.yaml'}: valid\n")
    # A RoPE encoder has no position table tied to the frame count: longer eval clips are fine.
    ckpt = pretrain_checkpoint(tmp_path, "model.use_rope=true")
    raw = raw_config(EVAL, tmp_path, f"pretrain.folder={tmp_path}", f"pretrain.checkpoint={ckpt.name}",
                     "pretrain.use_rope=true", "pretrain.frames_per_clip=8", "data.frames_per_clip=8")  # fmt: skip
    assert validate(write(tmp_path, raw), capsys)[0] == 0


# -- the training CSV log ------------------------------------------------------------------------------------------
def test_csv_log_lines_end_with_lf(tmp_path):
    log = CSVLogger(tmp_path / "log.csv", ["step", "loss"])
    log.log(step=1, loss=0.5)
    log.log(step=2, loss=0.25)
    assert (tmp_path / "log.csv").read_bytes() == b"step,loss\n1,0.5\n2,0.25\n"


def test_csv_log_appends_to_a_crlf_file_of_an_older_version(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"step,loss\r\n1,0.5\r\n2,0.25\r\n3,0.125\r\n")
    log = CSVLogger(path, ["step", "loss"], append=True)
    log.drop_rows_after("step", 2)
    log.log(step=3, loss=0.1)
    assert path.read_bytes() == b"step,loss\n1,0.5\n2,0.25\n3,0.1\n"
    with pytest.raises(ValueError, match="has columns"):
        CSVLogger(path, ["step", "lr"], append=True)
