"""The benchmark scripts' contract: tiny invocations print, as their last stdout line, one JSON object with the
fields other scripts read, with sane values (no timed assertions: the figures depend on the machine)."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import train_step, video_loader
from jepa.video.moving_digits import make_moving_digits

STEP_KEYS = (
    "ms_per_step", "samples_per_s", "gflop_per_step", "achieved_gflops", "peak_mem_mb", "params_m", "dtype", "device",
    "cpu_capability", "threads", "torch", "modality", "batch", "crop",
)  # fmt: skip
# A custom model of the suite's tiny size (conftest.py): width 48, depth 2, 3 heads; predictor 2 x 24.
TINY = ["--embed-dim", "48", "--depth", "2", "--heads", "3", "--pred-depth", "2", "--pred-dim", "24", "--threads", "1"]
TINY_CASES = {
    # 32 px in patches of 4: the 8 x 8 grid of the tiny I-JEPA config (I-JEPA's masks need room).
    "image": ["--modality", "image", "--crop", "32", "--patch", "4", "--batch", "2"],
    "video": ["--modality", "video", "--crop", "32", "--patch", "8", "--frames", "4", "--tubelet", "2", "--batch", "2"],
}


def last_json(capsys) -> dict:
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


def positive(row: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(row[key], int | float) and math.isfinite(row[key]) and row[key] > 0, (key, row[key])


def vit_flops(tokens: int, width: int, depth: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of ``depth`` transformer blocks over one sequence of ``tokens``: the qkv, output and MLP
    products (2 * (4 + 2 * mlp_ratio) * width**2 per token) and the two attention products (4 * tokens * width)."""
    return depth * tokens * (2 * (4 + 2 * mlp_ratio) * width**2 + 4 * tokens * width)


def hand_count(row: dict) -> float:
    """FLOPs of a step by hand: target encoder forward over every token; per mask set, context encoder and, per
    target, the predictor over context + target tokens, forward and backward (3x forward); patch embedding once per
    encoder pass (in backward, only its weights' gradient)."""
    b, n, d = row["batch"], row["tokens"], row["embed_dim"]
    patch = 2 * n * 3 * row["patch"] ** 2 * row["tubelet"] * d
    total = b * (vit_flops(n, d, row["depth"]) + patch)
    counted = row["flop_step_tokens"]  # the masks of the counted step (the timed steps have others)
    for ctx, targets in zip(counted["context_tokens"], counted["target_tokens"], strict=True):
        predictor = sum(vit_flops(ctx + t, row["pred_dim"], row["pred_depth"]) for t in targets)
        total += b * (3 * (vit_flops(ctx, d, row["depth"]) + predictor) + 2 * patch)
    return total


@pytest.mark.parametrize("modality", ["image", "video"])
def test_train_step_json(modality, capsys):
    assert train_step.main([*TINY_CASES[modality], *TINY, "--steps", "2", "--warmup", "1"]) == 0
    row = last_json(capsys)
    for key in STEP_KEYS:
        assert key in row, key
    positive(row, "ms_per_step", "samples_per_s", "gflop_per_step", "achieved_gflops", "peak_mem_mb", "params_m")
    assert row["dtype"] == "float32" and row["device"] == "cpu" and row["modality"] == modality
    assert row["threads"] == 1 and row["loss_finite"] and not row["compile"]
    assert row["ms_min"] <= row["ms_per_step"] <= row["ms_max"]
    assert row["samples_per_s"] == pytest.approx(row["batch"] / row["ms_per_step"] * 1000, rel=1e-2)
    assert row["achieved_gflops"] == pytest.approx(row["gflop_per_step"] / row["ms_per_step"] * 1000, rel=1e-2)
    # FlopCounterMode's count (attention included, which on CPU needs the benchmark's own formula) against the
    # hand count, which leaves out norms, the predictor's projections and the loss.
    assert 0.8 < row["gflop_per_step"] * 1e9 / hand_count(row) < 1.25
    assert row["params_m"] < 1.0  # the tiny model, not vit_tiny
    sets, targets = (1, 4) if modality == "image" else (2, 1)  # I-JEPA: 1 context, 4 targets; V-JEPA: 2 x (1, 1)
    assert len(row["context_tokens"]) == sets and all(len(t) == targets for t in row["target_tokens"])
    assert all(0 < c < row["tokens"] for c in row["context_tokens"])


def test_flop_count_includes_cpu_attention():
    """On CPU, SDPA runs as fused kernels that FlopCounterMode counts as 0; the benchmark adds their formulas."""
    b, h, n, d = 2, 3, 16, 8
    q = torch.randn(b, h, n, d, requires_grad=True)
    counts = []
    for mapping in ({}, train_step.CPU_SDPA_FLOPS):
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            F.scaled_dot_product_attention(q, q, q).sum().backward()
        counts.append(counter.get_flop_counts().get("Global", {}))
    assert sum(counts[0].values()) == 0
    forward = counts[1][torch.ops.aten._scaled_dot_product_flash_attention_for_cpu]
    assert forward == 2 * (2 * b * h * n * n * d)  # q @ k^T and attn @ v
    assert counts[1][torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward] > 2 * forward


def test_train_step_released_size_and_dtypes(capsys):
    """A released size by name; an explicit bf16 autocast (runs on every CPU, emulated where not native); ``auto``
    resolves (to float32 in the tests: conftest sets JEPA_CPU_BF16=0)."""
    common = ["--modality", "image", "--crop", "32", "--patch", "4", "--batch", "1", "--steps", "1", "--warmup", "0"]
    train_step.main([*common, "--model", "vit_tiny", "--pred-depth", "1", "--dtype", "bfloat16", "--threads", "1"])
    row = last_json(capsys)
    assert row["dtype"] == "bfloat16" and row["model"] == "vit_tiny" and row["embed_dim"] == 192
    assert row["depth"] == 12 and row["num_heads"] == 3 and row["loss_finite"]
    assert 5.0 < row["params_m"] < 6.5  # ViT-tiny's 5.5 M + a 1-block predictor of width 96
    train_step.main([*common, *TINY, "--dtype", "auto"])
    row = last_json(capsys)
    assert row["dtype"] == "float32" and row["dtype_requested"] == "auto"


def test_train_step_profile(capsys):
    train_step.main([*TINY_CASES["image"], *TINY, "--steps", "1", "--warmup", "0", "--profile", "3"])
    row = last_json(capsys)
    assert len(row["profile"]) == 3 and all(r["op"] and r["self_ms_per_step"] >= 0 for r in row["profile"])


def test_train_step_argument_errors():
    with pytest.raises(SystemExit):
        train_step.parse_args(["--embed-dim", "48"])  # a custom size needs --depth and --heads too
    with pytest.raises(SystemExit):
        train_step.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        train_step.parse_args(["--compile", "--warmup", "0"])


@pytest.mark.slow
def test_train_step_compile(capsys):
    train_step.main([*TINY_CASES["image"], *TINY, "--steps", "2", "--warmup", "2", "--compile"])
    row = last_json(capsys)
    assert row["compile"] is True
    if row["compiled"]:
        assert row["compile_error"] is None and row["compile_s"] is not None
    else:  # reported, not raised
        assert row["compile_error"]
    positive(row, "ms_per_step", "gflop_per_step")


@pytest.fixture(scope="module")
def clips_csv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return make_moving_digits(folder, num_videos=3, num_frames=12, size=32, source="digits")


DECODERS = ["pyav"] + (["decord"] if importlib.util.find_spec("decord") is not None else [])


@pytest.mark.parametrize("decoder", DECODERS)
def test_video_loader_json(clips_csv, decoder, capsys):
    argv = [str(clips_csv), "--n", "3", "--frames", "4", "--step", "2", "--crop", "32", "--patch", "8"]
    assert video_loader.main([*argv, "--decoder", decoder, "--threads", "1"]) == 0
    row = last_json(capsys)
    positive(row, "clips_per_s", "seconds")
    assert row["decoder"] == decoder and row["workers"] == 0 and row["videos"] == 3
    assert row["samples_timed"] == 3 and row["sample_shape"] == [3, 4, 32, 32] and row["skipped"] == 0
    assert row["cpu_capability"] and row["torch"] and row["threads"] == 1


def make_image_folder(root, classes=2, per_class=3):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_image_loader_json(tmp_path, workers, capsys):
    folder = make_image_folder(tmp_path / "images")
    argv = ["--images", str(folder), "--n", "4", "--crop", "32", "--patch", "4", "--batch", "2"]
    assert video_loader.main([*argv, "--workers", str(workers)]) == 0
    row = last_json(capsys)
    positive(row, "images_per_s")
    assert row["files"] == 6 and row["samples_timed"] == 4 and row["sample_shape"] == [3, 32, 32]
    assert row["workers"] == workers


def test_video_loader_argument_errors(tmp_path):
    with pytest.raises(SystemExit):
        video_loader.parse_args([])  # no source
    with pytest.raises(SystemExit):
        video_loader.parse_args([str(tmp_path / "a.csv"), "--images", str(tmp_path)])


def test_learning_check_refuses_a_val_split_that_is_the_train_split(tmp_path):
    from benchmarks import learning_check

    csv = tmp_path / "train.csv"
    csv.write_text("a.mp4 0\n")
    with pytest.raises(SystemExit, match="is the train split"):
        learning_check.check_distinct("appearance", csv, tmp_path / "." / "train.csv")
    for bad in ("appearance", "appearance=train.csv", "=a.csv,b.csv", "x=a.csv,"):
        with pytest.raises(SystemExit, match="NAME=TRAIN_CSV,VAL_CSV"):
            learning_check.parse_task(bad)
    assert learning_check.parse_task("motion=a.csv,b.csv") == ("motion", Path("a.csv"), Path("b.csv"))


def test_learning_check_needs_tasks_for_video_csvs(tmp_path):
    from benchmarks import learning_check

    csv = tmp_path / "train.csv"
    csv.write_text("a.mp4 0\n")
    args = ["--fname", "configs/pretrain/tiny_vjepa_cpu.yaml", "--set", "data.dataset_type=VideoDataset",
            f"data.datasets=[{csv}]", f"logging.folder={tmp_path / 'run'}"]  # fmt: skip
    with pytest.raises(SystemExit, match="--task NAME=TRAIN_CSV,VAL_CSV"):
        learning_check.main(args)
    with pytest.raises(SystemExit, match="--val is for image data"):
        learning_check.main([*args, "--val", str(tmp_path)])


def test_learning_check_pooled_pixels_shapes():
    from benchmarks import learning_check

    assert learning_check.pooled_pixels(torch.rand(2, 3, 32, 32)).shape == (2, 3 * 16 * 16)
    assert learning_check.pooled_pixels(torch.rand(2, 3, 8, 32, 32)).shape == (2, 3 * 4 * 16 * 16)


def test_learning_check_attentive_epochs_reach_the_probe(monkeypatch):
    from benchmarks import learning_check

    seen = {}

    def fake_probe(*args, epochs, seed):
        seen.update(epochs=epochs, seed=seed)
        return 0.5

    monkeypatch.setattr(learning_check, "attentive_probe", fake_probe)
    split = learning_check.Split(torch.rand(4, 3, 8), torch.rand(4, 16), np.array([0, 1, 0, 1]))
    assert learning_check.probe_all(["attentive"], split, split, 2, seed=3, attentive_epochs=7) == {"attentive": 0.5}
    assert seen == {"epochs": 7, "seed": 3}
    learning_check.probe_all(["attentive"], split, split, 2, seed=3)
    assert seen["epochs"] == learning_check.ATTENTIVE_EPOCHS == 50
    with pytest.raises(SystemExit, match="--attentive-epochs: got 0, expected at least 1"):
        learning_check.main(["--fname", "configs/pretrain/tiny_ijepa_cpu.yaml", "--attentive-epochs", "0"])
