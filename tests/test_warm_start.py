"""Continued pretraining from a released checkpoint (``meta.pretrained_checkpoint``): strict loads of the official
layout, a fresh optimizer at step 0, the mask-token rule, resume, and clear errors for missing or damaged sources
(of anneal runs too)."""

import logging
from pathlib import Path

import pytest
import torch

import app.pretrain
from app.pretrain import Pretrainer, RunFolderError
from jepa.checkpoint import CheckpointError, read_checkpoint
from jepa.models.pos_embed import interpolate_pos_embed
from jepa.training.warm_start import fit_mask_tokens
from tests.test_engine import assert_same, tiny_config, use_small_data

pytestmark = pytest.mark.usefixtures("one_thread")

NETWORKS = ("encoder", "predictor", "target_encoder")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A 3-step tiny image run's latest checkpoint, loaded."""
    folder = tmp_path_factory.mktemp("warm") / "source"
    with pytest.MonkeyPatch.context() as mp:
        use_small_data(mp)
        Pretrainer(tiny_config(folder)).train(max_steps=3)
    return read_checkpoint(folder / "jepa-latest.pth.tar")


def release_file(path: Path, ckpt: dict, *, networks=NETWORKS, prefix: str = "module.", **changes) -> Path:
    """``ckpt``'s weights in the official release layout: only the networks, keys under DDP's ``module.``, no config,
    no optimizer; ``changes`` replace whole networks."""
    release = {name: {prefix + k: v for k, v in ckpt[name].items()} for name in networks}
    release.update(changes)
    torch.save(release, path)
    return path


def pretrained_trainer(folder: Path, source: Path, *overrides: str) -> Pretrainer:
    return Pretrainer(tiny_config(folder, f"meta.pretrained_checkpoint={source}", *overrides))


def test_pretrained_checkpoint_loads_strictly_with_a_fresh_optimizer_at_step_0(tmp_path, trained):
    source = release_file(tmp_path / "release.pt", trained)
    trainer = pretrained_trainer(tmp_path / "run", source)
    trainer.maybe_resume()
    assert trainer.step == 0 and trainer.started_from is not None and trainer.started_from.kind == "pretrained"
    for name in NETWORKS:
        assert_same(getattr(trainer.model, name).state_dict(), trained[name], name)
    assert trainer.optimizer.state_dict()["state"] == {}  # fresh AdamW moments
    (x, _, _), masks_enc, masks_pred = next(iter(trainer.loader))
    trainer.train_step(x, app.pretrain.mask_sets(trainer.cfg, masks_enc, masks_pred))
    opt = trainer.cfg.optimization
    warmup_lr = opt.start_lr + (opt.lr - opt.start_lr) / 3  # this run's warmup (1 epoch = 3 steps) from its step 0
    assert trainer.optimizer.param_groups[0]["lr"] == trainer.schedules.lr_at(0) == pytest.approx(warmup_lr)


def test_pretrained_checkpoint_without_target_encoder_copies_the_encoder(tmp_path, trained, caplog):
    caplog.set_level(logging.INFO, logger="jepa.training.warm_start")
    source = release_file(tmp_path / "release.pt", trained, networks=("encoder", "predictor"))
    trainer = pretrained_trainer(tmp_path / "run", source)
    trainer.maybe_resume()
    assert_same(trainer.model.target_encoder.state_dict(), trained["encoder"], "target_encoder")
    assert not torch.equal(trained["encoder"]["blocks.0.attn.qkv.weight"],
                           trained["target_encoder"]["blocks.0.attn.qkv.weight"])  # fmt: skip
    assert "has no target_encoder: the target encoder starts as a copy of its encoder" in caplog.text


@pytest.mark.parametrize("damage", ["unexpected", "missing", "shape"])
def test_pretrained_checkpoint_is_loaded_strictly(tmp_path, trained, damage):
    encoder = dict(trained["encoder"])
    if damage == "unexpected":
        encoder["head.weight"] = torch.zeros(3)
    elif damage == "missing":
        del encoder["norm.weight"]
    else:
        encoder["norm.weight"] = torch.zeros(7)
    source = release_file(tmp_path / "release.pt", trained, encoder=encoder)
    trainer = pretrained_trainer(tmp_path / "run", source)
    with pytest.raises(CheckpointError, match={"unexpected": "unexpected keys.*head.weight", "missing":
                       "missing keys.*norm.weight", "shape": "norm.weight: checkpoint"}[damage]):  # fmt: skip
        trainer.maybe_resume()


def test_mask_token_mismatch_is_an_error_naming_both_counts(tmp_path, trained):
    predictor = dict(trained["predictor"])
    predictor["mask_tokens.1"] = torch.randn_like(predictor["mask_tokens.0"])
    source = release_file(tmp_path / "release.pt", trained, predictor=predictor)
    trainer = pretrained_trainer(tmp_path / "run", source)
    with pytest.raises(CheckpointError, match=r"has 2 mask token\(s\), this config needs 1.*pretrained_mask_tokens"):
        trainer.maybe_resume()


def test_mask_token_cycle_loads_token_i_mod_n(tmp_path, trained, caplog):
    caplog.set_level(logging.INFO, logger="jepa.training.warm_start")
    predictor = dict(trained["predictor"])
    predictor["mask_tokens.0"], predictor["mask_tokens.1"] = torch.randn(2, 1, 1, 48)
    source = release_file(tmp_path / "release.pt", trained, predictor=predictor)
    trainer = pretrained_trainer(tmp_path / "run", source, "meta.pretrained_mask_tokens=cycle")
    trainer.maybe_resume()
    assert_same(trainer.model.predictor.mask_tokens[0].data, predictor["mask_tokens.0"], "mask_tokens.0")
    assert "cycle gives token i the checkpoint's token i % 2" in caplog.text


def test_fit_mask_tokens_cycles_and_keeps_the_rest():
    tokens = [torch.full((1, 1, 4), float(i)) for i in range(2)]
    weights = {"mask_tokens.0": tokens[0], "mask_tokens.1": tokens[1], "predictor_embed.weight": torch.ones(4, 4)}
    out = fit_mask_tokens(weights, 5, kind="pretrained", rule="cycle", where="f")
    assert sorted(out) == ["mask_tokens.0", "mask_tokens.1", "mask_tokens.2", "mask_tokens.3", "mask_tokens.4",
                           "predictor_embed.weight"]  # fmt: skip
    assert [out[f"mask_tokens.{i}"][0, 0, 0].item() for i in range(5)] == [0.0, 1.0, 0.0, 1.0, 0.0]
    fewer = fit_mask_tokens(weights, 1, kind="pretrained", rule="cycle", where="f")
    assert sorted(fewer) == ["mask_tokens.0", "predictor_embed.weight"]
    ijepa = fit_mask_tokens({"mask_token": tokens[1]}, 3, kind="pretrained", rule="cycle", where="f")
    assert all(torch.equal(ijepa[f"mask_tokens.{i}"], tokens[1]) for i in range(3)) and "mask_token" not in ijepa
    assert fit_mask_tokens(weights, 2, kind="pretrained", rule="error", where="f") is weights
    with pytest.raises(CheckpointError, match=r"optimization.anneal_ckpt f: its predictor has 2 .* needs 3"):
        fit_mask_tokens(weights, 3, kind="anneal", rule="cycle", where="f")


@pytest.mark.parametrize("with_config", [True, False], ids=["stored-config", "official-file"])
def test_pretrained_checkpoint_at_another_resolution_resamples_the_tables(tmp_path, trained, with_config):
    if with_config:
        source = tmp_path / "ours.pt"
        torch.save(trained, source)
    else:
        source = release_file(tmp_path / "release.pt", trained)
    trainer = pretrained_trainer(tmp_path / "run", source, "data.crop_size=48")
    trainer.maybe_resume()
    expected = interpolate_pos_embed(trained["encoder"]["pos_embed"], (1, 4, 4), (1, 6, 6), video=False)
    assert_same(trainer.model.encoder.pos_embed.data, expected, "pos_embed")
    assert_same(trainer.model.encoder.blocks[1].mlp.fc2.weight.data, trained["encoder"]["blocks.1.mlp.fc2.weight"])


def test_pretrained_checkpoint_of_another_architecture_is_refused(tmp_path, trained):
    source = tmp_path / "ours.pt"
    torch.save(trained, source)
    with pytest.raises(CheckpointError, match="model.embed_dim: checkpoint 48 vs this run 96"):
        pretrained_trainer(tmp_path / "run", source, "model.embed_dim=96").maybe_resume()


def test_resumed_pretrained_run_continues_without_reading_the_pretrained_file(tmp_path, trained, monkeypatch):
    use_small_data(monkeypatch)
    source = release_file(tmp_path / "release.pt", trained)
    a = pretrained_trainer(tmp_path / "a", source)
    a.train(max_steps=4)
    pretrained_trainer(tmp_path / "b", source).train(max_steps=2)
    source.unlink()  # a resumed run must not need it
    b = pretrained_trainer(tmp_path / "b", source)
    b.train(max_steps=4, resume=True)
    assert b.started_from is not None and b.started_from.kind == "resume"
    for name in NETWORKS:
        assert_same(getattr(a.model, name).state_dict(), getattr(b.model, name).state_dict(), name)
    assert_same(a.optimizer.state_dict(), b.optimizer.state_dict(), "opt")
    with pytest.raises(RunFolderError, match=r"--resume \(or meta.load_checkpoint: true\)"):
        pretrained_trainer(tmp_path / "b", source).train(max_steps=5)
    c = pretrained_trainer(tmp_path / "b", source, "meta.load_checkpoint=true")
    c.maybe_resume()
    assert c.step == 4 and c.started_from is not None and c.started_from.kind == "resume"


@pytest.mark.parametrize("kind", ["pretrained", "anneal"])
@pytest.mark.parametrize("problem", ["missing", "corrupt", "truncated"])
def test_missing_or_damaged_source_is_an_error_naming_it(tmp_path, trained, kind, problem):
    source = tmp_path / "source.pt"
    if problem == "corrupt":
        source.write_bytes(b"not a checkpoint at all")
    elif problem == "truncated":
        torch.save(trained, source)
        source.write_bytes(source.read_bytes()[:2000])
    key = "meta.pretrained_checkpoint" if kind == "pretrained" else "optimization.anneal_ckpt"
    setting = [f"{key}={source}"] + (["optimization.is_anneal=true", "optimization.warmup=0"] if kind == "anneal"
                                     else [])  # fmt: skip
    trainer = Pretrainer(tiny_config(tmp_path / "run", *setting))
    with pytest.raises(CheckpointError, match=f"{key}.*{source}") as info:
        trainer.maybe_resume()
    assert {"missing": "does not exist", "corrupt": "is not a checkpoint", "truncated": "damaged or truncated"}[
        problem
    ] in str(info.value)
