"""V-JEPA 2.1 training (app vjepa_2_1): its config keys, images and video in one run (interleaved steps in one
process, or image ranks and video ranks as officially), exact resume of an interleaved run, and distillation from
a frozen teacher."""

import copy
import csv
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from test_engine import assert_same

import app.pretrain
import jepa.runtime.distributed as jd
from app.pretrain import CSV_COLUMNS_VJEPA21, Pretrainer
from jepa.config import ConfigError, load_pretrain_config, to_dict
from jepa.config.pretrain import image_steps_before, is_image_step
from jepa.training import builders

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain" / "tiny_vjepa21_cpu.yaml"
MODELS = ("encoder", "predictor", "target_encoder")
VIDEOS = 16  # moving-digit clips generated for these runs
# Small and fast: batches of 4, no workers, the context-loss ramp within the first steps, float32.
SMALL = ("data.batch_size=4", "img_data.batch_size=4", "data.num_workers=0", "img_data.num_workers=0",
         "meta.dtype=float32", "meta.log_freq=1", "model.lambda_start_iter=1", "model.lambda_end_iter=3",
         "model.embed_dim=48", "model.num_heads=4", "model.pred_embed_dim=32")  # fmt: skip


def tiny_raw() -> dict:
    return yaml.safe_load(TINY.read_text())


def tiny_run(tmp_path: Path, name: str, *overrides: str, data: Path | None = None):
    root = data or tmp_path / "clips"
    return load_pretrain_config(TINY, [f"logging.folder={tmp_path / name}", f"data.root_path={root}", *SMALL,
                                       *overrides])  # fmt: skip


def write_yaml(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def few_videos(monkeypatch):
    monkeypatch.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", VIDEOS)


def read_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# -- config -----------------------------------------------------------------------------------------------------


def test_tiny_config_maps_onto_the_2_1_model_spec():
    cfg = load_pretrain_config(TINY)
    assert cfg.is_video and cfg.is_vjepa21 and cfg.loss.predict_all is True and cfg.loss.sigreg_weight == 0.05
    spec = cfg.model_spec()
    e, p = spec.encoder, spec.predictor
    assert (e.img_temporal_dim_size, e.modality_embedding, e.deep_supervision) == (1, True, True)
    assert e.n_output_distillation == 4
    assert (e.rope_layout, e.levels, e.num_frames, e.tubelet_size) == ("pairwise", 4, 8, 2)
    assert p is not None and (p.n_output_distillation, p.return_all_tokens, p.teacher_embed_dim) == (4, True, None)
    assert cfg.image_mix(1) == "accumulate" and cfg.image_masks == cfg.img_mask


def test_levels_and_dense_prediction_reach_the_spec():
    cfg = load_pretrain_config(TINY, ["model.levels_predictor=1", "loss.predict_all=false"])
    spec = cfg.model_spec()
    assert spec.encoder.levels == 1 and spec.encoder.deep_supervision  # norms_block as the released 2.1 encoders
    assert spec.predictor is not None and not spec.predictor.return_all_tokens
    assert spec.predictor.n_output_distillation == 1


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.n_registers=1", ["model.n_registers", "register tokens"]),
        ("model.n_registers_predictor=2", ["model.n_registers_predictor"]),
        ("model.has_cls_first=true", ["model.has_cls_first", "class token"]),
        ("model.is_causal=true", ["model.is_causal"]),
        ("model.pred_is_causal=true", ["model.pred_is_causal"]),
        ("model.init_type=xavier", ["model.init_type", "'default'"]),
        ("model.use_pred_silu=true", ["model.use_pred_silu", "use_silu"]),
        ("loss.shift_by_n=2", ["loss.shift_by_n", "null or 0"]),
        ("model.levels_predictor=5", ["model.levels_predictor", "1 to 4"]),
        ("model.img_temporal_dim_size=2", ["model.img_temporal_dim_size"]),
        ("model.img_temporal_dim_size=null", ["model.img_temporal_dim_size", "expected 1 with img_data"]),
        ("model.lambda_end_iter=10", ["model.lambda_end_iter", "lambda_start_iter 60"]),
        ("model.lambda_value_img=-1", ["model.lambda_value_img", ">= 0"]),
        ("model.interpolate_rope=true", []),  # fine with RoPE (checked below without it)
        ("img_data.dataset_fpcs=[2]", ["img_data.dataset_fpcs", "[1]"]),
        ("img_data.rank_ratio=1.5", ["img_data.rank_ratio", "[0, 1]"]),
        ("img_data.mix=half", ["img_data.mix", "'interleave'"]),
        ("img_data.crop=32", ["img_data.crop", "crop_size"]),
        ("img_data.crop_size=30", ["img_data.crop_size", "patch_size 4"]),
        ("img_data.root_path=/x", ["img_data.root_path", "built in"]),
        ("img_data.dataset_type=ImageFolder", ["img_data.root_path", "required"]),
        ("model.depth=2", ["model.depth", "four blocks"]),
    ],
)
def test_config_errors_name_the_key(override, words):
    if not words:
        assert load_pretrain_config(TINY, [override, "model.use_rope=true"]).model_spec().encoder.interpolate_rope
        with pytest.raises(ConfigError, match="model.interpolate_rope.*use_rope is false"):
            load_pretrain_config(TINY, [override, "model.use_rope=false"])
        return
    with pytest.raises(ConfigError) as e:
        load_pretrain_config(TINY, [override])
    for word in words:
        assert word in str(e.value)


def test_2_1_sections_need_the_2_1_app(tmp_path):
    for key in ("img_data", "img_mask"):
        raw = yaml.safe_load((ROOT / "configs" / "pretrain" / "tiny_vjepa_cpu.yaml").read_text())
        raw[key] = tiny_raw()[key]
        with pytest.raises(ConfigError, match=f"{key}: images beside video in one run need app: vjepa_2_1"):
            load_pretrain_config(write_yaml(tmp_path, raw))
    with pytest.raises(ConfigError, match="distillation.teacher_checkpoint: a teacher needs app: vjepa_2_1"):
        load_pretrain_config(ROOT / "configs" / "pretrain" / "tiny_vjepa_cpu.yaml",
                             ["distillation.teacher_checkpoint=x.pt"])  # fmt: skip


def test_plain_vjepa_keeps_its_model(caplog):
    path = ROOT / "configs" / "pretrain" / "tiny_vjepa_cpu.yaml"
    spec = load_pretrain_config(path).model_spec()
    assert not spec.encoder.deep_supervision and spec.encoder.img_temporal_dim_size is None
    assert spec.predictor is not None and not spec.predictor.return_all_tokens
    with caplog.at_level(logging.WARNING, logger="jepa.config.strict"):
        load_pretrain_config(path, ["model.lambda_value_vid=0.5"])
    assert any("model.lambda_value_vid" in r.getMessage() and "vjepa_2_1" in r.getMessage() for r in caplog.records)


def test_image_mix_auto_picks_ranks_when_each_modality_gets_one():
    cfg = load_pretrain_config(TINY, ["img_data.mix=auto", "img_data.rank_ratio=0.25"])
    assert [cfg.image_mix(n) for n in (1, 2, 3, 4, 8)] == ["accumulate"] * 3 + ["ranks"] * 2
    ranks = load_pretrain_config(TINY, ["img_data.mix=ranks"])
    with pytest.raises(ConfigError, match="img_data.mix: ranks needs at least one image rank"):
        ranks.image_mix(1)
    assert ranks.image_mix(2) == "ranks"


def test_rank_split_keeps_the_global_video_batch_and_refuses_what_does_not_divide():
    cfg = load_pretrain_config(TINY, ["img_data.rank_ratio=0.25", "data.batch_size=3", "img_data.batch_size=2"])
    split = builders.rank_split(cfg, 4)
    assert (split.image_ranks, split.video_ranks, split.image_batch, split.video_batch) == (1, 3, 2, 4)
    assert split.video_batch * split.video_ranks == 3 * 4
    with pytest.raises(ConfigError, match=r"data.batch_size: 5 x 4 ranks = 20 does not divide over the 3 video"):
        builders.rank_split(load_pretrain_config(TINY, ["img_data.rank_ratio=0.25", "data.batch_size=5"]), 4)
    with pytest.raises(ConfigError, match=r"img_data.batch_size: 3 x 8 ranks = 24 does not divide over the 5 image"):
        builders.rank_split(load_pretrain_config(TINY, ["img_data.rank_ratio=0.7", "img_data.batch_size=3"]), 8)


def official_style_raw() -> dict:
    """A V-JEPA 2.1 training file as the official app reads it (its keys, its defaults spelt out)."""
    mask = [{"aspect_ratio": [0.75, 1.5], "full_complement": False, "max_keep": None, "max_temporal_keep": 1.0,
             "num_blocks": 8, "spatial_scale": [0.15, 0.15], "temporal_scale": [1.0, 1.0]}]  # fmt: skip
    return {
        "app": "vjepa_2_1", "nodes": 16, "tasks_per_node": 8, "folder": "/checkpoint/vjepa21/vitg",
        "data": {"dataset_type": "VideoDataset", "datasets": ["/data/k710.csv", "/data/ssv2.csv"],
                 "datasets_weights": [0.7, 0.3], "dataset_fpcs": [16, 16], "batch_size": 24, "crop_size": 256,
                 "patch_size": 16, "tubelet_size": 2, "fps": 4, "num_workers": 8, "pin_mem": True},
        "img_data": {"dataset_type": "imagenet", "datasets": ["/data/imagenet"], "datasets_weights": [1.0],
                     "dataset_fpcs": [1], "batch_size": 32, "crop_size": 512, "rank_ratio": 0.25,
                     "num_workers": 8},
        "img_mask": copy.deepcopy(mask),
        "data_aug": {"auto_augment": False, "motion_shift": False, "random_resize_aspect_ratio": [0.75, 1.35],
                     "random_resize_scale": [0.3, 1.0], "reprob": 0.0},
        "loss": {"loss_exp": 1.0, "shift_by_n": None, "predict_all": True, "weight_distance_loss": True,
                 "offset_context_loss": False},
        "mask": mask,
        "meta": {"dtype": "bfloat16", "load_checkpoint": True, "read_checkpoint": None, "save_every_freq": 50,
                 "seed": 239, "use_sdpa": True},
        "model": {"model_name": "vit_giant_xformers", "pred_depth": 24, "pred_embed_dim": 384, "pred_num_heads": 12,
                  "uniform_power": True, "use_mask_tokens": True, "zero_init_mask_tokens": True, "use_rope": True,
                  "use_silu": False, "use_pred_silu": False, "wide_silu": True, "is_causal": False,
                  "pred_is_causal": False, "init_type": "default", "img_temporal_dim_size": 1, "n_registers": 0,
                  "has_cls_first": False, "interpolate_rope": True, "lambda_value_img": 0.5, "lambda_value_vid": 0.5,
                  "n_registers_predictor": 0, "lambda_progressive": True, "normalize_predictor": False,
                  "modality_embedding": True, "levels_predictor": 4, "compile_model": False,
                  "use_activation_checkpointing": True},
        "optimization": {"ema": [0.99925, 0.99925], "epochs": 10, "final_lr": 5.25e-4, "final_weight_decay": 0.04,
                         "ipe": 300, "ipe_scale": 1.25, "lr": 5.25e-4, "start_lr": 1e-4, "warmup": 40,
                         "weight_decay": 0.04},
    }  # fmt: skip


def test_an_official_style_2_1_file_loads(tmp_path):
    cfg = load_pretrain_config(write_yaml(tmp_path, official_style_raw()))
    assert cfg.img_data is not None and cfg.img_data.root_path == "/data/imagenet"  # its one folder
    assert cfg.image_mix(128) == "ranks" and builders.rank_split(cfg, 128).video_batch == 32
    spec = cfg.model_spec()
    assert spec.encoder.hierarchical_layers is None and spec.encoder.depth == 40  # the encoder picks 9, 19, 29, 39
    assert (spec.encoder.rope_layout, spec.encoder.interpolate_rope, spec.encoder.modality_embedding) == (
        "pairwise", True, True)  # fmt: skip
    assert spec.predictor is not None and spec.predictor.return_all_tokens and spec.predictor.interpolate_rope
    assert cfg.num_mask_tokens == 2  # one mask config x two dataset_fpcs entries, as the official model builds
    # The resolved config loads again and describes the same run.
    again = load_pretrain_config(write_yaml(tmp_path, to_dict(cfg)))
    assert again.model_spec() == spec


# -- the interleave schedule -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio, p, q", [(0.25, 1, 4), (0.5, 1, 2), (0.29, 29, 100), (0.9, 9, 10), (0.125, 1, 8)])
def test_interleave_schedule_has_the_share_and_is_a_function_of_the_step(ratio, p, q):
    # The ratio is read as the decimal written in the file: exact integer arithmetic on p / q is the reference.
    steps = [is_image_step(i, ratio) for i in range(1000)]
    assert steps == [(i + 1) * p // q > i * p // q for i in range(1000)]
    for n in (0, 1, 7, 100, 999, 1000):
        assert sum(steps[:n]) == image_steps_before(n, ratio) == n * p // q
    assert steps == [is_image_step(i, ratio) for i in reversed(range(1000))][::-1]  # no state: any order
    image_at = [i for i, s in enumerate(steps) if s]
    gaps = {b - a for a, b in zip(image_at, image_at[1:])}
    assert gaps <= {q // p, -(-q // p)}  # evenly spread: gaps of floor or ceil of 1 / ratio


# -- runs -------------------------------------------------------------------------------------------------------


def test_an_interleaved_run_trains_both_modalities(tmp_path, few_videos):
    trainer = Pretrainer(tiny_run(tmp_path, "run", "img_data.mix=interleave"))
    assert trainer.image_mix == "interleave" and set(trainer.streams) == {"image", "video"}
    assert trainer.ipe == 60  # optimization.ipe (else the video stream's batches per pass)
    before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    trainer.train(max_steps=4)
    rows = read_rows(tmp_path / "run" / "jepa_r0.csv")
    assert list(rows[0]) == CSV_COLUMNS_VJEPA21
    assert [r["modality"] for r in rows] == ["video", "image", "video", "image"]  # rank_ratio 0.5
    assert all(float(r["loss_context"]) > 0 for r in rows)
    # lambda 0 at step 0, then ramping: the loss is the prediction loss plus lambda x the context loss, plus the
    # config's SIGReg weight x SIGReg.
    sig = [trainer.cfg.loss.sigreg_weight * float(r["loss_sigreg"]) for r in rows]
    assert all(s > 0 for s in sig)
    assert float(rows[0]["loss"]) == pytest.approx(float(rows[0]["loss_pred"]) + sig[0], rel=1e-5)
    assert float(rows[2]["loss"]) == pytest.approx(
        float(rows[2]["loss_pred"]) + 0.25 * float(rows[2]["loss_context"]) + sig[2], rel=1e-5
    )
    after = trainer.model.encoder.state_dict()
    for name in ("patch_embed.proj.weight", "patch_embed_img.proj.weight", "img_mod_embed", "video_mod_embed"):
        assert not torch.equal(before[name], after[name]), f"{name} was not trained"


def test_an_interleaved_run_resumes_exactly(tmp_path, few_videos):
    data = tmp_path / "clips"
    keys = ("model.drop_path_rate=0.1", "img_data.mix=interleave")
    whole = Pretrainer(tiny_run(tmp_path, "a", *keys, data=data))
    whole.train(max_steps=5)
    Pretrainer(tiny_run(tmp_path, "b", *keys, data=data)).train(max_steps=3)
    resumed = Pretrainer(tiny_run(tmp_path, "b", *keys, "meta.load_checkpoint=true", data=data))
    resumed.train(max_steps=5)
    assert resumed.step == 5
    for name in MODELS:
        assert_same(getattr(whole.model, name).state_dict(), getattr(resumed.model, name).state_dict(), name)
    a, b = read_rows(tmp_path / "a" / "jepa_r0.csv"), read_rows(tmp_path / "b" / "jepa_r0.csv")
    assert [(r["modality"], r["loss"]) for r in a] == [(r["modality"], r["loss"]) for r in b]


def test_distillation_regresses_a_frozen_teacher(tmp_path, few_videos):
    data = tmp_path / "clips"
    teacher_run = Pretrainer(tiny_run(tmp_path, "teacher", data=data))
    teacher_run.train(max_steps=1)
    teacher_file = teacher_run.latest_path
    cfg = tiny_run(tmp_path, "student", f"distillation.teacher_checkpoint={teacher_file}", "model.embed_dim=32",
                   "model.levels_predictor=1", data=data)  # fmt: skip
    student = Pretrainer(cfg)
    assert cfg.distillation.teacher_embed_dim == 48  # the teacher's last level
    assert student.model.predictor.predictor_proj.out_features == 48 and student.model.encoder.embed_dim == 32
    teacher = student.model.teacher
    assert teacher is not None and teacher.embed_dim == 48 and teacher.n_output_distillation == 1
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert_same(frozen, teacher_run.model.target_encoder.state_dict(), "the teacher is the file's target encoder")
    student.train(max_steps=2)
    assert_same(frozen, teacher.state_dict(), "the teacher stays frozen")
    stored = torch.load(student.latest_path, weights_only=True)["config"]
    assert stored["distillation"]["teacher_embed_dim"] == 48
    with pytest.raises(ConfigError, match="distillation.teacher_release: unknown release 'vjepa9'"):
        Pretrainer(tiny_run(tmp_path, "bad", f"distillation.teacher_checkpoint={teacher_file}",
                            "distillation.teacher_release=vjepa9", data=data))  # fmt: skip


def test_an_accumulated_run_trains_both_modalities_every_step(tmp_path, few_videos):
    trainer = Pretrainer(tiny_run(tmp_path, "run", "img_data.mix=accumulate", "img_data.rank_ratio=0.25"))
    assert trainer.image_mix == "accumulate" and set(trainer.streams) == {"image", "video"}
    parts = next(trainer._steps(1))
    assert [(m, w) for _, m, w in parts] == [("image", 0.25), ("video", 0.75)]
    groups = trainer._step_groups(parts)
    assert [(g.modality, g.weight, g.x.shape[2]) for g in groups] == [("image", 0.25, 1), ("video", 0.75, 8)]
    before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    trainer.train(max_steps=3)
    rows = read_rows(tmp_path / "run" / "jepa_r0.csv")
    assert [r["modality"] for r in rows] == ["image+video"] * 3
    after = trainer.model.encoder.state_dict()
    for name in ("patch_embed.proj.weight", "patch_embed_img.proj.weight", "img_mod_embed", "video_mod_embed"):
        assert not torch.equal(before[name], after[name]), f"{name} was not trained"


@pytest.mark.parametrize("ratio, modality", [(1.0, "image"), (0.0, "video")])
def test_an_accumulated_run_of_one_share_reads_one_modality(tmp_path, few_videos, ratio, modality):
    trainer = Pretrainer(tiny_run(tmp_path, "run", "img_data.mix=accumulate", f"img_data.rank_ratio={ratio}"))
    assert [(m, w) for _, m, w in next(trainer._steps(1))] == [(modality, 1.0)]
    trainer.train(max_steps=2)
    assert [r["modality"] for r in read_rows(tmp_path / "run" / "jepa_r0.csv")] == [modality] * 2


def test_an_accumulated_run_resumes_exactly(tmp_path, few_videos):
    data = tmp_path / "clips"
    keys = ("model.drop_path_rate=0.1", "img_data.mix=accumulate")
    whole = Pretrainer(tiny_run(tmp_path, "a", *keys, data=data))
    whole.train(max_steps=4)
    Pretrainer(tiny_run(tmp_path, "b", *keys, data=data)).train(max_steps=2)
    resumed = Pretrainer(tiny_run(tmp_path, "b", *keys, "meta.load_checkpoint=true", data=data))
    resumed.train(max_steps=4)
    for name in MODELS:
        assert_same(getattr(whole.model, name).state_dict(), getattr(resumed.model, name).state_dict(), name)
    a, b = read_rows(tmp_path / "a" / "jepa_r0.csv"), read_rows(tmp_path / "b" / "jepa_r0.csv")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_weighted_groups_give_the_weighted_sum_of_each_modalitys_loss(tmp_path, few_videos):
    torch.manual_seed(0)
    trainer = Pretrainer(tiny_run(tmp_path, "run", "img_data.mix=accumulate", "img_data.rank_ratio=0.3",
                                  "model.lambda_start_iter=0", "model.lambda_end_iter=1"))  # fmt: skip
    image, video = trainer._step_groups(next(trainer._steps(1)))
    model = trainer.model
    with torch.no_grad():
        both = model([image, video], step=5)
        single = [model([replace(g, weight=None)], step=5) for g in (image, video)]
    for key in ("loss", "loss_pred", "loss_context"):
        expected = 0.3 * getattr(single[0], key) + 0.7 * getattr(single[1], key)
        torch.testing.assert_close(getattr(both, key), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="give every group of a batch a weight, summing to 1"):
        model([image, replace(video, weight=None)])
    with pytest.raises(ValueError, match="ClipGroup.weight must be in"):
        replace(video, weight=1.5)


def _rank_job(rank: int, world_size: int, device: torch.device, cfg, steps: int) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", VIDEOS)
        trainer = Pretrainer(cfg, device)
        x_shapes = [(m, tuple(builders.clip_groups(cfg, batch, device, m)[0].x.shape))
                    for batch, m, _ in next(trainer._steps(1))]  # fmt: skip
        trainer.train(max_steps=steps)
    return {
        "mix": trainer.image_mix,
        "modality": trainer.rank_modality,
        "shapes": x_shapes,
        "ipe": trainer.ipe,
        "weights": {m: getattr(trainer.model, m).state_dict() for m in MODELS},
    }


@pytest.mark.slow
def test_two_ranks_one_on_images_one_on_video(tmp_path):
    cfg = tiny_run(tmp_path, "ranks", "img_data.mix=auto", "data.batch_size=2", "img_data.batch_size=3")
    image, video = jd.spawn(_rank_job, ["cpu", "cpu"], cfg, 3)
    assert image["mix"] == video["mix"] == "ranks"
    assert (image["modality"], video["modality"]) == ("image", "video")
    # The image rank: img_data.batch_size 1-frame clips; the video rank the whole global video batch (2 x 2).
    assert image["shapes"] == [("image", (3, 3, 1, 32, 32))] and video["shapes"] == [("video", (4, 3, 8, 32, 32))]
    assert image["ipe"] == video["ipe"] == 60
    for m in MODELS:  # DDP averaged the two ranks' gradients: the same weights on both
        assert_same(image["weights"][m], video["weights"][m], m)
    rows = read_rows(tmp_path / "ranks" / "jepa_r0.csv")
    assert [r["modality"] for r in rows] == ["ranks"] * 3


@pytest.mark.slow
def test_one_accumulating_process_trains_as_an_image_rank_and_a_video_rank(tmp_path):
    """``accumulate`` is the ``ranks`` mix's gradient in one process: 1 process equals 2 gloo ranks (0.5 / 0.5)."""
    ranks = tiny_run(tmp_path, "ranks", "img_data.mix=ranks", "data.batch_size=2", "img_data.batch_size=3")
    image, video = jd.spawn(_rank_job, ["cpu", "cpu"], ranks, 3)
    one = tiny_run(tmp_path, "one", "img_data.mix=accumulate", "data.batch_size=4", "img_data.batch_size=3")
    (alone,) = jd.spawn(_rank_job, ["cpu"], one, 3)
    assert alone["shapes"] == [("image", (3, 3, 1, 32, 32)), ("video", (4, 3, 8, 32, 32))]
    for m in MODELS:
        for name, value in alone["weights"][m].items():
            torch.testing.assert_close(value, image["weights"][m][name], rtol=1e-5, atol=1e-6, msg=f"{m}.{name}")


@pytest.mark.parametrize("name, depth, levels", [("vjepa21_vitl16", 24, (5, 11, 17, 23)),
                                                 ("vjepa21_vitg16", 40, (9, 19, 29, 39))])  # fmt: skip
def test_paper_scale_configs_split_128_ranks(name, depth, levels):
    from jepa.config.spec import hierarchical_layers_for

    cfg = load_pretrain_config(ROOT / "configs" / "pretrain" / f"{name}.yaml")
    assert cfg.is_vjepa21 and cfg.image_mix(128) == "ranks"
    split = builders.rank_split(cfg, 128)
    assert (split.image_ranks, split.video_ranks, split.video_batch) == (32, 96, 32)  # 24 x 128 clips kept
    spec = cfg.model_spec().encoder
    assert spec.depth == depth and hierarchical_layers_for(depth) == levels and spec.interpolate_rope
