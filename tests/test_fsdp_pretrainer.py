"""``meta.sharding: fsdp`` in the trainer: two gloo processes pretrain the tiny I-JEPA config sharded with FSDP2
exactly as with DDP (weights within 1e-5, the online probe included), write checkpoints of the unsharded layout,
resume a sharded run exactly and start one from an unsharded checkpoint."""

import pytest
import torch
from test_engine import tiny_config, use_small_data

import jepa.runtime.distributed as jd
from app.pretrain import Pretrainer
from jepa.checkpoint import read_checkpoint
from jepa.config import ConfigError

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip(f"torch {torch.__version__} has no FSDP2 (torch.distributed.fsdp.fully_shard)", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = ("encoder", "predictor", "target_encoder")
BATCH = "data.batch_size=8"  # per rank: 72 digits, 4 global batches of 16 per pass, 3 steps per epoch


def _job(rank: int, world_size: int, device: torch.device, runs: list) -> dict:
    out = {}
    for name, cfg, kwargs in runs:
        with pytest.MonkeyPatch.context() as mp:
            use_small_data(mp)
            trainer = Pretrainer(cfg, device)
            summary = trainer.train(**kwargs)
            state = trainer.state_dict(summary["final_loss"])  # gathered: every rank holds the full tensors
            out[name] = summary, {m: state[m] for m in MODELS}, state["opt"]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp_run")
    shard = "meta.sharding=fsdp"
    probe = "meta.eval_freq=1"
    jobs = [
        ("ddp", tiny_config(root / "ddp", BATCH, probe), {}),
        ("fsdp", tiny_config(root / "fsdp", BATCH, shard, probe), {}),
        ("cut", tiny_config(root / "cut", BATCH, shard, probe), {"max_steps": 2}),
        ("resumed", tiny_config(root / "cut", BATCH, shard, probe), {"resume": True}),
        # A sharded run that starts from the (unsharded) DDP run's weights, before its first step.
        (
            "warm",
            tiny_config(
                root / "warm", BATCH, shard, f"meta.pretrained_checkpoint={root / 'ddp' / 'jepa-latest.pth.tar'}"
            ),
            {"max_steps": 0},
        ),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        results = jd.spawn(_job, ["cpu", "cpu"], jobs)
    return root, results


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_a_sharded_run_trains_like_ddp(runs):
    _, results = runs
    for rank_results in results:
        ddp_summary, ddp, ddp_opt = rank_results["ddp"]
        summary, sharded, opt = rank_results["fsdp"]
        assert summary["steps"] == ddp_summary["steps"] > 2
        assert summary["final_loss"] == pytest.approx(ddp_summary["final_loss"], abs=1e-5)
        for m in MODELS:
            assert _max_diff(sharded[m], ddp[m]) < 1e-5, m
        assert opt["state"].keys() == ddp_opt["state"].keys()
        for i, entry in ddp_opt["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(opt["state"][i][key], entry[key], rtol=0, atol=1e-5)


def test_a_sharded_checkpoint_has_the_unsharded_layout(runs):
    root, results = runs
    _, ddp, _ = results[0]["ddp"]
    ckpt = read_checkpoint(root / "fsdp" / "jepa-latest.pth.tar")
    for m in MODELS:
        assert {k: tuple(v.shape) for k, v in ckpt[m].items()} == {k: tuple(v.shape) for k, v in ddp[m].items()}
        assert _max_diff(ckpt[m], ddp[m]) < 1e-5, m


def test_a_sharded_run_resumes_exactly(runs):
    _, results = runs
    for rank_results in results:
        full_summary, full, _ = rank_results["fsdp"]
        cut_summary, _, _ = rank_results["cut"]
        summary, resumed, _ = rank_results["resumed"]
        assert cut_summary["steps"] == 2 and summary["steps"] == full_summary["steps"]
        for m in MODELS:
            assert _max_diff(resumed[m], full[m]) < 1e-6, m


def test_the_sharded_online_probe_is_logged_as_with_ddp(runs):
    root, _ = runs
    ddp = (root / "ddp" / "jepa_online_probe.csv").read_text().splitlines()
    sharded = (root / "fsdp" / "jepa_online_probe.csv").read_text().splitlines()
    assert len(sharded) == len(ddp) > 2  # header, epoch 0 and every epoch after
    for a, b in zip(ddp[1:], sharded[1:], strict=True):
        ea, sa, acc_a, *_ = a.split(",")
        eb, sb, acc_b, *_ = b.split(",")
        assert (ea, sa) == (eb, sb) and float(acc_b) == pytest.approx(float(acc_a), abs=0.02)


def test_sharding_without_a_process_group_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="meta.sharding: fsdp shards the model over the ranks"):
        Pretrainer(tiny_config(tmp_path / "one", "meta.sharding=fsdp"))


def test_a_sharded_run_starts_from_an_unsharded_checkpoint(runs):
    _, results = runs
    for rank_results in results:
        _, ddp, _ = rank_results["ddp"]
        summary, warm, _ = rank_results["warm"]
        assert summary["steps"] == 0
        for m in MODELS:
            assert _max_diff(warm[m], ddp[m]) == 0, m
