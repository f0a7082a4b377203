"""The pretraining engine: schedules, optimizer groups, EMA, losses, the JEPA forward, sampling and the Pretrainer
(one step, exact resume, logs and checkpoints, failure modes, the CLI)."""

import copy
import csv
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_encoder, make_input, make_predictor, num_tokens, perturb_, random_mask
from torch.utils.data import Dataset, Subset

import app.pretrain
from app.pretrain import Pretrainer
from jepa.checkpoint import CheckpointError
from jepa.config import PretrainConfig, load_pretrain_config
from jepa.data.sampling import EpochSampler, SeededDataset, mix_seed
from jepa.training.losses import collapse_stats, prediction_loss, spread_regulariser
from jepa.training.meta_arch import JEPA
from jepa.training.optim import make_adamw, param_groups, set_hyperparams
from jepa.training.schedules import Schedules, cosine, linear, warmup_cosine

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

# Warmup to step W, cosine to step T.
W, T = 10, 50
START_LR, PEAK_LR, FINAL_LR = 0.1, 1.0, 0.01


def expected_warmup_cosine(step: int) -> float:
    if step < W:
        return START_LR + step / W * (PEAK_LR - START_LR)
    progress = min(step - W, T - W) / (T - W)
    return FINAL_LR + (PEAK_LR - FINAL_LR) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize(
    ("step", "value"),
    [
        (0, START_LR),
        (W // 2, START_LR + 0.5 * (PEAK_LR - START_LR)),
        (W - 1, START_LR + (W - 1) / W * (PEAK_LR - START_LR)),
        (W, PEAK_LR),
        ((W + T) // 2, FINAL_LR + 0.5 * (PEAK_LR - FINAL_LR)),
        (T, FINAL_LR),
    ],
    ids=["start", "mid-warmup", "last-warmup", "peak", "mid-cosine", "end"],
)
def test_warmup_cosine_at_known_steps(step, value):
    assert warmup_cosine(step, W, T, START_LR, PEAK_LR, FINAL_LR) == pytest.approx(value, abs=1e-12)
    assert value == pytest.approx(expected_warmup_cosine(step), abs=1e-12)


def test_warmup_cosine_follows_the_formula_everywhere():
    for step in range(T + 1):
        assert warmup_cosine(step, W, T, START_LR, PEAK_LR, FINAL_LR) == pytest.approx(expected_warmup_cosine(step))


def test_warmup_cosine_is_held_at_final_beyond_the_end():
    # The cosine must not swing back up past total_steps (at 2 * T - W it would be back at the peak).
    beyond = {step: warmup_cosine(step, W, T, START_LR, PEAK_LR, FINAL_LR) for step in range(T + 1, 3 * T)}
    assert beyond == pytest.approx(dict.fromkeys(beyond, FINAL_LR), abs=1e-12)


def test_warmup_cosine_without_warmup_starts_at_peak():
    assert warmup_cosine(0, 0, T, START_LR, PEAK_LR, FINAL_LR) == PEAK_LR
    assert warmup_cosine(T, 0, T, START_LR, PEAK_LR, FINAL_LR) == pytest.approx(FINAL_LR)


@pytest.mark.parametrize(("start", "final"), [(0.04, 0.4), (0.4, 0.04)], ids=["rising", "falling"])
def test_cosine_weight_decay(start, final):
    assert cosine(0, T, start, final) == pytest.approx(start)
    assert cosine(T // 2, T, start, final) == pytest.approx((start + final) / 2)
    quarter = final + (start - final) * 0.5 * (1 + math.cos(math.pi * 12 / T))
    assert cosine(12, T, start, final) == pytest.approx(quarter)
    assert cosine(T, T, start, final) == pytest.approx(final)
    lo, hi = sorted((start, final))
    assert all(lo - 1e-12 <= cosine(s, T, start, final) <= hi + 1e-12 for s in range(T + 1))


@pytest.mark.parametrize(("start", "final"), [(0.04, 0.4), (0.4, 0.04)], ids=["rising", "falling"])
def test_cosine_is_clamped_at_final_beyond_the_end(start, final):
    beyond = {step: cosine(step, T, start, final) for step in range(T + 1, 3 * T)}
    assert beyond == pytest.approx(dict.fromkeys(beyond, final), abs=1e-12)


def test_linear_momentum():
    assert linear(0, T, 0.996, 1.0) == 0.996
    assert linear(T // 2, T, 0.996, 1.0) == pytest.approx(0.998)
    assert linear(T, T, 0.996, 1.0) == pytest.approx(1.0)
    assert linear(2 * T, T, 0.996, 1.0) == pytest.approx(1.0)
    assert linear(T + 1, T, 1.0, 0.5) == pytest.approx(0.5)


def make_schedules(**changes) -> Schedules:
    kwargs = dict(
        ipe=7, epochs=5, ipe_scale=1.25, warmup_epochs=1.5, start_lr=2e-4, lr=1e-3, final_lr=1e-6,
        weight_decay=0.04, final_weight_decay=0.4, ema=(0.996, 1.0),
    )  # fmt: skip
    kwargs.update(changes)
    return Schedules(**kwargs)


def test_schedules_step_conventions():
    s = make_schedules()
    assert s.total_steps == int(1.25 * 5 * 7) == 43
    assert s.warmup_steps == int(1.5 * 7) == 10
    for i in range(s.total_steps + 2):
        assert s.lr_at(i) == warmup_cosine(i + 1, 10, 43, 2e-4, 1e-3, 1e-6)
        assert s.wd_at(i) == cosine(i + 1, 43, 0.04, 0.4)
        assert s.momentum_at(i) == linear(i, 43, 0.996, 1.0)
    # The update with index i uses lr(i + 1): the last warmup update runs at the peak.
    assert s.lr_at(s.warmup_steps - 1) == pytest.approx(1e-3)
    assert s.momentum_at(0) == 0.996


def test_schedules_reach_their_ends_at_the_last_update_without_ipe_scale():
    s = make_schedules(ipe_scale=1.0)
    last = s.epochs * s.ipe - 1
    assert s.total_steps == last + 1
    assert s.lr_at(last) == pytest.approx(1e-6)
    assert s.wd_at(last) == pytest.approx(0.4)
    assert s.momentum_at(last) == pytest.approx(0.996 + last / (last + 1) * 0.004)


def test_param_groups_follow_the_official_layout():
    """[encoder decay, predictor decay, encoder no-decay, predictor no-decay], every parameter once (frozen ones
    too, as the official code lists them), biases and 1-D tensors without weight decay."""
    modules = [make_encoder(), make_predictor()]
    groups = param_groups(modules)
    assert [g["WD_exclude"] for g in groups] == [False, False, True, True]
    assert groups[2]["weight_decay"] == groups[3]["weight_decay"] == 0.0
    for k, group in enumerate(groups):
        module = modules[k % 2]
        expected = [p for n, p in module.named_parameters() if ("bias" in n or p.dim() == 1) == group["WD_exclude"]]
        assert [id(p) for p in group["params"]] == [id(p) for p in expected]
    counts = Counter(id(p) for g in groups for p in g["params"])
    assert set(counts) == {id(p) for m in modules for p in m.parameters()} and set(counts.values()) == {1}
    assert id(modules[0].pos_embed) in {id(p) for p in groups[0]["params"]}  # frozen, listed, never updated


def test_set_hyperparams_leaves_excluded_groups_without_decay():
    optimizer = make_adamw([make_encoder(), make_predictor()], betas=(0.9, 0.95))
    for lr, wd in [(0.123, 0.05), (1e-5, 0.4)]:
        set_hyperparams(optimizer, lr, wd)
        assert [g["lr"] for g in optimizer.param_groups] == [lr] * 4
        assert [g["weight_decay"] for g in optimizer.param_groups] == [wd, wd, 0.0, 0.0]
        assert all(g["betas"] == (0.9, 0.95) for g in optimizer.param_groups)


def tiny_jepa(num_frames: int = 1, num_mask_tokens: int = 1, **kwargs) -> JEPA:
    model = JEPA(make_encoder(num_frames), make_predictor(num_frames, num_mask_tokens=num_mask_tokens), **kwargs)
    perturb_(model.encoder)  # online and target encoders differ from here on
    perturb_(model.predictor)  # distinct, non-zero mask tokens
    return model


@pytest.mark.parametrize("momentum", [0.0, 0.7, 0.996, 1.0])
def test_ema_update(momentum):
    model = tiny_jepa()
    online = [p.detach().clone() for p in model.encoder.parameters()]
    t0 = [p.detach().clone() for p in model.target_encoder.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(online, t0))
    model.update_target(momentum)
    for t, a, b in zip(model.target_encoder.parameters(), t0, online):
        assert not t.requires_grad
        if momentum == 1.0:
            assert torch.equal(t, a)
        elif momentum == 0.0:
            assert torch.equal(t, b)
        else:
            # One float32 rounding apart at most (the update is a multiply then an add).
            torch.testing.assert_close(t, momentum * a + (1 - momentum) * b, atol=1e-7, rtol=2.4e-7)
    for p, b in zip(model.encoder.parameters(), online):
        assert torch.equal(p, b)


def manual_smooth_l1(z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    d = (z - h).abs()
    return torch.where(d < 1, 0.5 * d**2, d - 0.5).mean()


def test_prediction_losses_match_their_formulas():
    z, h = 2 * torch.randn(4, 5, 6), torch.randn(4, 5, 6)
    d = z - h
    assert (d.abs() < 1).any() and (d.abs() >= 1).any(), "both branches of smooth L1 are exercised"
    torch.testing.assert_close(prediction_loss(z, h, "smooth_l1"), manual_smooth_l1(z, h))
    torch.testing.assert_close(prediction_loss(z, h, "l2"), (d**2).mean())
    torch.testing.assert_close(prediction_loss(z, h, "l1", 1.0), d.abs().mean())
    torch.testing.assert_close(prediction_loss(z, h, "l1", 2.0), (d.abs() ** 2).mean() / 2)


def test_unknown_loss_type():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown loss_type 'huber'"):
        prediction_loss(z, z, "huber")


def test_spread_regulariser_matches_formula():
    preds = [0.5 * torch.randn(3, 7, 8), 2.0 * torch.randn(3, 5, 8)]
    std = sum(torch.sqrt(z.var(dim=1) + 1e-4) for z in preds) / len(preds)
    expected = torch.relu(1 - std).mean()
    assert 0 < expected.item()
    torch.testing.assert_close(spread_regulariser(preds), expected)
    assert spread_regulariser([10 * torch.randn(2, 6, 4)]).item() == 0.0


def test_collapse_stats():
    row = torch.randn(1, 32)
    collapsed = collapse_stats(row.expand(16, 32).clone())
    assert collapsed["feat_std"] == 0.0
    assert collapsed["eff_rank"] == pytest.approx(1.0, abs=1e-3)
    for b, d in [(64, 16), (16, 48)]:
        stats = collapse_stats(torch.randn(b, d))
        assert stats["feat_std"] == pytest.approx(1.0, abs=0.3)
        assert 0.5 * min(b, d) < stats["eff_rank"] <= min(b, d)
    one_direction = torch.randn(32, 1) * torch.randn(1, 16)
    assert collapse_stats(one_direction)["eff_rank"] == pytest.approx(1.0, abs=1e-3)


def gather_targets(h: torch.Tensor, masks_enc, masks_pred) -> torch.Tensor:
    """Targets in the predictor's output order: target mask j, then context mask c, then sample b."""
    rows = [h[b, m[b]] for m in masks_pred for _ in masks_enc for b in range(h.shape[0])]
    return torch.stack(rows)


def manual_loss(model: JEPA, x, mask_sets, loss, tokens: list[int] | None = None) -> torch.Tensor:
    """Mean over mask sets of ``loss(prediction, layer-normed target tokens)``; set i uses mask token ``tokens[i]``
    (default: i)."""
    with torch.no_grad():
        h = model.target_encoder(x)
        h = torch.nn.functional.layer_norm(h, (h.shape[-1],))
        losses = []
        for index, (masks_enc, masks_pred) in enumerate(mask_sets):
            token = index if tokens is None else tokens[index]
            z = model.predictor(model.encoder(x, masks_enc), masks_enc, masks_pred, mask_index=token)
            target = gather_targets(h, masks_enc, masks_pred)
            assert z.shape == target.shape
            losses.append(loss(z, target))
    return sum(losses) / len(losses)


def check_every_trainable_parameter_gets_a_gradient(model: JEPA) -> None:
    for name, p in [*model.encoder.named_parameters(), *model.predictor.named_parameters()]:
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.target_encoder.parameters())


@pytest.mark.parametrize("num_contexts", [1, 2])
def test_jepa_forward_ijepa_style(num_contexts):
    model = tiny_jepa(loss_type="smooth_l1")
    B, n = 2, num_tokens(1)
    x = make_input(1, batch=B)
    masks_enc = [random_mask(B, n, 10) for _ in range(num_contexts)]
    masks_pred = [random_mask(B, n, 3) for _ in range(4)]
    out = model(x, [(masks_enc, masks_pred)])
    assert torch.isfinite(out.loss)
    expected = manual_loss(model, x, [(masks_enc, masks_pred)], manual_smooth_l1)
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.loss_pred, out.loss)
    assert out.loss_reg.item() == 0.0
    with torch.no_grad():
        torch.testing.assert_close(out.target_pooled, model.target_encoder(x).mean(dim=1))
    out.loss.backward()
    check_every_trainable_parameter_gets_a_gradient(model)


def test_jepa_forward_vjepa_style(num_frames):
    model = tiny_jepa(num_frames, num_mask_tokens=2, loss_type="l1", loss_exp=1.0)
    B, n = 2, num_tokens(num_frames)
    x = make_input(num_frames, batch=B)
    mask_sets = [
        ([random_mask(B, n, n // 2)], [random_mask(B, n, 4)]),
        ([random_mask(B, n, 5)], [random_mask(B, n, 6)]),
    ]

    def l1(z, h):
        return (z - h).abs().mean()

    out = model(x, mask_sets)
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, manual_loss(model, x, mask_sets, l1), atol=1e-6, rtol=1e-5)
    # Set i must use mask token i: with the tokens swapped the loss is another one.
    assert not torch.allclose(manual_loss(model, x, mask_sets, l1, tokens=[1, 0]), out.loss)
    out.loss.backward()
    check_every_trainable_parameter_gets_a_gradient(model)


def test_jepa_forward_with_spread_regulariser():
    model = tiny_jepa(num_mask_tokens=2, loss_type="l1", reg_coeff=0.5)
    B, n = 2, num_tokens(1)
    x = make_input(1, batch=B)
    mask_sets = [([random_mask(B, n, 8)], [random_mask(B, n, 4)]), ([random_mask(B, n, 6)], [random_mask(B, n, 4)])]
    out = model(x, mask_sets)
    with torch.no_grad():
        preds = [model.predictor(model.encoder(x, e), e, p, mask_index=i) for i, (e, p) in enumerate(mask_sets)]
    torch.testing.assert_close(out.loss_reg, spread_regulariser(preds), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.loss, out.loss_pred + 0.5 * out.loss_reg)
    assert out.loss_reg.item() > 0


def test_mix_seed():
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3)
    seeds = {mix_seed(1, 2, 3), mix_seed(0, 2, 3), mix_seed(1, 0, 3), mix_seed(1, 2, 0), mix_seed(3, 2, 1)}
    assert len(seeds) == 5
    assert mix_seed(1) != mix_seed(1, 0)
    assert all(0 <= s < 2**63 for s in seeds | {mix_seed(-1), mix_seed(2**63 - 1)})
    with pytest.raises(ValueError, match="64-bit"):
        mix_seed(2**63)


def test_epoch_sampler_order():
    def order(epoch: int, start: int = 0, **kwargs) -> list[tuple[int, int]]:
        sampler = EpochSampler(50, seed=3, **kwargs)
        sampler.set_epoch(epoch, start)
        items = list(sampler)
        assert len(items) == len(sampler)
        return items

    full = order(0)
    assert sorted(i for i, _ in full) == list(range(50))
    assert [i for i, _ in full] != list(range(50))
    assert full == order(0)
    assert [i for i, _ in order(1)] != [i for i, _ in full]
    assert all(seed == mix_seed(3, 0, i) for i, seed in full)
    assert order(0, start=17) == full[17:]
    assert [i for i, _ in order(0, shuffle=False)] == list(range(50))
    assert [i for i, _ in EpochSampler(50, seed=4)] != [i for i, _ in full]


def test_epoch_sampler_splits_ranks():
    shares = []
    for rank in range(2):
        sampler = EpochSampler(51, seed=0, rank=rank, world_size=2)
        sampler.set_epoch(2)
        shares.append([i for i, _ in sampler])
        assert len(sampler) == 25
    assert len(shares[0]) == len(shares[1]) == 25
    assert not set(shares[0]) & set(shares[1])
    sampler = EpochSampler(51, seed=0, rank=1, world_size=2)
    sampler.set_epoch(2, start=10)
    assert [i for i, _ in sampler] == shares[1][10:]
    with pytest.raises(ValueError):
        EpochSampler(1, seed=0, world_size=2)


class RandomAugmentDataset(Dataset):
    """Samples ``(torch noise, python noise, index)``, as a data set with random augmentations returns them."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int):
        noise, jitter = torch.rand(3), random.random()
        if self.fail:
            raise OSError("unreadable")
        return noise, jitter, index


def test_seeded_dataset_is_a_function_of_index_and_seed():
    ds = SeededDataset(RandomAugmentDataset())
    a, b = ds[(4, 123)], ds[(4, 123)]
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert a[2] == 123  # the index slot carries the seed for the mask collator
    c = ds[(4, 124)]
    assert not torch.equal(a[0], c[0]) and a[1] != c[1]
    assert len(ds) == 10


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "raising"])
def test_seeded_dataset_restores_the_callers_rng(fail):
    ds = SeededDataset(RandomAugmentDataset(fail=fail))
    torch.manual_seed(7)
    random.seed(7)
    expected = torch.rand(4), random.random()
    torch.manual_seed(7)
    random.seed(7)
    if fail:
        with pytest.raises(OSError):
            ds[(1, 99)]
    else:
        ds[(1, 99)]
    assert torch.equal(torch.rand(4), expected[0])
    assert random.random() == expected[1]


TINY = {
    "app": "ijepa",
    "data": {
        "dataset_type": "digits", "batch_size": 16, "crop_size": 32, "patch_size": 8, "num_workers": 0,
        "pin_mem": False,
    },
    "mask": {"min_keep": 1, "enc_mask_scale": [0.85, 1.0], "pred_mask_scale": [0.15, 0.2], "num_pred_masks": 2},
    "meta": {"seed": 0, "log_freq": 1},
    "model": {
        "model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 2, "pred_embed_dim": 48,
    },
    "optimization": {"epochs": 2, "warmup": 1, "ipe": 3},
}  # fmt: skip
CSV_HEADER = (
    "epoch,step,loss,loss_pred,loss_reg,lr,wd,momentum,ctx_tokens,tgt_tokens,step_ms,samples_per_s,mem_mb,"
    "feat_std,eff_rank,eff_rank_rel,sigreg,pos_share,loss_sigreg"
)
OFFICIAL_CKPT_KEYS = {"encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss", "batch_size",
                      "world_size", "lr"}  # fmt: skip
SMALL_DATA = 72  # 4 batches of 16 per pass over the data, so passes and 3-step epochs end at different steps


def write_tiny_config(folder: Path) -> Path:
    raw = copy.deepcopy(TINY)
    raw["logging"] = {"folder": str(folder), "write_tag": "jepa"}
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f"{folder.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def tiny_config(folder: Path, *overrides: str) -> PretrainConfig:
    return load_pretrain_config(write_tiny_config(folder), list(overrides))


def use_small_data(monkeypatch) -> None:
    """Train on the first SMALL_DATA digits only."""
    build = app.pretrain.build_dataset_and_collator

    def small(cfg, seed):
        dataset, collator = build(cfg, seed)
        return Subset(dataset, range(SMALL_DATA)), collator

    monkeypatch.setattr(app.pretrain, "build_dataset_and_collator", small)


def read_csv(path: Path) -> tuple[str, list[dict]]:
    with path.open() as f:
        header = f.readline().strip()
        f.seek(0)
        return header, list(csv.DictReader(f))


def assert_same(a, b, where: str = "") -> None:
    """Bit-identical nested states (dicts, lists, tensors, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        same = torch.equal(a, b)
        assert same, f"{where} differs by up to {(a.double() - b.double()).abs().max().item():.3g}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory):
    """A whole tiny run (3 epochs of 3 steps, a checkpoint every 2 epochs) on 72 digits."""
    folder = tmp_path_factory.mktemp("engine") / "run"
    cfg = tiny_config(folder, "optimization.epochs=3", "meta.checkpoint_freq=2")
    with pytest.MonkeyPatch.context() as mp:
        use_small_data(mp)
        trainer = Pretrainer(cfg)
        summary = trainer.train()
    return folder, trainer, summary


def test_one_train_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    cfg = tiny_config(
        tmp_path / "run", "optimization.lr=1e-3", "optimization.start_lr=1e-3", "optimization.warmup=0",
        "optimization.weight_decay=0", "optimization.final_weight_decay=0",
    )  # fmt: skip
    trainer = Pretrainer(cfg)
    (x, _labels, _seeds), masks_enc, masks_pred = next(iter(trainer.loader))
    mask_sets = [(masks_enc, masks_pred)]

    def loss_now() -> float:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            return trainer.model(x, mask_sets).loss.item()

    before = loss_now()
    encoder_before = copy.deepcopy(trainer.model.encoder.state_dict())
    for i in range(5):
        result = trainer.train_step(x, mask_sets)
        assert torch.isfinite(result.loss)
        assert trainer.optimizer.param_groups[0]["lr"] == trainer.schedules.lr_at(i)
    after = loss_now()
    assert trainer.step == 5
    assert after < before
    assert any(not torch.equal(v, trainer.model.encoder.state_dict()[k]) for k, v in encoder_before.items())


@pytest.mark.parametrize("stop", [4, 5], ids=["stop-at-pass-end", "stop-mid-pass"])
@pytest.mark.parametrize("drop_path", [0.0, 0.1], ids=["no-drop-path", "drop-path"])
def test_exact_resume(tmp_path, monkeypatch, drop_path, stop):
    use_small_data(monkeypatch)
    n = 7  # crosses epoch ends at 3 and 6 and the end of a pass over the data at 4
    overrides = ["optimization.epochs=3", f"model.drop_path_rate={drop_path}"]
    a = Pretrainer(tiny_config(tmp_path / "a", *overrides))
    a.train(max_steps=n)
    Pretrainer(tiny_config(tmp_path / "b", *overrides)).train(max_steps=stop)
    b = Pretrainer(tiny_config(tmp_path / "b", *overrides, "meta.load_checkpoint=true"))
    b.train(max_steps=n)
    assert a.step == b.step == n
    for name in ("encoder", "predictor", "target_encoder"):
        assert_same(getattr(a.model, name).state_dict(), getattr(b.model, name).state_dict(), name)
    assert_same(a.optimizer.state_dict(), b.optimizer.state_dict(), "opt")
    _, rows_a = read_csv(tmp_path / "a" / "jepa_r0.csv")
    _, rows_b = read_csv(tmp_path / "b" / "jepa_r0.csv")
    assert [r["step"] for r in rows_b] == [str(s) for s in range(1, n + 1)]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def test_run_summary(completed_run):
    _, trainer, summary = completed_run
    assert summary["steps"] == trainer.step == 9
    assert summary["epochs"] == 3.0
    assert math.isfinite(summary["final_loss"])
    assert Path(summary["checkpoint"]) == trainer.latest_path


def test_csv_log(completed_run):
    folder, trainer, _ = completed_run
    header, rows = read_csv(folder / "jepa_r0.csv")
    assert header == CSV_HEADER
    assert [int(r["step"]) for r in rows] == list(range(1, 10))  # log_freq 1
    assert [int(r["epoch"]) for r in rows] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    for r in rows:
        i = int(r["step"]) - 1
        assert float(r["lr"]) == pytest.approx(trainer.schedules.lr_at(i), rel=1e-5)
        assert float(r["wd"]) == pytest.approx(trainer.schedules.wd_at(i), rel=1e-5)
        assert float(r["momentum"]) == pytest.approx(trainer.schedules.momentum_at(i), rel=1e-5)
        assert math.isfinite(float(r["loss"])) and float(r["loss"]) == float(r["loss_pred"])
        assert int(r["ctx_tokens"]) >= 1 and int(r["tgt_tokens"]) >= 1


def test_resolved_config_is_written_and_loads_back(completed_run):
    folder, trainer, _ = completed_run
    assert load_pretrain_config(folder / "params-jepa.yaml") == trainer.cfg


def test_checkpoint_files_and_keys(completed_run):
    folder, trainer, _ = completed_run
    # checkpoint_freq 2: epoch 2, and the last epoch whatever the frequency.
    assert sorted(p.name for p in folder.glob("*.pth.tar")) == ["jepa-ep2.pth.tar", "jepa-ep3.pth.tar",
                                                                 "jepa-latest.pth.tar"]  # fmt: skip
    assert not list(folder.glob(".*.tmp"))
    latest = torch.load(folder / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert OFFICIAL_CKPT_KEYS | {"step"} <= set(latest)
    assert (latest["epoch"], latest["step"], latest["batch_size"], latest["world_size"]) == (3, 9, 16, 1)
    assert latest["scaler"] is None
    assert latest["lr"] == pytest.approx(trainer.schedules.lr_at(8))
    assert math.isfinite(latest["loss"])
    assert_same(latest["encoder"], trainer.model.encoder.state_dict(), "encoder")
    assert_same(latest["target_encoder"], trainer.model.target_encoder.state_dict(), "target_encoder")
    ep2 = torch.load(folder / "jepa-ep2.pth.tar", map_location="cpu", weights_only=True)
    assert (ep2["epoch"], ep2["step"]) == (2, 6)


def test_read_checkpoint_relative_to_the_run_folder(completed_run):
    folder, trainer, _ = completed_run
    cfg = tiny_config(
        folder, "optimization.epochs=3", "meta.load_checkpoint=true", "meta.read_checkpoint=jepa-ep2.pth.tar"
    )
    resumed = Pretrainer(cfg)
    resumed.maybe_resume()
    assert resumed.step == 6
    ep2 = torch.load(folder / "jepa-ep2.pth.tar", map_location="cpu", weights_only=True)
    assert_same(resumed.model.predictor.state_dict(), ep2["predictor"], "predictor")


def test_missing_read_checkpoint_is_an_error(tmp_path):
    missing = tmp_path / "elsewhere" / "nope.pth.tar"
    cfg = tiny_config(tmp_path / "run", "meta.load_checkpoint=true", f"meta.read_checkpoint={missing}")
    with pytest.raises(CheckpointError, match="nope.pth.tar"):
        Pretrainer(cfg).train(max_steps=1)
    assert not list((tmp_path / "run").glob("*.pth.tar"))


def test_load_checkpoint_without_latest_starts_from_scratch(tmp_path, caplog):
    trainer = Pretrainer(tiny_config(tmp_path / "run", "meta.load_checkpoint=true"))
    with caplog.at_level("INFO", logger="app.pretrain"):
        trainer.train(max_steps=1)
    assert "starting from scratch" in caplog.text
    assert trainer.step == 1
    assert (tmp_path / "run" / "jepa-latest.pth.tar").is_file()


@pytest.mark.parametrize("log_freq", [1, 10], ids=["log-every-step", "log-at-epoch-end"])
def test_nan_loss_stops_without_overwriting_the_checkpoint(tmp_path, monkeypatch, log_freq):
    trainer = Pretrainer(tiny_config(tmp_path / "run", f"meta.log_freq={log_freq}"))
    trainer.train(max_steps=1)  # writes jepa-latest at step 1
    latest = trainer.latest_path
    before, mtime = latest.read_bytes(), latest.stat().st_mtime_ns
    forward = trainer.model.forward

    def nan_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer.model, "forward", nan_forward)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        trainer.train(max_steps=3)  # step 3 ends epoch 1, where a checkpoint would be written
    assert latest.read_bytes() == before and latest.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in latest.parent.glob("*.pth.tar")) == ["jepa-latest.pth.tar"]


def test_cli_trains_a_few_steps(tmp_path):
    path = write_tiny_config(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "app.main", "--fname", str(path), "--max-steps", "2", "--devices", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("done: 2 steps"), last
    assert (tmp_path / "run" / "jepa-latest.pth.tar").is_file()


def test_centered_targets_subtract_the_batch_mean_per_position():
    model = tiny_jepa(loss_type="l2", center_targets=True)
    B, n = 4, num_tokens(1)
    x = make_input(1, batch=B)
    masks_enc, masks_pred = [random_mask(B, n, 10)], [random_mask(B, n, 3) for _ in range(2)]
    out = model(x, [(masks_enc, masks_pred)])
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(model.target_encoder(x), (model.encoder.embed_dim,))
        h = h - h.mean(dim=0, keepdim=True)
        z = model.predictor(model.encoder(x, masks_enc), masks_enc, masks_pred)
        expected = torch.nn.functional.mse_loss(z, gather_targets(h, masks_enc, masks_pred))
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-5)
    plain = tiny_jepa(loss_type="l2")
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(x, [(masks_enc, masks_pred)]).loss, out.loss)


TINY_VIDEO = {
    "app": "vjepa",
    "data": {
        "dataset_type": "moving_digits", "batch_size": 4, "num_frames": 4, "sampling_rate": 1, "tubelet_size": 2,
        "crop_size": 32, "patch_size": 8, "num_workers": 0, "pin_mem": False,
    },
    "mask": [
        {"aspect_ratio": [0.75, 1.5], "num_blocks": 2, "spatial_scale": [0.15, 0.15], "temporal_scale": [1.0, 1.0]},
        {"aspect_ratio": [0.75, 1.5], "num_blocks": 1, "spatial_scale": [0.5, 0.5], "temporal_scale": [1.0, 1.0]},
    ],
    "meta": {"seed": 0, "log_freq": 1, "dtype": "float32"},
    "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 2, "pred_embed_dim": 48},
    "optimization": {"epochs": 3, "ipe": 3, "warmup": 1, "lr": 1e-3, "start_lr": 1e-4, "clip_grad": 1.0},
}  # fmt: skip


def tiny_video_config(folder: Path, data_root: Path, *overrides: str) -> PretrainConfig:
    raw = copy.deepcopy(TINY_VIDEO)
    raw["logging"] = {"folder": str(folder), "write_tag": "jepa"}
    raw["data"]["root_path"] = str(data_root)
    path = folder.parent / f"{folder.name}.yaml"
    folder.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return load_pretrain_config(path, list(overrides))


def test_video_pretraining_uses_one_mask_set_per_config_and_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", 12)
    data = tmp_path / "clips"
    a = Pretrainer(tiny_video_config(tmp_path / "a", data, "model.drop_path_rate=0.1"))
    assert a.model.predictor.num_mask_tokens == 2 and a.model.encoder.is_video
    (x, _, _), masks_enc, masks_pred = next(iter(a.loader))
    assert x.shape == (4, 3, 4, 32, 32) and len(masks_enc) == len(masks_pred) == 2
    sets = app.pretrain.mask_sets(a.cfg, masks_enc, masks_pred)
    assert [(len(e), len(p)) for e, p in sets] == [(1, 1), (1, 1)]
    a.train(max_steps=5)
    Pretrainer(tiny_video_config(tmp_path / "b", data, "model.drop_path_rate=0.1")).train(max_steps=2)
    b = Pretrainer(tiny_video_config(tmp_path / "b", data, "model.drop_path_rate=0.1", "meta.load_checkpoint=true"))
    b.train(max_steps=5)
    for name in ("encoder", "predictor", "target_encoder"):
        assert_same(getattr(a.model, name).state_dict(), getattr(b.model, name).state_dict(), name)
