"""V-JEPA 2's cooldown (``optimization.is_anneal``): the anneal LR schedule, a run that starts from another run's
weights and optimizer state, its exact resume, a new resolution and clip length (progressive training), and the
architecture check."""

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

import app.pretrain
from app.pretrain import Pretrainer, RunFolderError
from jepa.checkpoint import CheckpointError, read_checkpoint
from jepa.config import ConfigError
from jepa.models.pos_embed import interpolate_pos_embed
from jepa.training.schedules import Schedules
from tests.test_engine import assert_same, read_csv, tiny_config, tiny_video_config, use_small_data

pytestmark = pytest.mark.usefixtures("one_thread")

NETWORKS = ("encoder", "predictor", "target_encoder")
ANNEAL_LR, ANNEAL_FINAL_LR = 1e-3, 1e-5


def official_linear_decay(step: int, t_max: int, ref_lr: float, final_lr: float) -> float:
    """The official LinearDecaySchedule's LR after ``step`` calls of ``step()`` (vjepa2 src/utils/schedulers.py)."""
    progress = float(step) / float(max(1, t_max))
    return ref_lr + progress * (final_lr - ref_lr)


def anneal_overrides(source: Path) -> list[str]:
    return [
        "optimization.is_anneal=true", f"optimization.anneal_ckpt={source}", "optimization.warmup=0",
        f"optimization.lr={ANNEAL_LR}", f"optimization.final_lr={ANNEAL_FINAL_LR}", "optimization.epochs=2",
        "optimization.ipe_scale=1.25",
    ]  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """The latest checkpoint of a 4-step tiny image run (other AdamW betas than the anneal runs')."""
    folder = tmp_path_factory.mktemp("anneal") / "source"
    with pytest.MonkeyPatch.context() as mp:
        use_small_data(mp)
        Pretrainer(tiny_config(folder, "optimization.betas=[0.8, 0.95]")).train(max_steps=4)
    return folder / "jepa-latest.pth.tar"


def test_anneal_lr_is_the_official_linear_decay_without_warmup():
    s = Schedules(
        ipe=10, epochs=4, ipe_scale=1.25, warmup_epochs=2, start_lr=0.1, lr=5.25e-4, final_lr=1e-6,
        weight_decay=0.04, final_weight_decay=0.4, ema=(0.99, 0.999), anneal=True,
    )  # fmt: skip
    t_max = 50  # int(1.25 * 4 * 10)
    assert s.total_steps == t_max and s.warmup_steps == 0
    for i in (0, 1, 7, 19, 24, 38, 39, 48, 49):
        # the update of index i follows the scheduler's (i + 1)-th step(), as in pretraining
        assert s.lr_at(i) == official_linear_decay(i + 1, t_max, 5.25e-4, 1e-6), i
    lrs = [s.lr_at(i) for i in range(t_max)]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[0] < 5.25e-4  # no warmup, start_lr is not read
    assert s.lr_at(t_max + 5) == pytest.approx(1e-6, abs=1e-18)  # held at final_lr after the end
    plain = dataclasses.replace(s, anneal=False)
    assert plain.lr_at(0) != s.lr_at(0)
    for i in (0, 13, 49):  # weight decay and EMA are the pretraining schedules, from the anneal run's step 0
        assert (s.wd_at(i), s.momentum_at(i)) == (plain.wd_at(i), plain.momentum_at(i))


def test_anneal_run_starts_from_the_source_weights_and_optimizer_state(tmp_path, source_run, monkeypatch):
    use_small_data(monkeypatch)
    before = sha256(source_run)
    source = read_checkpoint(source_run)
    trainer = Pretrainer(tiny_config(tmp_path / "anneal", *anneal_overrides(source_run)))
    trainer.maybe_resume()
    assert trainer.step == 0 and trainer.started_from is not None and trainer.started_from.kind == "anneal"
    for name in NETWORKS:
        assert_same(getattr(trainer.model, name).state_dict(), source[name], name)
    # The official anneal restores the AdamW state (moments and step counts); the hyper-parameters stay this run's.
    assert_same(trainer.optimizer.state_dict()["state"], source["opt"]["state"], "opt.state")
    assert source["opt"]["param_groups"][0]["betas"] == (0.8, 0.95)
    assert all(g["betas"] == (0.9, 0.999) for g in trainer.optimizer.param_groups)
    (x, _, _), masks_enc, masks_pred = next(iter(trainer.loader))
    sets = app.pretrain.mask_sets(trainer.cfg, masks_enc, masks_pred)
    t_max = int(1.25 * 2 * 3)
    for i in range(4):
        trainer.train_step(x, sets)
        lr = official_linear_decay(i + 1, t_max, ANNEAL_LR, ANNEAL_FINAL_LR)
        assert [g["lr"] for g in trainer.optimizer.param_groups] == [lr] * 4, i
        assert trainer.optimizer.param_groups[0]["weight_decay"] == trainer.schedules.wd_at(i)
    assert trainer.step == 4
    assert sha256(source_run) == before  # the source is only read


def test_anneal_source_without_optimizer_state_starts_fresh_adamw(tmp_path, source_run, caplog):
    weights = {k: v for k, v in read_checkpoint(source_run).items() if k not in ("opt", "scaler")}
    torch.save(weights, tmp_path / "weights.pt")
    trainer = Pretrainer(tiny_config(tmp_path / "anneal", *anneal_overrides(tmp_path / "weights.pt")))
    trainer.maybe_resume()
    assert trainer.optimizer.state_dict()["state"] == {}
    assert "holds no optimizer state" in caplog.text
    assert_same(trainer.model.encoder.state_dict(), weights["encoder"], "encoder")


@pytest.mark.parametrize("how", ["--resume", "resume_anneal"])
def test_resumed_anneal_run_equals_the_uninterrupted_one(tmp_path, source_run, monkeypatch, how):
    use_small_data(monkeypatch)
    overrides = [*anneal_overrides(source_run), "model.drop_path_rate=0.1"]
    before = sha256(source_run)
    a = Pretrainer(tiny_config(tmp_path / "a", *overrides))
    a.train(max_steps=5)
    Pretrainer(tiny_config(tmp_path / "b", *overrides)).train(max_steps=2)
    if how == "--resume":
        b = Pretrainer(tiny_config(tmp_path / "b", *overrides))
        b.train(max_steps=5, resume=True)
    else:
        b = Pretrainer(tiny_config(tmp_path / "b", *overrides, "optimization.resume_anneal=true"))
        b.train(max_steps=5)
    assert b.started_from is not None and b.started_from.kind == "resume"
    assert b.started_from.path == tmp_path / "b" / "jepa-latest.pth.tar"
    assert a.step == b.step == 5
    for name in NETWORKS:
        assert_same(getattr(a.model, name).state_dict(), getattr(b.model, name).state_dict(), name)
    assert_same(a.optimizer.state_dict(), b.optimizer.state_dict(), "opt")
    _, rows_a = read_csv(tmp_path / "a" / "jepa_r0.csv")
    _, rows_b = read_csv(tmp_path / "b" / "jepa_r0.csv")
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert [float(r["lr"]) for r in rows_a] == pytest.approx(
        [official_linear_decay(s, 7, ANNEAL_LR, ANNEAL_FINAL_LR) for s in range(1, 6)], rel=1e-4
    )
    assert sha256(source_run) == before


def test_anneal_over_its_own_latest_needs_resume_or_overwrite(tmp_path, source_run, monkeypatch):
    use_small_data(monkeypatch)
    cfg = tiny_config(tmp_path / "anneal", *anneal_overrides(source_run), "meta.load_checkpoint=true")
    Pretrainer(cfg).train(max_steps=2)
    with pytest.raises(RunFolderError, match=r"--resume \(or optimization.resume_anneal: true\).*--overwrite"):
        Pretrainer(cfg).train(max_steps=3)
    again = Pretrainer(cfg)
    again.maybe_resume(overwrite=True)  # the official restart of the cooldown, asked for explicitly
    assert again.step == 0 and again.started_from is not None and again.started_from.kind == "anneal"
    assert_same(again.model.encoder.state_dict(), read_checkpoint(source_run)["encoder"], "encoder")


def test_anneal_refuses_read_checkpoint(tmp_path, source_run):
    cfg = tiny_config(tmp_path / "anneal", *anneal_overrides(source_run), "meta.read_checkpoint=x.pth.tar")
    with pytest.raises(ConfigError, match="meta.read_checkpoint.*is_anneal"):
        Pretrainer(cfg).maybe_resume()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.embed_dim=96", "model.embed_dim: checkpoint 48 vs this run 96"),
        ("model.depth=3", "model.depth: checkpoint 2 vs this run 3"),
        ("model.num_heads=4", "model.num_heads: checkpoint 3 vs this run 4"),
        ("data.patch_size=4", "data.patch_size: checkpoint 8 vs this run 4"),
        ("model.pred_depth=3", "model.pred_depth: checkpoint 2 vs this run 3"),
    ],
)
def test_anneal_refuses_another_architecture_naming_both_values(tmp_path, source_run, override, message):
    trainer = Pretrainer(tiny_config(tmp_path / "anneal", *anneal_overrides(source_run), override))
    with pytest.raises(CheckpointError, match=message):
        trainer.maybe_resume()


def test_anneal_at_a_new_resolution_resamples_the_image_table(tmp_path, source_run):
    trainer = Pretrainer(tiny_config(tmp_path / "anneal", *anneal_overrides(source_run), "data.crop_size=48"))
    trainer.maybe_resume()
    source = read_checkpoint(source_run)
    for name in ("encoder", "target_encoder"):
        expected = interpolate_pos_embed(source[name]["pos_embed"], (1, 4, 4), (1, 6, 6), video=False)
        assert_same(getattr(trainer.model, name).pos_embed.data, expected, name)
    expected = interpolate_pos_embed(source["predictor"]["predictor_pos_embed"], (1, 4, 4), (1, 6, 6), video=False)
    assert_same(trainer.model.predictor.predictor_pos_embed.data, expected, "predictor")


@pytest.mark.parametrize("rope", [False, True], ids=["sincos", "rope"])
def test_progressive_training_anneals_longer_clips_at_a_larger_crop(tmp_path, monkeypatch, rope):
    """V-JEPA 2's recipe in small: pretrain on short clips (here 4 frames, 32 px), then anneal on longer clips at a
    larger crop (8 frames, 48 px) from that run's checkpoint: two configs."""
    monkeypatch.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", 12)
    data, extra = tmp_path / "clips", [f"model.use_rope={str(rope).lower()}"]
    source = Pretrainer(tiny_video_config(tmp_path / "short", data, *extra))
    source.train(max_steps=2)
    latest = tmp_path / "short" / "jepa-latest.pth.tar"
    stored = read_checkpoint(latest)
    cfg = tiny_video_config(tmp_path / "long", data, *extra, *anneal_overrides(latest), "data.num_frames=8",
                            "data.crop_size=48")  # fmt: skip
    trainer = Pretrainer(cfg)
    trainer.maybe_resume()
    assert trainer.model.encoder.grid == (4, 6, 6)
    for name in NETWORKS:
        ours = getattr(trainer.model, name).state_dict()
        table = "predictor_pos_embed" if name == "predictor" else "pos_embed"
        assert (table in ours) == (not rope)
        for key, value in stored[name].items():
            if key == table:  # the sine-cosine table, resampled trilinearly from the 2 x 4 x 4 grid to 4 x 6 x 6
                assert_same(ours[key], interpolate_pos_embed(value, (2, 4, 4), (4, 6, 6), video=True), key)
            else:
                assert_same(ours[key], value, f"{name}.{key}")
    summary = trainer.train(max_steps=2)
    assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["final_loss"]))
    assert read_checkpoint(tmp_path / "long" / "jepa-latest.pth.tar")["config"]["data"]["num_frames"] == 8
