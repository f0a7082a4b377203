"""Frozen evals: config schema, view/segment aggregation, metrics, probe checkpoints and resume, end to end runs."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from evals.encoder import EncoderTokens
from evals.probing import (
    CSV_COLUMNS,
    ProbeTrainer,
    SplitMetrics,
    average_views,
    make_probe_optimizer,
    topk_correct,
)
from evals.video_classification_frozen.eval import collate_clips, make_datasets
from jepa import load_classifier
from jepa.config import ConfigError, from_dict
from jepa.config.evals import EvalConfig, load_eval_config
from jepa.models import AttentiveClassifier
from jepa.video.moving_digits import make_moving_digits

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "official_configs"
V1_EVALS = sorted((OFFICIAL / "jepa" / "configs" / "evals").glob("*.yaml"))
V2_EVALS = sorted((OFFICIAL / "vjepa2" / "configs" / "eval").glob("*/*.yaml"))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_yaml(tmp_path: Path, data: dict, name: str = "eval.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# -- schema ---------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not V1_EVALS, reason="official configs not available")
@pytest.mark.parametrize("path", V1_EVALS, ids=lambda p: p.name)
def test_official_vjepa_eval_configs_validate_unchanged(path):
    raw = yaml.safe_load(path.read_text())
    cfg = load_eval_config(path)
    assert cfg.eval_name == raw["eval_name"]
    assert cfg.pretrain.model_name == raw["pretrain"]["model_name"]
    assert cfg.pretrain.checkpoint_path == Path(raw["pretrain"]["folder"]) / raw["pretrain"]["checkpoint"]
    assert cfg.optimization.probes[0].lr == raw["optimization"]["lr"]
    assert cfg.optimization.use_bfloat16 is True
    # resolution sits under data (images) or optimization (video) in the official files: both are read
    section = "data" if cfg.eval_name == "image_classification_frozen" else "optimization"
    assert cfg.resolution == raw[section]["resolution"]
    if cfg.is_video:
        assert cfg.frame_step == raw["data"]["frame_step"]
        assert cfg.data.num_segments == raw["data"]["num_segments"]
        assert cfg.data.num_views_per_segment == raw["data"]["num_views_per_segment"]
        assert cfg.optimization.attend_across_segments is True
    # outputs go where the official code puts them
    assert cfg.output_folder == Path(raw["pretrain"]["folder"]) / raw["eval_name"] / raw["tag"]


@pytest.mark.skipif(not V2_EVALS, reason="official configs not available")
@pytest.mark.parametrize("path", V2_EVALS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_official_vjepa2_classification_configs_validate(path):
    raw = yaml.safe_load(path.read_text())
    if raw["eval_name"] not in ("video_classification_frozen", "image_classification_frozen"):
        pytest.skip("action anticipation: tests/test_vjepa2_evals.py checks it")
    cfg = load_eval_config(path)
    heads = raw["experiment"]["optimization"]["multihead_kwargs"]
    assert [p.lr for p in cfg.optimization.probes] == [h["lr"] for h in heads]
    assert [p.final_weight_decay for p in cfg.optimization.probes] == [h["final_weight_decay"] for h in heads]
    assert cfg.classifier.num_probe_blocks == raw["experiment"]["classifier"]["num_probe_blocks"]
    assert cfg.pretrain.use_rope is True
    assert cfg.pretrain.checkpoint_path == Path(raw["model_kwargs"]["checkpoint"])


def minimal_video(**over) -> dict:
    cfg = {
        "eval_name": "video_classification_frozen",
        "data": {"dataset_train": "a.csv", "dataset_val": "b.csv", "num_classes": 10, "frames_per_clip": 4},
        "optimization": {"resolution": 32, "batch_size": 2},
        "pretrain": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8,
                     "frames_per_clip": 4, "checkpoint": None},
    }  # fmt: skip
    for key, value in over.items():
        section, _, name = key.partition(".")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    return cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ({"optimization.num_epoch": 3}, "did you mean 'num_epochs'"),
        ({"optimization.lr": "fast"}, "optimization.lr: got 'fast'"),
        ({"data.dataset_val": None}, "data.dataset_val is required"),
        ({"data.resolution": 64}, "disagree"),
        ({"optimization.warmup": 30}, "warmup 30"),
        ({"data.dataset_type": "Kinetics"}, "dataset_type"),
        ({"pretrain.model_name": "vit_enormous"}, "unknown size"),
        ({"eval_name": "linear_probe"}, "eval_name"),
        ({"pretrain.frames_per_clip": 3}, "multiple of tubelet_size"),
    ],
)
def test_schema_errors_name_the_key(tmp_path, override, message):
    path = write_yaml(tmp_path, minimal_video(**override))
    with pytest.raises(ConfigError, match=message) as e:
        load_eval_config(path)
    assert str(path) in str(e.value)


def test_keys_mean_what_they_say():
    cfg = from_dict(EvalConfig, minimal_video(**{"data.frame_step": 2, "pretrain.frame_step": 7}))
    assert cfg.frame_step == 2  # data.frame_step wins (the official code reads pretrain.frame_step)
    cfg = from_dict(EvalConfig, minimal_video(**{"pretrain.frame_step": 7}))
    assert cfg.frame_step == 7
    cfg = from_dict(EvalConfig, minimal_video())
    assert cfg.frame_step == 4 and cfg.resolution == 32
    # one probe from the section's keys; the official hidden end of the wd schedule
    (probe,) = cfg.optimization.probes
    assert (probe.start_lr, probe.final_weight_decay) == (probe.lr, 1e-6)


# -- aggregation ----------------------------------------------------------------------------------------------------
class TagEncoder(nn.Module):
    """Stands in for a video encoder: each tubelet's token is the input value at its first pixel."""

    is_video = True
    embed_dim = 1
    num_heads = 1

    def forward(self, x):
        return x[:, 0, ::2, 0, 0].unsqueeze(-1)  # [X, T // 2, 1]


class TagImageEncoder(TagEncoder):
    is_video = False

    def forward(self, x):  # [X, C, H, W] -> two tokens per image
        return torch.stack([x[:, 0, 0, 0], x[:, 0, 0, 1]], dim=1).unsqueeze(-1)


def tagged_clips(segments=2, views=3, batch=2, frames=4):
    x = torch.zeros(segments, views, batch, 3, frames, 2, 2)
    for s in range(segments):
        for v in range(views):
            for b in range(batch):
                x[s, v, b] = 100 * s + 10 * v + b
    x[..., 2:, :, :] += 0.5  # the second tubelet of every clip is offset by 0.5
    return x


def test_attend_across_segments_concatenates_each_views_segments_in_time_order():
    out = EncoderTokens(TagEncoder(), attend_across_segments=True)(tagged_clips())
    assert out.shape == (3, 2, 2 * 2, 1)  # [V, B, S * N, D]
    for v in range(3):
        for b in range(2):
            expected = [10 * v + b, 10 * v + b + 0.5, 100 + 10 * v + b, 100 + 10 * v + b + 0.5]
            assert out[v, b, :, 0].tolist() == expected


def test_per_segment_probing_gives_one_input_per_segment_and_view():
    out = EncoderTokens(TagEncoder(), attend_across_segments=False)(tagged_clips())
    assert out.shape == (2 * 3, 2, 2, 1)  # [S * V, B, N, D]
    for s in range(2):
        for v in range(3):
            assert out[s * 3 + v, :, 0, 0].tolist() == [100 * s + 10 * v, 100 * s + 10 * v + 1]


def test_image_encoder_embeds_each_frame_and_concatenates_frames():
    x = torch.arange(2 * 3 * 4 * 2 * 2, dtype=torch.float).view(1, 1, 2, 3, 4, 2, 2)  # S=V=1, B=2, T=4
    out = EncoderTokens(TagImageEncoder())(x)
    assert out.shape == (1, 2, 4 * 2, 1)
    clip = x[0, 0, 1]  # second sample
    expected = [v for t in range(4) for v in (clip[0, t, 0, 0].item(), clip[0, t, 0, 1].item())]
    assert out[0, 1, :, 0].tolist() == expected


def test_images_become_static_clips_for_a_video_encoder():
    images = torch.arange(2, dtype=torch.float).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = EncoderTokens(TagEncoder(), image_frames=4)(images)
    assert out.shape == (1, 2, 2, 1) and out[0, :, :, 0].tolist() == [[0, 0], [1, 1]]


def test_collate_nests_segments_and_views():
    def clip(tag):
        return torch.full((3, 4, 2, 2), float(tag))

    samples = [([[clip(100 * s + 10 * v + b) for v in range(3)] for s in range(2)], b, 7 + b) for b in range(2)]
    x, labels, indices = collate_clips(samples)
    assert x.shape == (2, 3, 2, 3, 4, 2, 2)
    assert torch.equal(x, tagged_clips(frames=4).floor().mul(0) + x)  # same shape as the tagged layout
    assert x[1, 2, 1, 0, 0, 0, 0] == 121 and labels.tolist() == [0, 1] and indices.tolist() == [7, 8]
    single = collate_clips([(clip(5), 3, 0)])[0]  # one segment, one view
    assert single.shape == (1, 1, 1, 3, 4, 2, 2)


# -- metrics --------------------------------------------------------------------------------------------------------
def test_view_averaged_top1_top5_against_a_hand_computed_example():
    # 2 views, 2 samples, 6 classes
    logits = torch.log(
        torch.tensor(
            [
                [[0.5, 0.1, 0.1, 0.1, 0.1, 0.1], [0.02, 0.08, 0.1, 0.1, 0.2, 0.5]],
                [[0.1, 0.7, 0.05, 0.05, 0.05, 0.05], [0.02, 0.08, 0.1, 0.1, 0.2, 0.5]],
            ]
        )
    )
    probs = average_views(logits)
    torch.testing.assert_close(probs[0], torch.tensor([0.3, 0.4, 0.075, 0.075, 0.075, 0.075]))
    labels = torch.tensor([0, 0])
    assert topk_correct(probs, labels, 1).item() == 0  # view 2 tips sample 0 to class 1
    assert topk_correct(probs, labels, 5).item() == 1  # sample 1 ranks class 0 last
    assert topk_correct(probs, torch.tensor([1, 5]), 1).item() == 2


def test_metrics_are_sample_weighted_over_the_split_not_a_mean_of_batch_means():
    metrics = SplitMetrics(1, torch.device("cpu"))
    eye = torch.eye(3)
    metrics.update(eye[None, [0, 1, 2]], torch.tensor([0, 0, 0]), torch.tensor([3.0]))  # 1 of 3 right
    metrics.update(eye[None, [2]], torch.tensor([2]), torch.tensor([1.0]))  # 1 of 1 right
    (result,) = metrics.reduce().results()
    assert result["top1"] == pytest.approx(50.0) and result["samples"] == 4
    assert result["top5"] == pytest.approx(100.0)  # k is capped at the 3 classes
    assert result["loss"] == pytest.approx(1.0)


# -- probe training, checkpoints and resume --------------------------------------------------------------------------
def probe_config(tmp_path: Path, epochs: int = 2, probes: int = 2) -> EvalConfig:
    heads = [{"lr": 1e-3 * (k + 1), "weight_decay": 0.05, "warmup": 0.5} for k in range(probes)]
    cfg = minimal_video(**{"optimization.num_epochs": epochs, "optimization.multihead_kwargs": heads})
    cfg["folder"] = str(tmp_path / "out")
    cfg["tag"] = "t"
    return from_dict(EvalConfig, cfg)


class TokenBatches:
    """Fixed batches of random tokens ``[V, B, N, D]`` whose class shows in their mean."""

    def __init__(self, n: int, seed: int, views: int = 2) -> None:
        g = torch.Generator().manual_seed(seed)
        self.batches = []
        for _ in range(n):
            labels = torch.randint(0, 10, (4,), generator=g)
            tokens = torch.randn(views, 4, 5, 48, generator=g) + labels.view(1, 4, 1, 1) * 0.3
            self.batches.append((tokens, labels))

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def make_trainer(cfg: EvalConfig) -> ProbeTrainer:
    torch.manual_seed(0)
    return ProbeTrainer(
        cfg, lambda batch: batch, TokenBatches(3, 0), TokenBatches(2, 1), embed_dim=48, num_heads=3, num_classes=10,
        device=torch.device("cpu"),
    )  # fmt: skip


def test_probes_train_with_their_own_schedules_and_results_are_written(tmp_path):
    cfg = probe_config(tmp_path)
    trainer = make_trainer(cfg)
    before = [p.linear.weight.clone() for p in trainer.bank.probes]
    summary = trainer.run()
    assert all(not torch.equal(b, p.linear.weight) for b, p in zip(before, trainer.bank.probes, strict=True))
    # the probes' last LRs follow their own warmup-cosine schedules (peak 1e-3 and 2e-3), ending near 0
    assert [o.param_groups[0]["weight_decay"] for o in trainer.optimizers] == pytest.approx([1e-6, 1e-6], abs=1e-3)
    assert [o.param_groups[1]["weight_decay"] for o in trainer.optimizers] == [0.0, 0.0]
    rows = (cfg.output_folder / "results.csv").read_text().splitlines()
    assert rows[0].split(",") == CSV_COLUMNS and len(rows) == 1 + 2 * 2
    saved = json.loads((cfg.output_folder / "results.json").read_text())
    assert saved["top1"] == summary["top1"] and len(saved["probes"]) == 2 and saved["random_init_encoder"] is True
    assert saved["val_samples"] == 8
    best = saved["best_probe"]
    assert saved["top1"] == max(p["val_top1"] for p in saved["probes"]) == saved["probes"][best]["val_top1"]
    ckpt = torch.load(trainer.latest_path, weights_only=False)
    assert {"classifier", "classifiers", "opt", "scaler", "epoch", "batch_size", "world_size", "lr"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and len(ckpt["classifiers"]) == 2
    # the best probe loads on its own through the public loader
    probe = load_classifier(trainer.latest_path, num_heads=3)
    torch.testing.assert_close(probe.linear.weight, trainer.bank.probes[best].linear.weight)


def test_resumed_probe_training_equals_uninterrupted_training(tmp_path):
    whole = make_trainer(probe_config(tmp_path / "a", epochs=3))
    whole.run()
    first = make_trainer(probe_config(tmp_path / "b", epochs=3))
    first.cfg.optimization.num_epochs = 1
    first.run()
    resumed = make_trainer(probe_config(tmp_path / "b", epochs=3))
    resumed.run(resume=True)
    assert resumed.epoch == 3
    for a, b in zip(whole.bank.state_dict().values(), resumed.bank.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    rows = (resumed.cfg.output_folder / "results.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [[str(e), str(k)] for e in (1, 2, 3) for k in (0, 1)]


def official_vjepa1_probe_file(path: Path) -> AttentiveClassifier:
    """A probe checkpoint in the V-JEPA 1 layout: DDP-prefixed keys, the unapplied ``xattn.proj``, and an AdamW
    state numbered over every parameter including it."""
    torch.manual_seed(3)
    probe = AttentiveClassifier(embed_dim=48, num_heads=3, depth=1, num_classes=10)
    state = {f"module.{k}": v for k, v in probe.state_dict().items()}
    proj = {"module.pooler.cross_attention_block.xattn.proj.weight": torch.randn(48, 48),
            "module.pooler.cross_attention_block.xattn.proj.bias": torch.randn(48)}  # fmt: skip
    ordered = {}
    for k, v in state.items():  # the official module order: q, kv, proj, then norm2 ...
        ordered[k] = v
        if k.endswith("xattn.kv.bias"):
            ordered.update(proj)
    names = [(k.removeprefix("module."), tuple(v.shape)) for k, v in ordered.items()]
    decayed = [i for i, (n, s) in enumerate(names) if "bias" not in n and len(s) != 1]
    rest = [i for i, (n, s) in enumerate(names) if not ("bias" not in n and len(s) != 1)]
    order = decayed + rest
    opt_state = {
        pos: {
            "step": torch.tensor(5.0),
            "exp_avg": torch.full(names[i][1], 0.1 * i),
            "exp_avg_sq": torch.ones(names[i][1]),
        }
        for pos, i in enumerate(order)
        if "proj" not in names[i][0]
    }
    groups = [
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False, "foreach": None,
         "maximize": False, "capturable": False, "differentiable": False, "fused": None,
         "params": list(range(len(decayed)))},
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "WD_exclude": True, "amsgrad": False,
         "foreach": None, "maximize": False, "capturable": False, "differentiable": False, "fused": None,
         "params": list(range(len(decayed), len(order)))},
    ]  # fmt: skip
    torch.save({"classifier": ordered, "opt": {"state": opt_state, "param_groups": groups}, "scaler": None,
                "epoch": 1, "batch_size": 4, "world_size": 8, "lr": 1e-3}, path)  # fmt: skip
    return probe


def test_official_vjepa1_probe_checkpoint_loads_and_resumes(tmp_path):
    cfg = probe_config(tmp_path, epochs=2, probes=1)
    cfg.output_folder.mkdir(parents=True)
    probe = official_vjepa1_probe_file(cfg.output_folder / "jepa-latest.pth.tar")
    loaded = load_classifier(cfg.output_folder / "jepa-latest.pth.tar", num_heads=3)
    x = torch.randn(2, 5, 48)
    torch.testing.assert_close(loaded(x), probe.eval()(x))
    trainer = make_trainer(cfg)
    trainer.load(trainer.latest_path)
    assert trainer.epoch == 1
    torch.testing.assert_close(trainer.bank.probes[0](x), probe(x))
    state = trainer.optimizers[0].state
    fc1 = trainer.bank.probes[0].pooler.cross_attention_block.mlp.fc1.weight
    assert state[fc1]["step"] == 5 and state[fc1]["exp_avg"].shape == fc1.shape
    trainer.run()  # continues for the second epoch
    assert trainer.epoch == 2


def test_vjepa2_multi_probe_layout_resumes_and_counts_must_match(tmp_path):
    cfg = probe_config(tmp_path, epochs=1, probes=2)
    trainer = make_trainer(cfg)
    trainer.run()
    other = make_trainer(probe_config(tmp_path, epochs=1, probes=3))
    with pytest.raises(Exception, match="holds 2 probe"):
        other.load(trainer.latest_path)
    again = make_trainer(cfg)
    again.load(trainer.latest_path)
    for a, b in zip(trainer.bank.state_dict().values(), again.bank.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_probe_optimizer_uses_the_official_two_groups():
    opt = make_probe_optimizer(AttentiveClassifier(embed_dim=48, num_heads=3, num_classes=4))
    decayed, rest = opt.param_groups
    assert rest["weight_decay"] == 0 and all(p.dim() > 1 for p in decayed["params"])
    assert all(p.dim() == 1 for p in rest["params"])


# -- data and end to end ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digit_csvs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mdigits")
    make_moving_digits(root, num_videos=8, num_frames=16, size=32, split="train", source="digits")
    make_moving_digits(root, num_videos=4, num_frames=16, size=32, split="val", source="digits")
    return root


def video_eval_config(tmp_path: Path, root: Path, **over) -> dict:
    cfg = minimal_video(**{
        "data.dataset_train": str(root / "train_motion.csv"), "data.dataset_val": str(root / "val_motion.csv"),
        "data.num_classes": 4, "data.num_segments": 2, "data.num_views_per_segment": 2, "data.frame_step": 2,
        "data.num_workers": 0, "data.pin_mem": False, "optimization.attend_across_segments": True,
        "optimization.num_epochs": 1, "optimization.batch_size": 4, "optimization.resolution": 32,
    })  # fmt: skip
    cfg["folder"] = str(tmp_path / "out")
    cfg["tag"] = "video"
    cfg["data_aug"] = {"auto_augment": False, "reprob": 0.0, "random_resize_scale": [0.5, 1.0]}
    for key, value in over.items():
        section, _, name = key.partition(".")
        cfg[section][name] = value
    return cfg


def test_validation_clips_and_views_are_deterministic_and_training_segments_follow_the_config(tmp_path, digit_csvs):
    cfg = from_dict(EvalConfig, video_eval_config(tmp_path, digit_csvs))
    train, val, num_classes = make_datasets(cfg)
    assert num_classes == 4
    first, second = val[1], val[1]
    assert len(first[0]) == 2 and len(first[0][0]) == 2  # 2 segments x 2 views
    assert first[0][0][0].shape == (3, 4, 32, 32)
    for a, b in zip(first[0], second[0], strict=True):
        for va, vb in zip(a, b, strict=True):
            assert torch.equal(va, vb)
    assert len(train[0][0]) == 2  # attend across segments: training also sees 2 segments, 1 view
    cfg.optimization.attend_across_segments = False
    train, _, _ = make_datasets(cfg)
    assert train[0][0].shape == (3, 4, 32, 32)  # per-segment probing trains on one clip


def test_video_eval_end_to_end_on_real_clips(tmp_path, digit_csvs):
    from evals.main import main

    path = write_yaml(tmp_path, video_eval_config(tmp_path, digit_csvs))
    assert main(["--fname", str(path), "--devices", "cpu"]) == 0
    summary = json.loads((tmp_path / "out" / "video" / "results.json").read_text())
    assert summary["val_samples"] == 4 and 0 <= summary["top1"] <= 100 and summary["top5"] >= summary["top1"]
    assert main(["--fname", str(path), "--validate"]) == 0
    bad = write_yaml(tmp_path, {**video_eval_config(tmp_path, digit_csvs), "optimisation": {}}, "bad.yaml")
    assert main(["--fname", str(bad), "--validate"]) == 1


def test_image_eval_end_to_end_with_a_pretrained_checkpoint(tmp_path, capsys):
    from evals.main import main
    from tests.conftest import make_encoder

    encoder = make_encoder(1)
    torch.save({"target_encoder": encoder.state_dict(), "encoder": encoder.state_dict(), "epoch": 1}, tmp_path / "e.pt")
    cfg = {
        "eval_name": "image_classification_frozen", "folder": str(tmp_path / "out"), "tag": "img",
        "data": {"dataset_name": "digits", "num_classes": 10, "resolution": 32, "num_workers": 0, "pin_mem": False},
        "data_aug": {"auto_augment": False, "reprob": 0.0},
        "optimization": {"num_epochs": 1, "batch_size": 128},
        "pretrain": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8,
                     "folder": str(tmp_path), "checkpoint": "e.pt"},
    }  # fmt: skip
    path = write_yaml(tmp_path, cfg)
    assert main(["--fname", str(path)]) == 0
    summary = json.loads((tmp_path / "out" / "img" / "results.json").read_text())
    assert summary["encoder_checkpoint"] == str(tmp_path / "e.pt") and summary["val_samples"] == 359  # 20% of 1,797
    missing = write_yaml(tmp_path, {**cfg, "pretrain": {**cfg["pretrain"], "checkpoint": "nope.pt"}}, "m.yaml")
    # A missing checkpoint is a config error before anything is built (issue 13), no longer a late FileNotFoundError.
    assert main(["--fname", str(missing)]) == 1
    assert "nope.pt does not exist" in capsys.readouterr().err


CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "evals"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_eval_configs_validate(path):
    cfg = load_eval_config(path)
    assert cfg.output_folder.name == cfg.tag


@pytest.mark.parametrize(
    "name, classes, frames, segments, views",
    [("k400.yaml", 400, 16, 8, 3), ("ssv2.yaml", 174, 16, 2, 3)],
)
def test_paper_video_configs_follow_the_paper_protocol(name, classes, frames, segments, views):
    cfg = load_eval_config(CONFIGS / name)
    d, opt = cfg.data, cfg.optimization
    assert (d.num_classes, d.frames_per_clip, d.num_segments, d.num_views_per_segment) == (
        classes, frames, segments, views,
    )  # fmt: skip
    assert cfg.pretrain.model_name == "vit_large" and cfg.pretrain.patch_size == 16
    assert (opt.num_epochs, opt.batch_size, opt.attend_across_segments) == (20, 4, True)
    (probe,) = opt.probes
    assert (probe.lr, probe.weight_decay) == (1e-3, 0.01)
