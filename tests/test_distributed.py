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
from test_vjepa2_pretrain import load_raw, tiny_raw

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


class _Clips:
    """Clips of 4 or 8 frames (``clip_lengths``, as VideoDataset has it), random under the sample's seed; the
    indices in ``other_length`` come back one length off (an unreadable video replaced by one of another length)."""

    def __init__(self, lengths: list[int], other_length: frozenset[int] = frozenset()) -> None:
        self.clip_lengths = lengths
        self.other_length = other_length

    def __len__(self) -> int:
        return len(self.clip_lengths)

    def __getitem__(self, index: int) -> tuple:
        frames = self.clip_lengths[index]
        if index in self.other_length:
            frames = 12 - frames
        return torch.rand(3, frames, 32, 32), index, index


def _multi_length_collator():
    from jepa.config.pretrain import VideoMaskConfig
    from jepa.video.masks import MultiLengthMaskCollator

    specs = [VideoMaskConfig(num_blocks=2, spatial_scale=(0.3, 0.3)), VideoMaskConfig(num_blocks=1)]
    return MultiLengthMaskCollator(specs, [4, 8], crop_size=32, patch_size=8, tubelet_size=2, seed=7)


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_of_clips_of_several_lengths_hold_their_rows_of_each_length(world_size):
    """Each rank gets rows rank::world_size of the single-process batch in grouped order (short clips, then long),
    with the masks one process draws for each whole group; every rank loads the same number of clips."""
    lengths = [4, 8, 8, 4, 8, 8, 8, 4, 8, 8, 4, 8]
    seeded = SeededDataset(_Clips(lengths))
    collator = _multi_length_collator()
    # One short clip among six: ranks after the first have none; then a batch of long clips only.
    for keys in ([(1, 11), (0, 10), (2, 12), (4, 14), (5, 15), (6, 16)], [(i, 20 + i) for i in (1, 2, 4, 5, 6, 8)]):
        single = collator([seeded[k] for k in keys])
        grouped = [(g.length_index, row) for g in single for row in range(len(g.batch[2]))]  # grouped order
        for rank in range(world_size):
            data = jd.RankShardDataset(seeded, rank, world_size, clip_lengths=lengths,
                                       group_positions=collator.group_positions)  # fmt: skip
            groups = jd.RankShardCollator(collator, rank, world_size)(data.__getitems__(keys))
            mine = grouped[rank::world_size]
            assert sum(len(g.batch[2]) for g in groups) == len(keys) // world_size
            assert [g.length_index for g in groups] == sorted({index for index, _ in mine})
            for group in groups:
                whole = next(g for g in single if g.length_index == group.length_index)
                picks = [row for index, row in mine if index == group.length_index]
                assert_same(group.batch[0], whole.batch[0][picks], f"clips of rank {rank}")
                assert_same(group.batch[2], whole.batch[2][picks], f"seeds of rank {rank}")
                assert_same(group.masks_enc, [m[picks] for m in whole.masks_enc], f"context masks of rank {rank}")
                assert_same(group.masks_pred, [m[picks] for m in whole.masks_pred], f"target masks of rank {rank}")
    with pytest.raises(ValueError, match="give both or neither"):
        jd.RankShardDataset(seeded, 0, 2, clip_lengths=lengths)
    with pytest.raises(TypeError, match="takes a ShardOfBatch per length"):
        jd.RankShardCollator(collator, 0, 2)(jd.RankShardDataset(seeded, 0, 2).__getitems__(keys))


def test_a_clip_of_another_length_than_planned_is_replaced_by_one_of_the_planned_length(caplog):
    """The other ranks drew the masks of each length for the clips planned from the indices' lengths: a clip that
    comes back with another length (its video replaced by one of another length) is replaced by a clip of the
    planned length, loaded under the same seed, so the masks do not change."""
    lengths = [4, 8, 8, 4, 8, 8]
    collator = _multi_length_collator()
    keys = [(0, 10), (1, 11), (2, 12), (3, 13)]
    broken = SeededDataset(_Clips(lengths, other_length=frozenset({2})))
    data = jd.RankShardDataset(broken, 1, 2, clip_lengths=lengths, group_positions=collator.group_positions)
    with caplog.at_level("WARNING", logger="jepa.runtime.distributed"):
        shards = data.__getitems__(keys)  # grouped order 0, 3 | 1, 2: rank 1 holds samples 3 and 2
    assert "sample 2 came back as a clip of 4 frames, not 8" in caplog.text
    [short, long] = jd.RankShardCollator(collator, 1, 2)(shards)
    assert tuple(long.batch[0].shape) == (1, 3, 8, 32, 32) and long.batch[1].item() in (1, 4, 5)  # another long one
    assert long.batch[2].tolist() == [12]  # its own seed: the masks drawn for it hold
    intact = SeededDataset(_Clips(lengths))
    expected = jd.RankShardCollator(collator, 1, 2)(
        jd.RankShardDataset(intact, 1, 2, clip_lengths=lengths, group_positions=collator.group_positions)
        .__getitems__(keys)
    )  # fmt: skip
    assert_same(long.masks_enc + long.masks_pred, expected[1].masks_enc + expected[1].masks_pred, "masks")
    assert_same(short.batch[0], expected[0].batch[0], "the short clip")
    # Every long clip comes back short: the rank gives up, naming the sample, rather than train on wrong masks.
    hopeless = SeededDataset(_Clips(lengths, other_length=frozenset({1, 2, 4, 5})))
    data = jd.RankShardDataset(hopeless, 1, 2, clip_lengths=lengths, group_positions=collator.group_positions)
    with pytest.raises(RuntimeError, match="sample 2: 10 clips drawn in its place had another length than 8"):
        data.__getitems__(keys)


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
    gave on this rank (one spawn for all: starting a process that imports torch takes seconds), and under
    ``lengths`` the clip lengths of the rank's groups at every step of each video run."""
    out: dict = {"collectives": _collectives(rank, device), "lengths": {}}
    for name, cfg, kwargs in runs:
        with pytest.MonkeyPatch.context() as mp:
            if cfg.is_video:
                mp.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", TWO_LENGTH_VIDEOS)
            else:
                use_small_data(mp)
            trainer = Pretrainer(cfg, device)
            lengths = out["lengths"][name] = []
            step = trainer.train_step

            def recorded(groups, step=step, lengths=lengths):
                lengths.append([g.x.shape[2] for g in groups if g.x.dim() == 5])
                return step(groups)

            mp.setattr(trainer, "train_step", recorded)
            summary = trainer.train(**kwargs)
            out[name] = summary, {m: getattr(trainer.model, m).state_dict() for m in MODELS}
    return out


# V-JEPA 2 clips of 4 and 8 frames: the 12 moving-digit clips read at both lengths (24 samples), rank batches of 2
# on 2 ranks against one process with batches of 4: 6 global batches per pass, 7 steps (epoch ends at 3 and 6).
TWO_LENGTH_VIDEOS, TWO_LENGTH_STEPS = 12, 7


def two_length_config(root: Path, name: str, *overrides: str):
    raw = tiny_raw(root_path=str(root / "clips"))
    raw["logging"]["folder"] = str(root / name)
    return load_raw(root, raw, *overrides)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Two gloo processes: collectives; an uninterrupted run; with drop path, a run and the same interrupted at
    step 2 and resumed; the same three with clips of two lengths."""
    root = tmp_path_factory.mktemp("ddp")
    small = f"data.batch_size={RANK_BATCH}"
    two, drop = "data.batch_size=2", "model.drop_path_rate=0.1"
    runs = [
        ("ddp", tiny_config(root / "ddp", small), {}),
        ("dp_full", tiny_config(root / "dp_full", small, "model.drop_path_rate=0.2"), {}),
        ("dp_cut", tiny_config(root / "dp_cut", small, "model.drop_path_rate=0.2"), {"max_steps": 2}),
        ("dp_resumed", tiny_config(root / "dp_cut", small, "model.drop_path_rate=0.2"), {"resume": True}),
        ("len", two_length_config(root, "len", two), {"max_steps": TWO_LENGTH_STEPS}),
        ("len_dp_full", two_length_config(root, "len_dp_full", two, drop), {"max_steps": TWO_LENGTH_STEPS}),
        ("len_dp_cut", two_length_config(root, "len_dp_cut", two, drop), {"max_steps": 2}),
        ("len_dp_resumed", two_length_config(root, "len_dp_cut", two, drop), {"max_steps": TWO_LENGTH_STEPS,
                                                                                "resume": True}),
    ]  # fmt: skip
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
    for run in ("ddp", "dp_full", "dp_resumed", "len", "len_dp_full", "len_dp_resumed"):
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


def test_two_ranks_train_two_clip_lengths_like_one_process(two_ranks, monkeypatch):
    """V-JEPA 2's clips of two lengths: each rank takes its rows of each length group of the global batch, and its
    losses weigh each length by its share of the group (jepa.training.ddp.GlobalGroupMean), so two ranks train like
    one process on the combined batch, also at steps where one rank holds no clip of a length."""
    root, results = two_ranks
    monkeypatch.setattr(app.pretrain, "MOVING_DIGITS_VIDEOS", TWO_LENGTH_VIDEOS)
    single = Pretrainer(two_length_config(root, "len_single"))
    assert single.cfg.data.batch_size == 4 and len(single.dataset) == 24
    summary = single.train(max_steps=TWO_LENGTH_STEPS)
    two_summary, two = results[0]["len"]
    assert summary["steps"] == two_summary["steps"] == TWO_LENGTH_STEPS and two_summary["world_size"] == 2
    # Per-clip work is the same; sums run in another order. Measured: the first step's gradients agree to 1.3e-7 of
    # each tensor's largest, but a few entries' gradients (~3e-9) lie below AdamW's eps (1e-8), where the first
    # update g / (|g| + eps) turns that rounding into a ~1% difference: weights differ by up to 1.5e-6 after 7
    # steps (2e-7 for one length on two ranks; 1.2e-3 when the ranks' losses are not weighted by their shares).
    for m in MODELS:
        assert_same(two[m], results[1]["len"][1][m], f"{m} rank 0 vs rank 1")
        assert _max_diff(two[m], getattr(single.model, m).state_dict()) < 1e-5, m
    lengths = [results[rank]["lengths"]["len"] for rank in (0, 1)]
    assert all(len(steps) == TWO_LENGTH_STEPS for steps in lengths)
    # Some step had both lengths in the global batch but one rank holding clips of one length only.
    assert any(len(set(a) | set(b)) == 2 and min(len(a), len(b)) == 1 for a, b in zip(*lengths, strict=True))
    # The logged losses are the global batch's.
    rows_1 = _read_csv(root / "len_single" / "jepa_r0.csv")
    rows_2 = _read_csv(root / "len" / "jepa_r0.csv")
    assert len(rows_1) == len(rows_2) == TWO_LENGTH_STEPS
    for r1, r2 in zip(rows_1, rows_2, strict=True):
        assert float(r2["loss"]) == pytest.approx(float(r1["loss"]), rel=1e-5)


def test_a_two_length_run_on_two_ranks_resumes_exactly(two_ranks):
    _, results = two_ranks
    for rank in range(2):
        assert results[rank]["len_dp_cut"][0]["steps"] == 2
        assert results[rank]["len_dp_resumed"][0]["steps"] == TWO_LENGTH_STEPS
        for m in MODELS:
            full, resumed = results[rank]["len_dp_full"][1][m], results[rank]["len_dp_resumed"][1][m]
            assert_same(full, resumed, f"rank {rank} {m}")
            assert_same(full, results[1 - rank]["len_dp_full"][1][m], f"{m} rank {rank} vs the other")


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
