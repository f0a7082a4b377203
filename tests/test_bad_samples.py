"""Fault injection for unreadable samples: evals score exactly the readable ones, training replaces a bad sample by
a seeded random one, the stop threshold counts distinct files, bad files are logged across DataLoader workers,
short clips are padded with a warning, and eval outputs record (and protect) the encoder they come from."""

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import app.pretrain
from evals.probing import ProbeTrainer
from jepa.config import ConfigError
from jepa.config.evals import EvalConfig
from jepa.config.pretrain import load_pretrain_config
from jepa.data import (
    DropSkipped,
    PartialBatch,
    RobustDataset,
    SampleLoadError,
    SkippedSample,
    read_bad_sample_log,
)
from jepa.data.sampling import EpochSampler, SeededDataset
from jepa.video.datasets import VideoDataset
from jepa.video.moving_digits import make_moving_digits
from tests.test_evals import TokenBatches, probe_config, video_eval_config, write_yaml

pytest.importorskip("av")
pytestmark = pytest.mark.usefixtures("one_thread")


class Numbers(RobustDataset):
    """Sample ``i`` is ``(i, i % 2)`` read from ``/data/<i>.jpg``; indices in ``bad`` raise ``FileNotFoundError``."""

    def __init__(self, n: int, bad: set[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.n, self.bad = n, set(bad)

    def __len__(self) -> int:
        return self.n

    def sample_path(self, index: int) -> str:
        return f"/data/{index}.jpg"

    def load(self, index: int) -> tuple:
        if index in self.bad:
            raise FileNotFoundError(f"no such file: /data/{index}.jpg")
        return index, index % 2


CLUSTER = set(range(20, 32))  # 12 consecutive missing files out of 52 (23%)


def loaded_values(dataset: RobustDataset, epochs: int, num_workers: int = 0, seed: int = 0) -> list[list[int]]:
    """Per epoch, the sample each position of a seeded, shuffled pass actually delivered (pretraining's way)."""
    sampler = EpochSampler(len(dataset), seed)
    loader = DataLoader(SeededDataset(dataset), batch_size=8, sampler=sampler, num_workers=num_workers)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append([int(v) for batch in loader for v in batch[0]])
    return out


# Training: random, seeded replacements and a threshold over distinct files


def test_a_bad_sample_is_replaced_by_a_random_good_one_not_its_neighbour():
    ds = Numbers(52, CLUSTER, on_error="random")
    epochs = loaded_values(ds, epochs=3)
    asked = [[index for index, _ in _epoch_keys(52, e)] for e in range(3)]
    stand_ins = [v for got, want in zip(epochs, asked) for v, i in zip(got, want) if i in CLUSTER]
    assert len(stand_ins) == 3 * 12 and not CLUSTER & set(stand_ins)  # every stand-in is a good sample
    assert stand_ins.count(32) <= 3  # not the first good neighbour (the old policy's choice every time)
    assert len(set(stand_ins)) >= 20  # spread over the data set
    # A bad index gets another stand-in in another epoch (the sample seed carries the epoch) ...
    per_epoch = [{i: v for v, i in zip(got, want) if i in CLUSTER} for got, want in zip(epochs, asked)]
    assert sum(per_epoch[0][i] != per_epoch[1][i] for i in CLUSTER) >= 8
    # ... and the same one for the same key: rerun, fresh data set, other worker counts, another process order.
    assert loaded_values(Numbers(52, CLUSTER, on_error="random"), epochs=3) == epochs
    assert loaded_values(Numbers(52, CLUSTER, on_error="random"), epochs=3, num_workers=2) == epochs
    key = _epoch_keys(52, 1)[asked[1].index(25)]
    assert SeededDataset(Numbers(52, CLUSTER, on_error="random"))[key][0] == per_epoch[1][25]
    # The good samples are untouched.
    assert all(v == i for got, want in zip(epochs, asked) for v, i in zip(got, want) if i not in CLUSTER)


def _epoch_keys(n: int, epoch: int, seed: int = 0) -> list[tuple[int, int]]:
    sampler = EpochSampler(n, seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_the_dataset_seed_changes_the_stand_ins():
    a = SeededDataset(Numbers(52, CLUSTER, on_error="random", seed=0, max_bad_fraction=1.0))
    b = SeededDataset(Numbers(52, CLUSTER, on_error="random", seed=1, max_bad_fraction=1.0))
    keys = [(i, 1000 + i) for i in sorted(CLUSTER)]
    assert [a[k][0] for k in keys] != [b[k][0] for k in keys]


def test_twelve_consecutive_bad_files_of_52_do_not_stop_training():
    # The neighbour policy used to count 12 retries for index 20 alone; distinct files: 12 of 52.
    for policy in ("next", "random"):
        ds = Numbers(52, CLUSTER, on_error=policy, max_retries=12)  # "next" needs 12 retries to leave the cluster
        for _ in range(3):
            for i in range(52):
                assert ds[i][0] not in CLUSTER
        assert (ds.skip_counter.skipped, ds.skip_counter.total_seen) == (12, 52)
    loaded_values(Numbers(52, CLUSTER, on_error="random"), epochs=5)


def test_too_many_distinct_bad_files_stop_with_counts_and_reasons():
    ds = Numbers(52, CLUSTER, on_error="random", max_bad_fraction=0.1)
    with pytest.raises(RuntimeError, match=r"(\d+) of (\d+) samples failed to load") as info:
        loaded_values(ds, epochs=1)
    message = str(info.value)
    assert "distinct files tried" in message and "more than 10%" in message
    assert "First failures: /data/" in message and "FileNotFoundError: no such file" in message
    # A small data set is judged from its length, not only after 20 files.
    small = Numbers(6, {1, 2, 3, 4}, on_error="next")
    small[0], small[1]  # 4 of the 6 files tried fail, none twice counted
    with pytest.raises(RuntimeError, match="4 of 6 samples failed"):
        small[2]


def test_a_sample_whose_stand_ins_all_fail_names_them():
    with pytest.raises(SampleLoadError, match="nor the 2 samples drawn in its place") as info:
        Numbers(3, {0, 1, 2}, on_error="random", max_retries=2)[0]
    assert "/data/0.jpg" in str(info.value)


def test_pretraining_on_a_csv_with_12_consecutive_missing_videos_of_52_runs_its_epoch(tmp_path):
    root = tmp_path / "clips"
    csv = make_moving_digits(root, num_videos=40, num_frames=8, size=32, split="train", source="digits")
    good = csv.read_text().splitlines()
    missing = [f"{root}/missing_{k}.mp4 0" for k in range(12)]
    listing = tmp_path / "train.csv"
    listing.write_text("\n".join(good[:20] + missing + good[20:]) + "\n")
    raw = {
        "app": "vjepa",
        "data": {"dataset_type": "VideoDataset", "datasets": [str(listing)], "batch_size": 4, "num_frames": 4,
                 "sampling_rate": 1, "tubelet_size": 2, "crop_size": 32, "patch_size": 8, "num_workers": 0,
                 "pin_mem": False},
        "mask": [{"aspect_ratio": [0.75, 1.5], "num_blocks": 1, "spatial_scale": [0.5, 0.5],
                  "temporal_scale": [1.0, 1.0]}],
        "meta": {"seed": 0, "log_freq": 5, "dtype": "float32"},
        "model": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "pred_depth": 1,
                  "pred_embed_dim": 24},
        "optimization": {"epochs": 1, "warmup": 0, "lr": 1e-3, "start_lr": 1e-3},
        "logging": {"folder": str(tmp_path / "run"), "write_tag": "jepa"},
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    trainer = app.pretrain.Pretrainer(load_pretrain_config(path))
    assert trainer.loader.dataset.dataset.on_error == "random"
    trainer.train()
    assert trainer.step == 13  # the whole epoch of 52 / 4 batches
    counter = trainer.loader.dataset.dataset.skip_counter
    assert 0 < counter.skipped <= 12 and counter.skipped <= counter.total_seen * 0.5


# Bad-sample log: one line per distinct file and process, read back across DataLoader workers


def test_bad_sample_log_collects_distinct_files_from_every_worker(tmp_path):
    log = tmp_path / "jepa_bad_samples.tsv"
    assert read_bad_sample_log(log) == {}
    bad = {3, 4, 17, 30, 41, 42, 50}
    ds = Numbers(52, bad, on_error="random")
    ds.bad_sample_log = log  # set after construction, before the workers start
    loaded_values(ds, epochs=2, num_workers=2)
    lines = log.read_text().splitlines()
    assert all(line.count("\t") == 1 for line in lines)  # no interleaved writes
    # once per file and worker process (2 workers, started anew each epoch), not once per attempt
    assert len(bad) <= len(lines) <= 2 * 2 * len(bad)
    found = read_bad_sample_log(log)
    assert set(found) == {f"/data/{i}.jpg" for i in bad}
    assert found["/data/17.jpg"] == "FileNotFoundError: no such file: /data/17.jpg"
    assert ds.skip_counter.skipped == 0  # the main process loaded nothing: its counter cannot see the workers'


def test_skip_policy_returns_markers_that_drop_skipped_removes_from_the_batch():
    ds = Numbers(6, {1, 4}, on_error="skip")
    marker = ds[1]
    assert marker == SkippedSample(1, "/data/1.jpg", "FileNotFoundError: no such file: /data/1.jpg")
    batch = DropSkipped()([ds[i] for i in range(6)])
    assert isinstance(batch, PartialBatch) and batch.batch[0].tolist() == [0, 2, 3, 5]
    assert [s.index for s in batch.skipped] == [1, 4]
    assert DropSkipped()([marker]).batch is None
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=DropSkipped())
    seen = [(b.batch[0].tolist(), [s.path for s in b.skipped]) for b in loader]
    assert seen == [([0, 2, 3], ["/data/1.jpg"]), ([5], ["/data/4.jpg"])]


# Short clips


def test_a_short_clip_is_padded_with_one_warning_naming_it(tmp_path, caplog):
    root = tmp_path / "clips"
    csv = make_moving_digits(root, num_videos=2, num_frames=8, size=32, split="val", source="digits")
    ds = VideoDataset([csv], frames_per_clip=4, frame_step=4, random_clip_sampling=False, decoder="pyav")
    short = str(ds.paths[0])
    with caplog.at_level(logging.WARNING, logger="jepa.video.datasets"):
        clip = ds[0][0]
        ds[0]
    assert clip.shape[0] == 4 and torch.equal(clip[2], clip[3])  # frames 0, 4, 7, 7
    warnings = [r.getMessage() for r in caplog.records if r.name == "jepa.video.datasets"]
    assert len(warnings) == 1 and short in warnings[0]
    assert "holds 8 frames" in warnings[0] and "needs 13" in warnings[0]
    assert ds.padded_files == {short: 8}
    long_enough = VideoDataset([csv], frames_per_clip=4, frame_step=2, random_clip_sampling=False, decoder="pyav")
    long_enough[0]
    assert long_enough.padded_files == {}


# Evals: only readable validation samples are scored


@pytest.fixture(scope="module")
def mixed_csvs(tmp_path_factory) -> dict:
    """A train CSV with one missing video, and a val CSV of 6 readable videos and 4 unreadable ones (missing,
    0-byte, truncated, not a video)."""
    root = tmp_path_factory.mktemp("mixed")
    make_moving_digits(root, num_videos=8, num_frames=16, size=32, split="train", source="digits")
    make_moving_digits(root, num_videos=6, num_frames=16, size=32, split="val", source="digits")
    good = (root / "val_motion.csv").read_text().splitlines()
    bad = {kind: root / f"{kind}.mp4" for kind in ("missing", "empty", "truncated", "text")}
    bad["empty"].write_bytes(b"")
    first = Path(good[0].rsplit(maxsplit=1)[0])
    bad["truncated"].write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    bad["text"].write_text("this is not a video\n")
    val = root / "mixed_val.csv"
    rows = good[:2] + [f"{bad['missing']} 0", f"{bad['empty']} 1"] + good[2:5] + [f"{bad['truncated']} 2"]
    val.write_text("\n".join([*rows, good[5], f"{bad['text']} 3"]) + "\n")
    train = root / "mixed_train.csv"
    train.write_text((root / "train_motion.csv").read_text() + f"{root / 'gone.mp4'} 1\n")
    return {"root": root, "train": train, "val": val, "bad": {str(p) for p in bad.values()}}


def mixed_eval_config(tmp_path: Path, csvs: dict, **over) -> Path:
    cfg = video_eval_config(tmp_path, csvs["root"], **over)
    cfg["data"].update(dataset_train=str(csvs["train"]), dataset_val=str(csvs["val"]))
    return write_yaml(tmp_path, cfg)


def test_eval_scores_exactly_the_readable_val_samples_and_lists_the_others(tmp_path, mixed_csvs, caplog):
    from evals.main import main

    path = mixed_eval_config(tmp_path, mixed_csvs, **{"data.num_workers": 2})
    with caplog.at_level(logging.INFO, logger="evals.probing"):
        assert main(["--fname", str(path), "--devices", "cpu"]) == 0
    summary = json.loads((tmp_path / "out" / "video" / "results.json").read_text())
    assert summary["val_samples"] == 6 and summary["val_unreadable"] == 4
    skipped = {s["path"]: s["reason"] for s in summary["skipped_files"]}
    assert set(skipped) == mixed_csvs["bad"] and all(skipped.values())
    assert "6 of 10 val samples, 4 unreadable (listed in results.json)" in caplog.text
    ckpt = torch.load(tmp_path / "out" / "video" / "jepa-latest.pth.tar", weights_only=True)
    assert {s["path"] for s in ckpt["skipped_files"]} == mixed_csvs["bad"]
    assert ckpt["encoder_checkpoint"] == "random-init"


def test_an_eval_whose_val_samples_all_fail_is_an_error(tmp_path, mixed_csvs):
    from evals.main import main

    only_bad = tmp_path / "bad_val.csv"
    only_bad.write_text("".join(f"{p} 0\n" for p in sorted(mixed_csvs["bad"])))
    path = mixed_eval_config(tmp_path, {**mixed_csvs, "val": only_bad})
    with pytest.raises(SampleLoadError, match="no validation sample could be scored: 4 of 4 are unreadable"):
        main(["--fname", str(path), "--devices", "cpu"])


def test_image_eval_scores_exactly_the_readable_val_images(tmp_path):
    from PIL import Image

    from evals.main import main

    root = tmp_path / "images"
    for split, per_class in (("train", 4), ("val", 3)):
        for c, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 36), tuple(v + 10 * i for v in colour)).save(folder / f"{i}.png")
    good = root / "val" / "class0" / "0.png"
    bad = {
        root / "val" / "class0" / "empty.jpg": b"",
        root / "val" / "class1" / "truncated.png": good.read_bytes()[: good.stat().st_size // 3],
        root / "val" / "class1" / "text.jpg": b"not an image",
    }
    for path, data in bad.items():
        path.write_bytes(data)
    (root / "train" / "class1" / "broken.jpg").write_bytes(b"")  # replaced by a random image in training
    cfg = {
        "eval_name": "image_classification_frozen", "folder": str(tmp_path / "out"), "tag": "img",
        "data": {"dataset_name": "ImageFolder", "root_path": str(root), "num_classes": 2, "resolution": 32,
                 "num_workers": 0, "pin_mem": False},
        "data_aug": {"auto_augment": False, "reprob": 0.0},
        "optimization": {"num_epochs": 1, "batch_size": 4},
        "pretrain": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8,
                     "checkpoint": None},
    }  # fmt: skip
    assert main(["--fname", str(write_yaml(tmp_path, cfg))]) == 0
    summary = json.loads((tmp_path / "out" / "img" / "results.json").read_text())
    assert summary["val_samples"] == 6 and summary["val_unreadable"] == 3
    assert {s["path"] for s in summary["skipped_files"]} == {str(p) for p in bad}


@pytest.mark.slow
def test_two_ranks_sum_the_scored_samples_and_gather_the_unreadable_ones(tmp_path, mixed_csvs):
    from evals.main import main

    path = mixed_eval_config(tmp_path, mixed_csvs, **{"optimization.batch_size": 2})
    assert main(["--fname", str(path), "--devices", "cpu", "cpu"]) == 0
    summary = json.loads((tmp_path / "out" / "video" / "results.json").read_text())
    assert summary["world_size"] == 2 and summary["val_samples"] == 6
    assert {s["path"] for s in summary["skipped_files"]} == mixed_csvs["bad"]


# Eval outputs: weights-only probe checkpoints that name their encoder


def trainer_for(cfg: EvalConfig, encoder_source: str | None) -> ProbeTrainer:
    torch.manual_seed(0)
    return ProbeTrainer(
        cfg, lambda batch: batch, TokenBatches(2, 0), TokenBatches(1, 1), embed_dim=48, num_heads=3,
        num_classes=10, device=torch.device("cpu"), encoder_source=encoder_source,
    )  # fmt: skip


def test_probe_checkpoint_loads_with_weights_only(tmp_path):
    trainer = trainer_for(probe_config(tmp_path, epochs=1), "/ckpts/e.pt")
    trainer.run()
    ckpt = torch.load(trainer.latest_path, weights_only=True)
    assert ckpt["encoder_checkpoint"] == "/ckpts/e.pt" and ckpt["epoch"] == 1 and isinstance(ckpt["config"], dict)
    again = trainer_for(probe_config(tmp_path, epochs=1), "/ckpts/e.pt")
    again.load(trainer.latest_path)
    assert again.epoch == 1


def test_evals_of_different_encoders_into_one_folder_are_refused(tmp_path):
    cfg = probe_config(tmp_path, epochs=1)
    trainer_for(cfg, None).run()
    assert json.loads((cfg.output_folder / "results.json").read_text())["random_init_encoder"] is True
    trainer_for(cfg, None).run()  # the same encoder again: allowed
    for resume in (False, True):
        with pytest.raises(ConfigError, match=r"random-init.*/ckpts/e\.pt.*own tag") as info:
            trainer_for(cfg, "/ckpts/e.pt").run(resume=resume)
        assert ("resume" if resume else "overwrite") in str(info.value)
    # results.json alone (the probe checkpoint gone) is protected too
    cfg.output_folder.joinpath("jepa-latest.pth.tar").unlink()
    with pytest.raises(ConfigError, match="results.json was produced with encoder random-init"):
        trainer_for(cfg, "/ckpts/e.pt").run()
    # another tag keeps the two apart
    other = probe_config(tmp_path, epochs=1)
    other.tag = "pretrained"
    assert other.output_folder != cfg.output_folder
    assert trainer_for(other, "/ckpts/e.pt").run()["encoder_checkpoint"] == "/ckpts/e.pt"
