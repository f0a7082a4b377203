"""The bookkeeping both trainers share (``jepa.training``, ``jepa.training.optim``): run folder, atomic saves, strict
loads, which checkpoint a run resumes from, the CSV log a resumed run continues, RNG states, DDP wrapping, parameter
groups and per-step hyper-parameters; ``ProbeTrainer.train_step``; the builders ``app.pretrain`` takes from ``jepa``."""

import ast
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_encoder, make_predictor
from test_engine import read_csv, tiny_config
from test_evals import make_trainer, probe_config
from torch import nn

import app.pretrain
from app.pretrain import Pretrainer
from evals.probing import make_probe_optimizer
from jepa.checkpoint import CheckpointError, read_checkpoint
from jepa.models import AttentiveClassifier
from jepa.training import builders
from jepa.training.ddp import wrap_ddp
from jepa.training.optim import clip_per_module, decays, make_adamw, param_groups, set_hyperparams_at
from jepa.training.rng import restore_rng, rng_state, seed_all, set_rng_state
from jepa.training.run import RunFolder, load_modules
from jepa.training.schedules import Schedules

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("test_training_bookkeeping")


# -- run folder ---------------------------------------------------------------------------------------------------
def test_run_folder_names_its_files_and_resolves_paths_against_the_folder(tmp_path):
    run = RunFolder(tmp_path / "run", "jepa")
    assert run.latest == tmp_path / "run" / "jepa-latest.pth.tar"
    assert run.epoch_path(3) == tmp_path / "run" / "jepa-ep3.pth.tar"
    assert run.resolve("jepa-ep3.pth.tar") == run.epoch_path(3)
    assert run.resolve(tmp_path / "x.pt") == tmp_path / "x.pt"


def test_save_writes_latest_and_the_epoch_file_and_only_the_writer_writes(tmp_path):
    run = RunFolder(tmp_path / "run", "t")
    run.prepare()
    stale = run.folder / ".t-latest.pth.tar.abcd1234.tmp"  # what a run killed mid-write leaves
    stale.write_bytes(b"partial")
    run.prepare()
    assert not stale.exists()
    assert run.save({"step": 1}) == run.latest and not run.epoch_path(1).exists()
    assert run.save({"step": 2}, epoch=1) == run.latest
    assert read_checkpoint(run.latest)["step"] == read_checkpoint(run.epoch_path(1))["step"] == 2
    other = RunFolder(tmp_path / "other", "t", writer=False)
    other.prepare()
    assert other.save({"step": 1}, epoch=1) is None
    assert other.csv_log("log.csv", ["step"], column="step", value=0) is None
    assert not other.folder.exists()


def test_csv_log_starts_afresh_at_zero_and_drops_the_rows_after_a_resumed_step(tmp_path):
    run = RunFolder(tmp_path, "t")
    log = run.csv_log("log.csv", ["step", "loss"], column="step", value=0)
    for step in range(1, 6):
        log.log(step=step, loss=0.5)
    log = run.csv_log("log.csv", ["step", "loss"], column="step", value=3)  # resumed from step 3
    log.log(step=4, loss=0.25)
    _, rows = read_csv(tmp_path / "log.csv")
    assert [(r["step"], r["loss"]) for r in rows] == [("1", "0.5"), ("2", "0.5"), ("3", "0.5"), ("4", "0.25")]
    run.csv_log("log.csv", ["step", "loss"], column="step", value=0)
    assert read_csv(tmp_path / "log.csv")[1] == []


@pytest.mark.parametrize(
    ("latest_first", "requested", "read", "has_latest", "expected"),
    [
        (True, False, None, True, "latest"),
        (True, True, "ep1.pt", True, "latest"),  # a requeued job continues where it was, whatever the config says
        (True, False, None, False, None),
        (False, False, "ep1.pt", True, None),
        (False, True, None, True, "latest"),
        (False, True, "ep1.pt", True, "ep1.pt"),
        (False, True, None, False, None),
    ],
)
def test_resume_path(tmp_path, caplog, latest_first, requested, read, has_latest, expected):
    run = RunFolder(tmp_path, "t")
    (tmp_path / "ep1.pt").write_bytes(b"")
    if has_latest:
        run.latest.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        path = run.resume_path(latest_first=latest_first, requested=requested, requested_by="resume_key",
                               read_path=read, log=LOG)  # fmt: skip
    assert path == {"latest": run.latest, "ep1.pt": tmp_path / "ep1.pt", None: None}[expected]
    # Asked for a resume and starting from scratch: said so, on the caller's logger.
    assert ("starting from scratch" in caplog.text) == (expected is None and (latest_first or requested))


def test_a_missing_read_path_is_an_error_naming_its_key(tmp_path):
    run = RunFolder(tmp_path, "t")
    with pytest.raises(CheckpointError, match=r"meta.read_checkpoint .*nope.pt does not exist"):
        run.resume_path(latest_first=False, requested=True, requested_by="meta.load_checkpoint", read_path="nope.pt",
                        read_key="meta.read_checkpoint")  # fmt: skip


def test_load_modules_is_strict_strips_ddp_prefixes_and_names_missing_entries(tmp_path):
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    ckpt = {"head": {f"module.{k}": v for k, v in source.state_dict().items()}}
    load_modules(ckpt, {"head": target}, "f.pt")
    assert torch.equal(source.weight, target.weight)
    with pytest.raises(CheckpointError, match=r"f.pt has no 'body'; its keys are \['head'\]"):
        load_modules(ckpt, {"body": target}, "f.pt")
    with pytest.raises(CheckpointError, match=r"f.pt \[head\] does not fit Linear: shape mismatch"):
        load_modules(ckpt, {"head": nn.Linear(3, 4)}, "f.pt")


# -- RNG ----------------------------------------------------------------------------------------------------------
def _draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    seed_all(5)
    _draws()
    torch.save({"rng": rng_state()}, tmp_path / "c.pt")
    expected = _draws()
    seed_all(6)
    set_rng_state(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    assert _draws() == expected


def test_restore_rng_takes_this_ranks_state_or_reseeds_for_another_world_size():
    states = []
    for seed in (1, 2):
        seed_all(seed)
        states.append(rng_state())
    after = []
    for seed in (1, 2):
        seed_all(seed)
        after.append(_draws())
    restore_rng({"rng": states[0], "rng_per_rank": states}, rank=1, world_size=2, reseed=0)
    assert _draws() == after[1]
    restore_rng({"rng": states[0]}, rank=0, world_size=1, reseed=0)
    assert _draws() == after[0]
    restore_rng({"rng": states[0], "rng_per_rank": states}, rank=0, world_size=3, reseed=2)  # 2 ranks saved, 3 now
    assert _draws() == after[1]
    seed_all(7)
    expected = _draws()
    seed_all(7)
    restore_rng({}, rank=0, world_size=1, reseed=0)  # an official file: no RNG, nothing changes
    assert _draws() == expected


def test_one_process_is_not_wrapped():
    module = nn.Linear(2, 2)
    assert wrap_ddp(module, torch.device("cpu"), 1) is module
    assert wrap_ddp(module, torch.device("cpu"), 1, sync_buffers=False, static_graph=True) is module


# -- parameter groups and hyper-parameters --------------------------------------------------------------------------
def test_one_decay_rule_for_pretraining_and_probe_groups():
    probe = AttentiveClassifier(embed_dim=48, num_heads=3, num_classes=4)
    ours = make_probe_optimizer(probe).param_groups
    shared = param_groups([probe], mark_decayed=False)
    assert [[id(p) for p in g["params"]] for g in ours] == [[id(p) for p in g["params"]] for g in shared]
    assert "WD_exclude" not in shared[0] and shared[1]["WD_exclude"] and shared[1]["weight_decay"] == 0.0
    marked = param_groups([probe])
    assert [[id(p) for p in g["params"]] for g in marked] == [[id(p) for p in g["params"]] for g in shared]
    assert [g["WD_exclude"] for g in marked] == [False, True]
    assert all(decays(n, p.shape) for n, p in probe.named_parameters() if any(p is q for q in shared[0]["params"]))


def test_set_hyperparams_at_follows_the_schedules_and_returns_them():
    schedules = Schedules(ipe=4, epochs=2, ipe_scale=1.0, warmup_epochs=1, start_lr=0.0, lr=1.0, final_lr=0.1,
                          weight_decay=0.04, final_weight_decay=0.4, ema=(0.99, 1.0))  # fmt: skip
    optimizer = make_adamw([make_encoder(), make_predictor()])
    for step in (0, 3, 7):
        lr, wd = set_hyperparams_at(optimizer, schedules, step)
        assert (lr, wd) == (schedules.lr_at(step), schedules.wd_at(step))
        assert [g["lr"] for g in optimizer.param_groups] == [lr] * 4
        assert [g["weight_decay"] for g in optimizer.param_groups] == [wd, wd, 0.0, 0.0]


def test_clip_per_module_clips_each_module_on_its_own():
    big, small = nn.Linear(4, 4), nn.Linear(4, 4)
    for module, scale in ((big, 100.0), (small, 1e-3)):
        for p in module.parameters():
            p.grad = torch.full_like(p, scale)
    before = [p.grad.clone() for p in small.parameters()]
    clip_per_module([big, small], 1.0)
    assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in big.parameters()])) == pytest.approx(1.0)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, small.parameters(), strict=True))
    clip_per_module([small], None)  # no clipping configured


# -- ProbeTrainer.train_step -----------------------------------------------------------------------------------
def test_probe_train_step_is_one_update_of_every_probe_at_its_scheduled_hyperparameters(tmp_path):
    trainer = make_trainer(probe_config(tmp_path))
    batch = next(iter(trainer.train_loader))
    before = [p.linear.weight.clone() for p in trainer.bank.probes]
    trainer.step = 2
    out = trainer.train_step(batch)
    assert trainer.step == 3
    assert out.hparams == [(s.lr_at(2), s.wd_at(2)) for s in trainer.schedules]
    assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == [h[0] for h in out.hparams]
    assert out.logits.shape == (2, 2, 4, 10) and out.losses.shape == (2,) and not out.logits.requires_grad
    assert all(not torch.equal(b, p.linear.weight) for b, p in zip(before, trainer.bank.probes, strict=True))
    assert all(p.grad is None for p in trainer.bank.parameters())


def test_probe_train_epoch_is_its_train_steps(tmp_path):
    by_epoch, by_step = make_trainer(probe_config(tmp_path / "a")), make_trainer(probe_config(tmp_path / "b"))
    by_epoch.epoch = by_step.epoch = 1
    by_epoch.train_epoch()
    by_step.step = by_step.ipe
    for batch in by_step.train_loader:
        by_step.train_step(batch)
    assert by_epoch.step == by_step.step == 2 * by_epoch.ipe
    for a, b in zip(by_epoch.bank.state_dict().values(), by_step.bank.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# -- builders and the architecture check on resume ------------------------------------------------------------------
def test_app_pretrain_wires_the_builders_of_jepa(monkeypatch, tmp_path):
    assert app.pretrain.build_models is builders.build_models
    assert app.pretrain.mask_sets is builders.mask_sets
    assert app.pretrain.loss_type_for is builders.loss_type_for
    seen = {}

    def build(cfg, seed, *, moving_digits_videos):
        seen.update(seed=seed, videos=moving_digits_videos)
        return "dataset", "collator"

    monkeypatch.setattr(builders, "build_dataset_and_collator", build)
    monkeypatch.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", 7)  # what the tests shrink
    assert app.pretrain.build_dataset_and_collator(tiny_config(tmp_path / "run"), 3) == ("dataset", "collator")
    assert seen == {"seed": 3, "videos": 7}


def test_benchmarks_take_only_the_trainer_from_the_app():
    for src in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(src.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("app"):
                assert [a.name for a in node.names] == ["Pretrainer"], f"{src.name}: {ast.unparse(node)}"


def test_resume_refuses_another_input_size_and_accepts_another_drop_path(tmp_path):
    folder = tmp_path / "run"
    Pretrainer(tiny_config(folder)).train(max_steps=1)
    with pytest.raises(CheckpointError, match=r"data.crop_size: checkpoint 32 vs this run 48"):
        Pretrainer(tiny_config(folder, "meta.load_checkpoint=true", "data.crop_size=48")).train(max_steps=2)
    resumed = Pretrainer(tiny_config(folder, "meta.load_checkpoint=true", "model.drop_path_rate=0.2"))
    resumed.train(max_steps=2)
    assert resumed.step == 2
