"""Several processes: the helpers of jepa.runtime.distributed, the local spawner, and distributed pretraining (two gloo
processes on the CPU train exactly like one process on their combined batch)."""

import csv
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from test_engine import assert_same, tiny_config, tiny_video_config, use_small_data, write_tiny_config

import app.pretrain
import jepa.runtime.distributed as jd
from app.pretrain import Pretrainer, build_dataset_and_collator
from jepa.data.sampling import EpochSampler, SeededDataset
from jepa.image.masks import MultiblockMaskCollator2D

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("encoder", "predictor", "target_encoder")
TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR")


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    """Tests start outside any launcher; spawned processes inherit one thread each."""
    for name in TORCH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_helpers_are_no_ops_without_a_process_group():
    assert not jd.is_initialized()
    assert (jd.get_rank(), jd.get_world_size(), jd.is_main_process()) == (0, 1, True)
    t = torch.arange(3.0)
    assert jd.all_reduce_sum(t) is t and t.tolist() == [0.0, 1.0, 2.0]
    assert jd.all_gather_cat(t) is t
    assert jd.all_gather_objects({"a": 1}) == [{"a": 1}]
    jd.barrier()
    with jd.main_process_first():
        pass


@pytest.mark.parametrize(("length", "world_size"), [(10, 3), (2, 4), (8, 2), (0, 2)])
def test_sharded_sampler_visits_every_index_once_without_padding(length, world_size):
    shards = [list(jd.ShardedSampler(length, r, world_size)) for r in range(world_size)]
    assert sorted(i for s in shards for i in s) == list(range(length))
    assert all(s == list(range(r, length, world_size)) for r, s in enumerate(shards))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(jd.ShardedSampler(length, r, world_size)) for r in range(world_size)] == list(map(len, shards))


def test_sharded_sampler_defaults_to_the_whole_range_in_one_process():
    assert list(jd.ShardedSampler(5)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="rank 2 is not in"):
        jd.ShardedSampler(5, rank=2, world_size=2)


def test_a_world_of_one_is_not_initialised(monkeypatch):
    world = jd.init_distributed()
    assert (world.rank, world.world_size, world.device.type) == (0, 1, "cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert jd.init_distributed("cpu") == jd.World(0, 1, 0, torch.device("cpu"))
    assert not jd.is_initialized()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR is not set"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT is not set"),
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK=2 is not in \[0, WORLD_SIZE=2\)"),
    ],
    ids=["no-addr", "no-port", "no-rank", "bad-world", "bad-rank"],
)
def test_an_incomplete_launcher_environment_is_an_error(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(jd.DistributedError, match=message):
        jd.init_distributed("cpu")
    assert not jd.is_initialized()


def test_an_unreachable_group_is_an_error_not_a_single_process(monkeypatch):
    # Rank 1 of 2 whose rank 0 never shows up: initialisation fails within the timeout, naming rank and address.
    port = jd.free_port()
    for k, v in dict(WORLD_SIZE="2", RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)).items():
        monkeypatch.setenv(k, v)
    expected = f"rank 1 of 2 could not join the gloo process group at 127.0.0.1:{port}"
    with pytest.raises(jd.DistributedError, match=expected):
        jd.init_distributed("cpu", timeout=timedelta(seconds=2))
    assert not jd.is_initialized()


def test_rank_shards_hold_their_rows_of_the_single_process_batch(tmp_path):
    """What makes N ranks train like one process: rank r's rows are rows r::N of the one-process batch, with the
    same samples, augmentations and masks."""
    data, collator = build_dataset_and_collator(tiny_config(tmp_path / "run"), seed=0)
    assert isinstance(collator, MultiblockMaskCollator2D)
    keys = list(EpochSampler(len(data), seed=3))[:8]
    seeded = SeededDataset(data)
    (x, labels, seeds), enc, pred = collator([seeded[k] for k in keys])
    for rank in range(2):
        shard = jd.RankShardDataset(seeded, rank, 2).__getitems__(keys)
        (xr, labels_r, seeds_r), enc_r, pred_r = jd.RankShardCollator(collator, rank, 2)(shard)
        assert_same(xr, x[rank::2], f"images of rank {rank}")
        assert_same(labels_r, labels[rank::2], f"labels of rank {rank}")
        assert_same(seeds_r, seeds[rank::2], f"seeds of rank {rank}")
        assert_same(enc_r, [m[rank::2] for m in enc], f"context masks of rank {rank}")
        assert_same(pred_r, [m[rank::2] for m in pred], f"target masks of rank {rank}")
    with pytest.raises(ValueError, match="does not split over 3 ranks"):
        jd.RankShardDataset(seeded, 0, 3).__getitems__(keys)


def _collectives(rank: int, device: torch.device) -> dict:
    t = torch.tensor([rank + 1.0])
    returned = jd.all_reduce_sum(t)
    with jd.main_process_first():
        pass
    jd.barrier()
    return dict(
        env=(os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]),
        world=(jd.get_rank(), jd.get_world_size(), jd.is_main_process(), dist.get_backend()),
        device=str(device),
        summed=t.item(),
        in_place=returned is t,
        maxed=jd.all_reduce_max(torch.tensor([float(rank)])).item(),
        gathered=jd.all_gather_cat(torch.arange(rank + 1) + 10 * rank).tolist(),  # uneven lengths
        objects=jd.all_gather_objects(f"r{rank}"),
        shard=list(jd.ShardedSampler(5)),
        threads=torch.get_num_threads(),
        big=torch.zeros(50_000),  # larger than a pipe's buffer: the parent must read while it waits
    )


def test_spawn_starts_one_process_per_device_with_a_process_group(two_ranks):
    _, results = two_ranks
    results = [r["collectives"] for r in results]
    assert [r["env"] for r in results] == [("0", "2", "0"), ("1", "2", "1")]
    assert [r["world"] for r in results] == [(0, 2, True, "gloo"), (1, 2, False, "gloo")]
    assert [r["device"] for r in results] == ["cpu", "cpu"]
    assert [r["summed"] for r in results] == [3.0, 3.0] and all(r["in_place"] for r in results)
    assert [r["maxed"] for r in results] == [1.0, 1.0]
    assert [r["gathered"] for r in results] == [[0, 10, 11]] * 2
    assert [r["objects"] for r in results] == [["r0", "r1"]] * 2
    assert [r["shard"] for r in results] == [[0, 2, 4], [1, 3]]
    assert [r["threads"] for r in results] == [1, 1]
    assert not jd.is_initialized()  # nothing leaks into the parent


def test_spawn_with_one_device_runs_in_this_process():
    [result] = jd.spawn(lambda rank, world, device, k: (rank, world, str(device), k, os.getpid()), ["cpu"], 7)
    assert result == (0, 1, "cpu", 7, os.getpid())


def _fail_on_rank_one(rank: int, world_size: int, device: torch.device) -> None:
    if rank == 1:
        raise ValueError("rank one gives up")
    jd.barrier()  # rank 0 would wait here forever if the failure were not propagated


@pytest.mark.slow
def test_spawn_reraises_a_failure_and_stops_the_other_processes():
    with pytest.raises(jd.SpawnError, match="rank 1 of 2 failed first") as info:
        jd.spawn(_fail_on_rank_one, ["cpu", "cpu"])
    assert "ValueError: rank one gives up" in str(info.value)


# Distributed pretraining. Rank batches of 8 on 2 ranks against one process with batches of 16, on 72 digits:
# 4 global batches per pass, 3 steps per epoch, 6 steps (crossing an epoch end at 3 and a pass end at 4).
RANK_BATCH, STEPS = 8, 6


def _rank_job(rank: int, world_size: int, device: torch.device, runs: list) -> dict:
    """The collectives, then the training runs ``(name, cfg, train kwargs)`` one after the other; returns what each
    gave on this rank (one spawn for all: starting a process that imports torch takes seconds)."""
    out = {"collectives": _collectives(rank, device)}
    with pytest.MonkeyPatch.context() as mp:
        use_small_data(mp)
        for name, cfg, kwargs in runs:
            trainer = Pretrainer(cfg, device)
            summary = trainer.train(**kwargs)
            out[name] = summary, {m: getattr(trainer.model, m).state_dict() for m in MODELS}
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Two gloo processes: collectives; an uninterrupted run; with drop path, a run and the same interrupted at
    step 2 and resumed."""
    root = tmp_path_factory.mktemp("ddp")
    small = f"data.batch_size={RANK_BATCH}"
    runs = [
        ("ddp", tiny_config(root / "ddp", small), {}),
        ("dp_full", tiny_config(root / "dp_full", small, "model.drop_path_rate=0.2"), {}),
        ("dp_cut", tiny_config(root / "dp_cut", small, "model.drop_path_rate=0.2"), {"max_steps": 2}),
        ("dp_resumed", tiny_config(root / "dp_cut", small, "model.drop_path_rate=0.2"), {"resume": True}),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        results = jd.spawn(_rank_job, ["cpu", "cpu"], runs)
    return root, results


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_ranks_train_like_one_process_on_the_combined_batch(two_ranks, tmp_path, monkeypatch):
    root, results = two_ranks
    use_small_data(monkeypatch)
    single = Pretrainer(tiny_config(tmp_path / "single", f"data.batch_size={2 * RANK_BATCH}"))
    summary = single.train()
    ddp_summary, ddp = results[0]["ddp"]
    assert summary["steps"] == ddp_summary["steps"] == STEPS and ddp_summary["world_size"] == 2
    # Per-sample work is identical; only the order of floating-point sums differs (a half batch per rank,
    # gradients averaged by DDP). Measured: up to ~5e-8 after 6 AdamW steps; checked at 1e-6.
    for m in MODELS:
        expected = getattr(single.model, m).state_dict()
        assert _max_diff(ddp[m], expected) < 1e-6, m
    # The logged losses are the global batch's (averaged over ranks), and so are the token counts.
    rows_1 = _read_csv(tmp_path / "single" / "jepa_r0.csv")
    rows_2 = _read_csv(root / "ddp" / "jepa_r0.csv")
    assert [r["step"] for r in rows_2] == [str(s) for s in range(1, STEPS + 1)]
    for r1, r2 in zip(rows_1, rows_2, strict=True):
        assert float(r2["loss"]) == pytest.approx(float(r1["loss"]), rel=1e-5)
        assert (r2["ctx_tokens"], r2["tgt_tokens"]) == (r1["ctx_tokens"], r1["tgt_tokens"])
        assert float(r2["feat_std"]) == pytest.approx(float(r1["feat_std"]), rel=1e-4)


def test_ranks_end_with_identical_weights(two_ranks):
    _, results = two_ranks
    for run in ("ddp", "dp_full", "dp_resumed"):
        for m in MODELS:
            assert_same(results[0][run][1][m], results[1][run][1][m], f"{run} {m} rank 0 vs rank 1")


def test_only_rank_zero_writes_files(two_ranks):
    root, _ = two_ranks
    assert sorted(p.name for p in (root / "ddp").iterdir()) == [
        "jepa-ep1.pth.tar", "jepa-ep2.pth.tar", "jepa-latest.pth.tar", "jepa_r0.csv", "params-jepa.yaml",
    ]  # fmt: skip
    latest = torch.load(root / "ddp" / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert (latest["world_size"], latest["batch_size"], latest["step"]) == (2, RANK_BATCH, STEPS)
    assert len(latest["rng_per_rank"]) == 2
    assert not torch.equal(latest["rng_per_rank"][0]["torch"], latest["rng_per_rank"][1]["torch"])


def test_distributed_run_resumes_exactly_with_per_rank_randomness(two_ranks):
    # Drop path draws from each rank's own generator; the checkpoint keeps every rank's generator state.
    _, results = two_ranks
    for rank in range(2):
        assert results[rank]["dp_cut"][0]["steps"] == 2 and results[rank]["dp_resumed"][0]["steps"] == STEPS
        for m in MODELS:
            assert_same(results[rank]["dp_full"][1][m], results[rank]["dp_resumed"][1][m], f"rank {rank} {m}")


def _read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_cli_trains_on_two_cpu_processes(tmp_path):
    path = write_tiny_config(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "app.main", "--fname", str(path), "--max-steps", "2", "--devices", "cpu", "cpu",
           "--set", "data.batch_size=4"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("done: 2 steps") and "on 2 process(es)" in last, last
    latest = torch.load(tmp_path / "run" / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert (latest["world_size"], latest["step"]) == (2, 2)


def test_cli_refuses_several_devices_under_a_launcher(tmp_path, monkeypatch):
    import app.main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="pass at most one device"):
        app.main.main(["--fname", str(write_tiny_config(tmp_path / "run")), "--devices", "cpu", "cpu"])
    assert not jd.is_initialized()


@pytest.mark.slow
def test_torchrun_launches_two_ranks(tmp_path):
    path = write_tiny_config(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(jd.free_port()), "-m", "app.main", "--fname", str(path), "--max-steps", "2", "--devices", "cpu",
           "--set", "data.batch_size=4"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.count("done: 2 steps") == 1  # rank 0 only
    latest = torch.load(tmp_path / "run" / "jepa-latest.pth.tar", map_location="cpu", weights_only=True)
    assert (latest["world_size"], latest["step"]) == (2, 2)



def _eval_config(path: Path, out: Path, batch_size: int) -> Path:
    cfg = {
        "eval_name": "image_classification_frozen", "folder": str(out), "tag": "digits",
        "data": {"dataset_name": "digits", "num_classes": 10, "resolution": 32, "num_workers": 0, "pin_mem": False},
        "data_aug": {"auto_augment": False, "reprob": 0.0},
        "optimization": {"num_epochs": 1, "batch_size": batch_size},
        "pretrain": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8,
                     "folder": str(path.parent), "checkpoint": None},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_a_two_process_eval_gives_the_metrics_of_one_process(tmp_path):
    """The probe trains on the same global batches (per-rank batch halved, gradients averaged) and every
    validation sample is counted once over the ranks, so the metrics match one process's."""
    from evals.main import main as eval_main

    one = _eval_config(tmp_path / "one.yaml", tmp_path / "one", batch_size=64)
    two = _eval_config(tmp_path / "two.yaml", tmp_path / "two", batch_size=32)
    assert eval_main(["--fname", str(one), "--devices", "cpu"]) == 0
    assert eval_main(["--fname", str(two), "--devices", "cpu", "cpu"]) == 0
    a = json.loads((tmp_path / "one" / "digits" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "digits" / "results.json").read_text())
    assert a["val_samples"] == b["val_samples"] == 359 and b["world_size"] == 2
    for pa, pb in zip(a["probes"], b["probes"], strict=True):
        assert (pa["val_top1"], pa["val_top5"]) == (pb["val_top1"], pb["val_top5"])
        assert pb["val_loss"] == pytest.approx(pa["val_loss"], rel=1e-5)  # sums in another order


def _video_ranks(rank: int, world_size: int, device: torch.device, cfg, videos: int) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", videos)
        trainer = Pretrainer(cfg, device)
        trainer.train(max_steps=3)
    return {m: getattr(trainer.model, m).state_dict() for m in MODELS}


@pytest.mark.slow
def test_two_ranks_train_video_like_one_process(tmp_path, monkeypatch):
    """V-JEPA: several mask configs (one mask token each) and 3D masks, shared across ranks like I-JEPA's."""
    data = tmp_path / "clips"
    cfg = tiny_video_config(tmp_path / "two", data, "data.batch_size=2")
    results = jd.spawn(_video_ranks, ["cpu", "cpu"], cfg, 16)
    monkeypatch.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", 16)
    single = Pretrainer(tiny_video_config(tmp_path / "one", data, "data.batch_size=4"))
    single.train(max_steps=3)
    for m in MODELS:
        assert_same(results[0][m], results[1][m], f"{m} rank 0 vs rank 1")
        assert _max_diff(results[0][m], getattr(single.model, m).state_dict()) < 1e-6, m
