"""Strict pretraining configs (jepa.config): official files load unchanged, errors name the key, overrides, CLI."""

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

import app.main
from jepa.config import ConfigError, apply_overrides, dump_config, from_dict, load_pretrain_config, to_dict
from jepa.config.pretrain import ImageMaskConfig, VideoMaskConfig

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT.parent / "shared" / "official_configs"
OUR_CONFIGS = sorted((ROOT / "configs" / "pretrain").glob("*.yaml"))
IJEPA_VITH14 = "ijepa/configs/in1k_vith14_ep300.yaml"
VJEPA_VITL16 = "jepa/configs/pretrain/vitl16.yaml"


def official_params(folder: str) -> list:
    """One param per official YAML file under ``folder``, or a single skipped param when the folder is absent."""
    files = sorted((OFFICIAL / folder).glob("*.yaml"))
    if not files:
        return [pytest.param(None, id=f"{folder}-absent", marks=pytest.mark.skip(reason=f"no {OFFICIAL / folder}"))]
    return [pytest.param(f, id=f"{folder.split('/')[0]}-{f.stem}") for f in files]


def official(relative: str) -> Path:
    path = OFFICIAL / relative
    if not path.is_file():
        pytest.skip(f"official config {path} is absent")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # One intra-op thread: the machine may be shared, and torch's idle OpenMP threads then spin on busy cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "app.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def tiny_raw() -> dict:
    """A small valid I-JEPA config as a plain dict, for tests to edit and write."""
    return {
        "app": "ijepa",
        "data": {"dataset_type": "digits", "batch_size": 16, "crop_size": 32, "patch_size": 8},
        "mask": {"min_keep": 1, "num_pred_masks": 2},
        "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 2},
        "optimization": {"epochs": 2, "warmup": 1},
    }


def write_yaml(tmp_path: Path, raw: object, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", official_params("ijepa/configs") + official_params("jepa/configs/pretrain"))
def test_official_config_loads_unchanged_and_round_trips(path, tmp_path):
    cfg = load_pretrain_config(path)
    assert cfg.app == ("ijepa" if "ijepa" in path.parts else "vjepa")
    # The resolved config a run writes next to its outputs must load back to the same config.
    assert load_pretrain_config(write_yaml(tmp_path, dump_config(cfg))) == cfg


def test_official_ijepa_values_are_mapped():
    cfg = load_pretrain_config(official(IJEPA_VITH14))
    assert cfg.app == "ijepa"
    assert cfg.model.model_name == "vit_huge"
    assert cfg.model.pred_embed_dim == 384
    assert cfg.model.pred_depth == 12
    assert cfg.data.patch_size == 14
    assert cfg.meta.dtype == "bfloat16"
    assert isinstance(cfg.mask, ImageMaskConfig)
    assert cfg.mask.num_pred_masks == 4
    assert cfg.mask.patch_size == 14
    assert cfg.data.crop_scale == (0.3, 1.0)


def test_official_vjepa_values_are_mapped():
    cfg = load_pretrain_config(official(VJEPA_VITL16))
    assert cfg.app == "vjepa"
    assert isinstance(cfg.mask, list) and len(cfg.mask) == 2
    assert all(isinstance(m, VideoMaskConfig) for m in cfg.mask)
    assert cfg.mask[0].num_blocks == 8
    assert cfg.mask[1].num_blocks == 2
    assert cfg.mask[1].spatial_scale == (0.7, 0.7)
    assert cfg.optimization.ipe_scale == 1.25
    assert cfg.optimization.ipe == 300
    assert cfg.model.model_name == "vit_large"
    assert cfg.meta.seed == 234


def test_official_ijepa_ignored_key_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="jepa.config.strict"):
        load_pretrain_config(official(IJEPA_VITH14))
    assert "meta.copy_data" in caplog.text


def test_ignored_key_is_accepted_with_a_warning(tmp_path, caplog):
    raw = tiny_raw()
    raw["meta"] = {"copy_data": True}
    with caplog.at_level(logging.WARNING, logger="jepa.config.strict"):
        cfg = load_pretrain_config(write_yaml(tmp_path, raw))
    assert cfg.meta.copy_data is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "meta.copy_data" in warnings[0].getMessage()


def test_no_warning_without_ignored_keys(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="jepa.config.strict"):
        load_pretrain_config(write_yaml(tmp_path, tiny_raw()))
    assert not caplog.records


@pytest.mark.parametrize("path", OUR_CONFIGS, ids=lambda p: p.stem)
def test_our_configs_load_and_validate(path, capsys, monkeypatch):
    cfg = load_pretrain_config(path)
    name = path.name.replace("vjepa21", "vjepa_2_1")
    assert cfg.app == next(a for a in ("lejepa", "vjepa_droid", "vjepa_2_1", "vjepa", "ijepa") if a in name)
    monkeypatch.setattr(app.main, "setup_logging", lambda **_: None)  # leave pytest's log capture alone
    assert app.main.main(["--fname", str(path), "--validate"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out) == to_dict(cfg)
    assert "valid" in out.err


def test_our_ijepa_recipe_matches_the_official_file():
    ours = to_dict(load_pretrain_config(ROOT / "configs" / "pretrain" / "ijepa_vith14_in1k.yaml"))
    theirs = to_dict(load_pretrain_config(official(IJEPA_VITH14)))
    for section in ("model", "optimization"):
        assert ours[section] == theirs[section], section
    assert {**ours["mask"], "patch_size": 14} == theirs["mask"]
    assert {**ours["data"], "root_path": None} == {**theirs["data"], "root_path": None}
    assert ours["meta"]["dtype"] == theirs["meta"]["dtype"] == "bfloat16"
    assert ours["nodes"] * ours["tasks_per_node"] * ours["data"]["batch_size"] == 2048  # the paper's batch


def test_validate_cli_on_official_file_prints_yaml():
    path = official(VJEPA_VITL16)
    proc = run_cli("--fname", str(path), "--validate")
    assert proc.returncode == 0, proc.stderr
    # stdout is the resolved config alone, so that `--validate > resolved.yaml` works; logs belong elsewhere.
    try:
        printed = yaml.safe_load(proc.stdout)
    except yaml.YAMLError as e:
        pytest.fail(f"--validate stdout is not YAML ({type(e).__name__}); it starts with {proc.stdout[:160]!r}")
    assert printed == to_dict(load_pretrain_config(path))
    assert printed["app"] == "vjepa" and len(printed["mask"]) == 2


def test_validate_bad_file_exits_1_with_message_on_stderr(tmp_path, capsys, monkeypatch):
    raw = tiny_raw()
    raw["optimization"]["lrr"] = 1e-3
    path = write_yaml(tmp_path, raw)
    monkeypatch.setattr(app.main, "setup_logging", lambda **_: None)
    assert app.main.main(["--fname", str(path), "--validate"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "optimization.lrr" in out.err and "'lr'" in out.err and str(path) in out.err


def test_unknown_key_names_the_path_and_suggests(tmp_path):
    raw = tiny_raw()
    raw["optimization"]["lrr"] = 1e-3
    path = write_yaml(tmp_path, raw)
    with pytest.raises(ConfigError, match=r"optimization\.lrr") as e:
        load_pretrain_config(path)
    assert "did you mean 'lr'" in str(e.value)
    assert str(path) in str(e.value)


def test_unknown_top_level_section_is_an_error(tmp_path):
    raw = tiny_raw()
    raw["optimisation"] = {"lr": 1e-3}
    with pytest.raises(ConfigError, match="did you mean 'optimization'"):
        load_pretrain_config(write_yaml(tmp_path, raw))


def test_misspelt_key_in_image_mask_is_named(tmp_path):
    # `mask` is `ImageMaskConfig | list[VideoMaskConfig]`; the error from the matching member must survive the union.
    raw = tiny_raw()
    raw["mask"]["num_pred_mask"] = 4
    with pytest.raises(ConfigError) as e:
        load_pretrain_config(write_yaml(tmp_path, raw))
    assert "mask.num_pred_mask" in str(e.value)
    assert "did you mean 'num_pred_masks'" in str(e.value)


def test_wrong_type_names_key_value_and_type(tmp_path):
    raw = tiny_raw()
    raw["data"]["batch_size"] = "big"
    with pytest.raises(ConfigError) as e:
        load_pretrain_config(write_yaml(tmp_path, raw))
    message = str(e.value)
    assert "data.batch_size" in message and "'big'" in message and "int" in message


def test_float_given_as_yaml_string_is_a_number(tmp_path):
    text = yaml.safe_dump(tiny_raw())
    assert "  warmup: 1\n" in text
    path = write_yaml(tmp_path, text.replace("  warmup: 1\n", "  warmup: 1\n  lr: 1e-4\n"))
    assert yaml.safe_load(path.read_text())["optimization"]["lr"] == "1e-4"  # YAML 1.1 reads it as a string
    cfg = load_pretrain_config(path)
    assert cfg.optimization.lr == 1e-4 and isinstance(cfg.optimization.lr, float)


def _edit(section: str, **values):
    def apply(raw: dict) -> dict:
        (raw.setdefault(section, {}) if section else raw).update(values)
        return raw

    return apply


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(_edit("optimization", warmup=-1), ["optimization.warmup: got -1", "epochs >= 0"], id="warmup<0"),
        pytest.param(_edit("data", crop_size=30), ["crop_size 30", "patch_size 8"], id="crop-not-multiple"),
        pytest.param(_edit("", app="vjepa"), ["V-JEPA", "list"], id="vjepa-with-mask-mapping"),
        pytest.param(_edit("", mask=[{"num_blocks": 8}]), ["I-JEPA", "mapping"], id="ijepa-with-mask-list"),
        pytest.param(_edit("mask", patch_size=16), ["mask.patch_size 16", "data.patch_size 8"], id="mask-patch"),
        pytest.param(_edit("model", embed_dim=None), ["embed_dim"], id="custom-size-incomplete"),
        pytest.param(_edit("model", model_name="vit_hug", embed_dim=None), ["vit_hug", "vit_huge"], id="bad-size"),
        pytest.param(_edit("model", model_name="vit_base"), ["model_name: null"], id="size-and-dims"),
        pytest.param(_edit("optimization", ema=[0.9, 1.1]), ["optimization.ema"], id="ema-range"),
        pytest.param(_edit("data", crop_scale=[0.9, 0.3]), ["data.crop_scale"], id="crop-scale-order"),
        pytest.param(_edit("meta", dtype="fp16"), ["meta.dtype", "'float16'"], id="literal-choice"),
        pytest.param(_edit("optimization", ipe_scale=0.5), ["ipe_scale"], id="ipe-scale<1"),
    ],
)
def test_cross_field_and_value_checks(tmp_path, edit, expected):
    path = write_yaml(tmp_path, edit(tiny_raw()))
    with pytest.raises(ConfigError) as e:
        load_pretrain_config(path)
    for text in expected:
        assert text in str(e.value)


def test_mask_patch_size_mismatch_in_official_ijepa_file(tmp_path):
    raw = yaml.safe_load(official(IJEPA_VITH14).read_text())
    raw["data"]["patch_size"] = 16  # the file's mask.patch_size is 14
    with pytest.raises(ConfigError, match="mask.patch_size 14 differs from data.patch_size 16"):
        load_pretrain_config(write_yaml(tmp_path, raw))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as e:
        load_pretrain_config(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("data: [unclosed\n", "not valid YAML"), ("- a\n- b\n", "mapping"), ("", "mapping")],
    ids=["invalid-yaml", "top-level-list", "empty"],
)
def test_unreadable_file(tmp_path, text, expected):
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as e:
        load_pretrain_config(path)
    assert str(path) in str(e.value)


def test_apply_overrides_parses_values_as_yaml():
    data = {"a": {"b": 1}, "m": [{"k": 1}, {"k": 2}]}
    out = apply_overrides(data, ["a.b=2", "a.c=[1, 2]", "d.e=x", "m.1.k=5", "top=null"])
    assert out is data
    assert data == {"a": {"b": 2, "c": [1, 2]}, "m": [{"k": 1}, {"k": 5}], "d": {"e": "x"}, "top": None}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("foo", "not KEY=VALUE"),
        ("=3", "not KEY=VALUE"),
        ("a.b.c=1", "holds a value"),
        ("m.2.k=1", "not an index"),
        ("m.x.k=1", "not an index"),
        ("m.5=1", "not an index"),
    ],
)
def test_malformed_overrides(override, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides({"a": {"b": 1}, "m": [{"k": 1}, {"k": 2}]}, [override])


def test_load_with_overrides(tmp_path):
    path = write_yaml(tmp_path, tiny_raw())
    cfg = load_pretrain_config(path, ["optimization.lr=1e-4", "data.batch_size=8", "model.drop_path_rate=0.1"])
    assert cfg.optimization.lr == 1e-4
    assert cfg.data.batch_size == 8
    assert cfg.model.drop_path_rate == 0.1
    assert load_pretrain_config(path).optimization.lr == 1e-3  # the file is untouched


def test_override_of_a_mask_list_item_on_official_vjepa_file():
    cfg = load_pretrain_config(official(VJEPA_VITL16), ["mask.0.num_blocks=4", "optimization.lr=1e-4"])
    assert cfg.mask[0].num_blocks == 4
    assert cfg.mask[1].num_blocks == 2
    assert cfg.optimization.lr == 1e-4


def test_override_is_validated(tmp_path):
    path = write_yaml(tmp_path, tiny_raw())
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_pretrain_config(path, ["optimization.lrr=1e-4"])
    with pytest.raises(ConfigError, match="warmup"):
        load_pretrain_config(path, ["optimization.warmup=-10"])
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        load_pretrain_config(path, ["foo"])


def test_override_with_the_official_ijepa_key_names():
    # An official I-JEPA file names the model and bf16 under `meta`; overriding those keys as the file spells them
    # must work like editing the file.
    path = official(IJEPA_VITH14)
    cfg = load_pretrain_config(path, ["meta.model_name=vit_large", "meta.use_bfloat16=false"])
    assert cfg.model.model_name == "vit_large"
    assert cfg.meta.dtype == "float32"


@dataclass(kw_only=True)
class Inner:
    x: int = 0
    name: Literal["a", "b"] = "a"


@dataclass(kw_only=True)
class Outer:
    pair: tuple[int, float] = (1, 2.0)
    many: tuple[int, ...] = ()
    maybe: int | None = None
    ratio: float = 1.0
    items: list[Inner] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    opt_inner: Inner | None = None


def test_from_dict_converts_nested_values():
    out = from_dict(
        Outer,
        {
            "pair": [3, 4],
            "many": [1, 2, 3],
            "maybe": 5,
            "ratio": 2,
            "items": [{"x": 1}, {"x": 2, "name": "b"}],
            "opt_inner": {"x": 7},
        },
    )
    assert out.pair == (3, 4.0) and isinstance(out.pair[1], float)
    assert out.many == (1, 2, 3)
    assert out.maybe == 5
    assert out.ratio == 2.0 and isinstance(out.ratio, float)
    assert out.items == [Inner(x=1), Inner(x=2, name="b")]
    assert out.inner == Inner()
    assert out.opt_inner == Inner(x=7)
    assert from_dict(Outer, to_dict(out)) == out
    assert from_dict(Outer, {"maybe": None, "opt_inner": None}) == Outer()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"pair": [1, 2, 3]}, ["pair", "expected 2 values"]),
        ({"pair": 1}, ["pair", "expected a list"]),
        ({"pair": [1, "x"]}, ["pair[1]", "'x'", "float"]),
        ({"many": [1, 2.5]}, ["many[1]", "2.5", "int"]),
        ({"inner": {"name": "c"}}, ["inner.name", "'c'", "'a', 'b'"]),
        ({"maybe": "x"}, ["maybe", "'x'"]),
        ({"maybe": True}, ["maybe", "True"]),  # a bool is not an int
        ({"items": [{"x": 1}, {"y": 2}]}, ["unknown key 'items[1].y'", "valid keys: name, x"]),
        ({"items": [{"x": "one"}]}, ["items[0].x", "'one'", "int"]),
        ({"items": {"x": 1}}, ["items", "expected a list"]),
        ({"inner": 3}, ["inner", "mapping"]),
        ({"inner": {"nmae": "a"}}, ["inner.nmae", "did you mean 'name'"]),
        # The same mistakes inside an Optional dataclass must name the key as well.
        ({"opt_inner": {"nmae": "a"}}, ["opt_inner.nmae", "did you mean 'name'"]),
        ({"opt_inner": {"x": "one"}}, ["opt_inner.x", "'one'"]),
    ],
    ids=[
        "tuple-length",
        "tuple-not-list",
        "tuple-item-type",
        "variadic-tuple-item",
        "literal",
        "optional-int",
        "bool-is-not-int",
        "list-item-unknown-key",
        "list-item-type",
        "list-not-list",
        "dataclass-not-mapping",
        "misspelt-nested-key",
        "misspelt-key-in-optional-dataclass",
        "wrong-type-in-optional-dataclass",
    ],
)
def test_from_dict_errors_name_the_key(data, expected):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data)
    for text in expected:
        assert text in str(e.value)


@pytest.mark.parametrize("name", ["vitl16", "vith16", "vith16_384"])
def test_our_vjepa_recipes_match_the_official_files(name):
    path = OFFICIAL / "jepa" / "configs" / "pretrain" / f"{name}.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    ours = to_dict(load_pretrain_config(ROOT / "configs" / "pretrain" / f"vjepa_{name}.yaml"))
    theirs = to_dict(load_pretrain_config(path))
    for section in ("model", "optimization", "mask", "loss", "data_aug"):
        assert ours[section] == theirs[section], section
    for key in ("batch_size", "crop_size", "num_frames", "sampling_rate", "tubelet_size", "patch_size"):
        assert ours["data"][key] == theirs["data"][key], key
