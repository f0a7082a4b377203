"""Collapse-proof objectives and collapse diagnostics (issue 14): SIGReg as a loss term of the JEPA step, targets
without an EMA teacher, the position-variance share, the extended collapse signals and the once-per-run warning."""

import logging

import pytest
import torch

from app.pretrain import Pretrainer
from jepa.config.strict import ConfigError
from jepa.training.losses import collapse_stats, position_share
from jepa.training.sigreg import SIGReg
from tests.conftest import make_input, num_tokens, random_mask
from tests.test_engine import manual_loss, manual_smooth_l1, tiny_config, tiny_jepa, use_small_data


def batch(B: int = 4):
    n = num_tokens(1)
    return make_input(1, batch=B), [([random_mask(B, n, 10)], [random_mask(B, n, 3) for _ in range(2)])]


@pytest.mark.parametrize("on", ["pooled", "tokens"])
def test_sigreg_term_is_added_with_its_weight_on_the_context_embeddings(on):
    model = tiny_jepa(loss_type="smooth_l1", sigreg_weight=0.3, sigreg_on=on, sigreg_directions=16)
    x, mask_sets = batch()
    out = model(x, mask_sets, step=5)
    masks_enc = mask_sets[0][0]
    with torch.no_grad():
        context = model.encoder(x, masks_enc)
        emb = context.mean(dim=1) if on == "pooled" else context
        expected = SIGReg(16)(emb, step=5)
    torch.testing.assert_close(out.loss_sigreg, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss_pred, manual_loss(model, x, mask_sets, manual_smooth_l1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, out.loss_pred + 0.3 * out.loss_sigreg)
    # The directions follow the step: another step, another statistic.
    assert not torch.allclose(model(x, mask_sets, step=6).loss_sigreg, out.loss_sigreg)


def test_without_sigreg_nothing_is_computed():
    model = tiny_jepa(loss_type="smooth_l1")
    x, mask_sets = batch()
    out = model(x, mask_sets)
    assert out.loss_sigreg is None and model.sigreg is None
    torch.testing.assert_close(out.loss, out.loss_pred)


def test_online_targets_carry_the_gradient_and_stopgrad_ones_do_not():
    x, mask_sets = batch()
    grads = {}
    for target in ("ema", "online_stopgrad", "online"):
        torch.manual_seed(0)
        model = tiny_jepa(loss_type="smooth_l1", target=target, sigreg_weight=0.1, sigreg_directions=8)
        if target != "ema":
            model.update_target(0.99)  # no teacher: the momentum is ignored, target = online
            for a, b in zip(model.target_encoder.parameters(), model.encoder.parameters()):
                assert torch.equal(a, b)
        model(x, mask_sets, step=0).loss.backward()
        grads[target] = torch.cat([p.grad.flatten() for p in model.encoder.parameters() if p.grad is not None])
        assert all(p.grad is None for p in model.target_encoder.parameters())
    # online_stopgrad (target = a copy of the online encoder, no gradient) differs from online only through the
    # gradient that flows into the targets.
    assert not torch.allclose(grads["online"], grads["online_stopgrad"])


def test_unknown_objective_names_are_errors():
    with pytest.raises(ValueError, match="sigreg_on"):
        tiny_jepa(sigreg_on="channels")
    with pytest.raises(ValueError, match="target"):
        tiny_jepa(target="teacher")


def test_position_share():
    g = torch.Generator().manual_seed(0)
    per_position = torch.randn(1, 16, 8, generator=g)
    assert position_share(per_position.expand(6, 16, 8)).item() == pytest.approx(1.0)
    per_sample = torch.randn(6, 1, 8, generator=g).expand(6, 16, 8)  # the same at every position
    assert position_share(per_sample).item() == pytest.approx(0.0, abs=1e-6)
    mixed = per_position.expand(400, 16, 8) + torch.randn(400, 16, 8, generator=g)
    # Position variance 1 per channel against noise variance 1: about half (up to the sample means).
    assert position_share(mixed).item() == pytest.approx(
        per_position.var(dim=1, unbiased=False).mean().item()
        / (per_position.var(dim=1, unbiased=False).mean().item() + 1),
        abs=0.05,
    )


def test_collapse_stats_report_the_rank_share_and_the_shape_of_the_features():
    g = torch.Generator().manual_seed(0)
    iso = collapse_stats(torch.randn(512, 32, generator=g))
    flat = collapse_stats(torch.randn(512, 2, generator=g) @ torch.randn(2, 32, generator=g))
    assert iso["eff_rank_rel"] == pytest.approx(iso["eff_rank"] / 32)
    assert iso["eff_rank_rel"] > 0.8 and flat["eff_rank_rel"] < 0.1
    assert iso["sigreg"] < 3 < 30 < flat["sigreg"]
    # Scale-free: the same cloud 100x smaller has the same statistic.
    assert collapse_stats(0.01 * torch.randn(512, 32, generator=g))["sigreg"] < 3


def test_loss_keys_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="sigreg_weight"):
        tiny_config(tmp_path / "a", "loss.sigreg_weight=-1")
    with pytest.raises(ConfigError, match="target"):
        tiny_config(tmp_path / "b", "loss.target=teacher")
    with pytest.raises(ConfigError, match="collapse_warn_rank"):
        tiny_config(tmp_path / "c", "meta.collapse_warn_rank=1.5")
    with pytest.raises(ConfigError, match="collapse_warn_drop"):
        tiny_config(tmp_path / "d", "meta.collapse_warn_drop=1")


def test_sigreg_on_without_a_weight_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        tiny_config(tmp_path / "a", "loss.sigreg_on=tokens")
    assert "loss.sigreg_on" in caplog.text


@pytest.mark.parametrize("fraction, warned", [(0.99, True), (0.0, False)])
def test_dimensional_collapse_is_warned_once_with_its_step(tmp_path, monkeypatch, caplog, fraction, warned):
    use_small_data(monkeypatch)
    cfg = tiny_config(tmp_path / "run", "optimization.epochs=2", f"meta.collapse_warn_rank={fraction}",
                      "meta.log_freq=1", "loss.sigreg_weight=0.05", "loss.sigreg_directions=8")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="app.pretrain"):
        Pretrainer(cfg).train()
    messages = [r.getMessage() for r in caplog.records if "dimensional collapse" in r.getMessage()]
    assert len(messages) == (1 if warned else 0)
    if warned:
        assert messages[0].startswith("step 1:") and "99%" in messages[0]
    header = (tmp_path / "run" / "jepa_r0.csv").read_text().splitlines()[0].split(",")
    assert {"eff_rank_rel", "sigreg", "pos_share", "loss_sigreg"} <= set(header)


@pytest.mark.parametrize("ranks, warned_at", [([8.0, 6.0, 3.9, 2.0, 1.0], 3), ([2.0, 3.0, 4.0, 5.0, 6.0], None)])
def test_a_rank_drop_during_training_is_warned_once(tmp_path, monkeypatch, caplog, ranks, warned_at):
    """meta.collapse_warn_drop compares each logged effective rank with the first one: a fall below half of it is
    warned once with its step, a rank that grows from a low start (tiny video ViTs at init) never."""
    import app.pretrain as pretrain

    use_small_data(monkeypatch)
    seen = iter(ranks)

    def stats(pooled):
        out = collapse_stats(pooled)
        rank = next(seen)
        return {**out, "eff_rank": rank, "eff_rank_rel": rank / pooled.shape[1]}

    monkeypatch.setattr(pretrain, "collapse_stats", stats)
    cfg = tiny_config(tmp_path / "run", "optimization.epochs=1", "optimization.ipe=5", "meta.log_freq=1",
                      "meta.collapse_warn_rank=0")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="app.pretrain"):
        Pretrainer(cfg).train()
    messages = [r.getMessage() for r in caplog.records if "collapse during training" in r.getMessage()]
    if warned_at is None:
        assert messages == []
    else:
        assert len(messages) == 1
        assert messages[0].startswith(f"step {warned_at}:") and "to 3.9 from 8.0 at step 1" in messages[0]


def test_knn_accuracy_on_a_hand_made_example():
    from jepa.training.online_probe import knn_accuracy

    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    train_y = torch.tensor([0, 0, 1, 1, 2])
    val_x = torch.tensor([[1.0, 0.05], [0.05, 1.0], [-1.0, 0.1]])
    assert knn_accuracy(train_x, train_y, val_x, torch.tensor([0, 1, 2]), k=1) == 1.0
    # k=2: the third val sample's neighbours are labels 2 and 1 (a tie): the nearest (2) wins.
    assert knn_accuracy(train_x, train_y, val_x, torch.tensor([0, 1, 2]), k=2) == 1.0
    # k=5: every vote is 2-2-1 (labels 0, 1, 2): the tie between 0 and 1 goes to the nearer of them; for the third
    # sample that is label 1 ([0, 1] is nearer to [-1, 0.1] than [1, 0] is), not its nearest neighbour's label 2.
    assert knn_accuracy(train_x, train_y, val_x, torch.tensor([0, 1, 1]), k=5) == pytest.approx(1.0)


def test_online_probe_logs_a_learning_curve_and_keeps_resume_exact(tmp_path, monkeypatch):
    from jepa.training import online_probe

    use_small_data(monkeypatch)
    monkeypatch.setattr(online_probe, "_subset", lambda dataset, limit: torch.utils.data.Subset(dataset, range(48)))
    straight = tiny_config(tmp_path / "a", "optimization.epochs=2", "meta.eval_freq=1")
    trainer = Pretrainer(straight)
    trainer.train()
    rows = (tmp_path / "a" / "jepa_online_probe.csv").read_text().splitlines()
    assert rows[0] == "epoch,step,knn_acc,train_samples,val_samples"
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    assert all(0.0 <= float(r.split(",")[2]) <= 1.0 for r in rows[1:])
    cut = tiny_config(tmp_path / "b", "optimization.epochs=2", "meta.eval_freq=1")
    Pretrainer(cut).train(max_steps=3)
    resumed = Pretrainer(cut)
    resumed.train(resume=True)
    for a, b in zip(trainer.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "b" / "jepa_online_probe.csv").read_text() == "\n".join(rows) + "\n"


def test_online_probe_is_off_without_a_labelled_held_out_split(tmp_path, caplog):
    from jepa.config import load_pretrain_config
    from jepa.training.online_probe import make_online_probe

    csv = tmp_path / "train.csv"
    csv.write_text("a.mp4 0\n")
    cfg = load_pretrain_config("configs/pretrain/tiny_vjepa_cpu.yaml", [
        "data.dataset_type=VideoDataset", f"data.datasets=[{csv}]", "data.root_path=null", "meta.eval_freq=1",
        f"logging.folder={tmp_path / 'run'}",
    ])  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert make_online_probe(cfg, torch.device("cpu")) is None
    assert "data.val_datasets" in caplog.text
