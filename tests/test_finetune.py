"""End-to-end fine-tuning (issue 19, item 3) as an option of the one probe engine: layer-wise LR decay against its
formula, Mixup / CutMix on the training inputs only (clips cut in the same box in every frame), the encoder's
weights change when fine-tuned and not when frozen, a resumed fine-tuning equals an uninterrupted one bit for bit
(drop path, mixing, label smoothing and EMA on), config errors, and tiny runs end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evals.encoder import EncoderTokens, build_frozen_encoder, build_tuned_encoder, encoder_inputs, make_encode
from evals.finetune import InputMixer, LinearHead, layer_of, make_finetune_optimizer
from evals.probing import ProbeTrainer, classification_task
from jepa.config import ConfigError, from_dict
from jepa.config.evals import EvalConfig, load_eval_config
from jepa.models import VisionTransformer
from jepa.training.optim import set_hyperparams
from tests import test_evals
from tests.test_evals import digit_csvs, video_eval_config, write_yaml  # noqa: F401  (digit_csvs: a fixture)

_one_thread = test_evals._one_thread  # autouse: one thread per test
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "evals"
FINETUNE = {"layer_decay": 0.5, "drop_path": 0.2, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1,
            "ema_decay": 0.9}  # fmt: skip


def image_config(tmp_path: Path, eval_name: str = "image_classification_finetune", **optimization) -> dict:
    """A tiny image eval (built-in digits, a 48-wide encoder of depth 2 on 32 px) writing into ``tmp_path``."""
    return {
        "eval_name": eval_name, "folder": str(tmp_path / "out"), "tag": "ft",
        "data": {"dataset_name": "digits", "num_classes": 10, "resolution": 32, "num_workers": 0, "pin_mem": False},
        "data_aug": {"auto_augment": False, "reprob": 0.0},
        "optimization": {"num_epochs": 2, "batch_size": 4, "lr": 1e-3, "warmup": 0.5, "weight_decay": 0.05,
                         **optimization},
        "classifier": {"num_heads": 3},
        "pretrain": {"model_name": None, "embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8,
                     "checkpoint": None},
    }  # fmt: skip


class ImageBatches:
    """Fixed batches ``(images [4, 3, 32, 32], labels [4], indices [4])``, as the image eval's loader gives."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.batches = [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g),
                         torch.arange(4)) for _ in range(n)]  # fmt: skip

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def make_trainer(cfg: EvalConfig, seed: int = 0) -> ProbeTrainer:
    """The engine as ``evals.probing.run_eval`` sets it up, on fixed batches; the encoder is ``trainer.encoder``."""
    finetune = cfg.finetune
    encoder, _ = (build_tuned_encoder if finetune else build_frozen_encoder)(cfg)
    tokens = EncoderTokens(encoder)
    torch.manual_seed(seed)  # the probe's initialisation
    trainer = ProbeTrainer(
        cfg, encoder_inputs if finetune else make_encode(tokens, torch.device("cpu")), ImageBatches(3, 0),
        ImageBatches(2, 1), embed_dim=48, num_heads=3, task=classification_task(cfg, 10), device=torch.device("cpu"),
        finetune=tokens if finetune else None,
    )  # fmt: skip
    trainer.encoder = encoder  # type: ignore[attr-defined]  # for the tests to look at
    return trainer


# -- layer-wise LR decay --------------------------------------------------------------------------------------------
def test_layer_wise_lr_of_every_parameter_follows_the_formula():
    depth, decay, lr = 3, 0.5, 1e-3
    encoder = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=depth, num_heads=3)
    head = LinearHead(embed_dim=48, num_classes=10)
    optimizer = make_finetune_optimizer(encoder, head, (0.9, 0.999), decay)
    set_hyperparams(optimizer, lr, 0.05)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = [*encoder.named_parameters(), *(("head." + n, p) for n, p in head.named_parameters())]
    assert len(group_of) == len(named)  # every parameter in exactly one group
    expected_layer = {"patch_embed.proj.weight": 0, "pos_embed": 0, "blocks.0.attn.qkv.weight": 1,
                      "blocks.2.mlp.fc2.bias": 3, "norm.weight": 4, "head.linear.weight": 4}  # fmt: skip
    for name, p in named:
        group = group_of[id(p)]
        layer = 4 if name.startswith("head.") else layer_of(name, depth)
        assert expected_layer.get(name, layer) == layer == group["layer"]
        assert group["lr"] == pytest.approx(lr * decay ** (depth + 1 - layer))  # L = depth + 1 layers
        biases_and_norms = name.endswith("bias") or p.dim() == 1
        assert group["weight_decay"] == (0.0 if biases_and_norms else 0.05)
    assert group_of[id(head.linear.weight)]["lr"] == lr and group_of[id(encoder.patch_embed.proj.weight)]["lr"] == (
        pytest.approx(lr / 16)
    )  # fmt: skip


def test_the_engine_sets_the_scheduled_lr_times_each_layers_scale(tmp_path):
    trainer = make_trainer(from_dict(EvalConfig, image_config(tmp_path, **FINETUNE)))
    trainer.step = 2
    out = trainer.train_step(next(iter(trainer.train_loader)))
    (lr, _), (optimizer,) = out.hparams[0], trainer.optimizers
    assert lr == trainer.schedules[0].lr_at(2)
    assert sorted({g["lr"] / lr for g in optimizer.param_groups}) == pytest.approx([0.5**3, 0.5**2, 0.5, 1.0])


# -- mixing ---------------------------------------------------------------------------------------------------------
def test_mixup_is_applied_to_training_inputs_only(tmp_path):
    cfg = from_dict(EvalConfig, image_config(tmp_path, mixup=1.0, cutmix=0.0))
    trainer = make_trainer(cfg)
    seen = []
    trainer.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    x = trainer.train_loader.batches[0][0]
    trainer.train_step(trainer.train_loader.batches[0])
    (mixed,) = seen
    flipped = x.flip(0)
    lam = float(((mixed - flipped) * (x - flipped)).sum() / ((x - flipped) ** 2).sum())
    assert 0 < lam < 1 and not torch.equal(mixed, x)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * flipped)  # one lambda for the batch (timm's "batch")
    seen.clear()
    trainer.evaluate()
    assert len(seen) == 2 and all(torch.equal(s, b[0]) for s, b in zip(seen, trainer.val_loader.batches, strict=True))


def test_cutmix_of_clips_cuts_the_same_box_in_every_segment_view_and_frame():
    mixer = InputMixer(mixup=0.0, cutmix=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0, num_classes=5, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 3, 4, 8, 8, generator=g)  # [S, V, B, C, T, H, W]
    labels = torch.tensor([0, 1, 2, 3])
    original, numpy_state = x.clone(), np.random.get_state()[1].copy()
    mixed, targets = mixer(x, labels, step=3)
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # NumPy's global generator is left as it was
    assert mixed.shape == x.shape and torch.equal(x, original)  # a new tensor: the batch is not changed
    for b in range(4):
        pasted = mixed[:, :, b] == x[:, :, 3 - b]  # sample b with the box of its partner in the reversed batch
        kept = mixed[:, :, b] == x[:, :, b]
        assert torch.all(pasted | kept)
        box = pasted.flatten(0, 3)  # [S * V * C * T, H, W]
        assert torch.all(box == box[0]) and 0 < int(box[0].sum()) < 64
        lam = 1 - int(box[0].sum()) / 64
        torch.testing.assert_close(targets[b, labels[b]], torch.tensor(lam))
        torch.testing.assert_close(targets[b, labels[3 - b]], torch.tensor(1 - lam))
    again, _ = mixer(x, labels, step=3)
    other, _ = mixer(x, labels, step=4)
    assert torch.equal(again, mixed) and not torch.equal(other, mixed)  # a function of the step


# -- what trains ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eval_name", ["image_classification_frozen", "image_classification_finetune"])
def test_only_fine_tuning_changes_the_encoders_weights(tmp_path, eval_name):
    tuned = eval_name.endswith("finetune")
    cfg = from_dict(EvalConfig, image_config(tmp_path, eval_name, num_epochs=1, **(FINETUNE if tuned else {})))
    trainer = make_trainer(cfg)
    encoder = trainer.encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    trainer.run()
    changed = {k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])}
    ckpt = torch.load(trainer.latest_path, weights_only=True)
    if tuned:
        assert changed == set(before) - {"pos_embed"}  # every trained parameter moved; the sine-cosine table is fixed
        assert all(torch.equal(ckpt["encoder"][k], v) for k, v in encoder.state_dict().items())
        assert ckpt["ema"] is not None and set(ckpt["ema"]) == set(trainer.tuned.state_dict())
    else:
        assert changed == set() and "encoder" not in ckpt


def test_a_pretrained_encoder_is_loaded_to_be_trained_with_drop_path(tmp_path):
    from timm.layers import DropPath

    from tests.conftest import make_encoder

    pretrained = make_encoder(1)
    torch.save({"target_encoder": pretrained.state_dict()}, tmp_path / "e.pt")
    raw = image_config(tmp_path, **FINETUNE)
    raw["pretrain"].update(folder=str(tmp_path), checkpoint="e.pt")
    encoder, source = build_tuned_encoder(from_dict(EvalConfig, raw))
    assert source == str(tmp_path / "e.pt")
    assert all(torch.equal(v, pretrained.state_dict()[k]) for k, v in encoder.state_dict().items())
    assert [n for n, p in encoder.named_parameters() if not p.requires_grad] == ["pos_embed"]
    rates = [b.drop_path.drop_prob for b in encoder.blocks if isinstance(b.drop_path, DropPath)]
    assert rates == [0.2]  # a linear ramp over the 2 blocks: 0, then optimization.drop_path
    frozen, _ = build_frozen_encoder(from_dict(EvalConfig, {**raw, "eval_name": "image_classification_frozen",
                                                            "optimization": {"num_epochs": 1}}))  # fmt: skip
    assert not any(p.requires_grad for p in frozen.parameters())


def test_resumed_fine_tuning_equals_uninterrupted_fine_tuning(tmp_path):
    whole = make_trainer(from_dict(EvalConfig, image_config(tmp_path / "a", **FINETUNE)))
    whole.run()
    first = make_trainer(from_dict(EvalConfig, image_config(tmp_path / "b", **FINETUNE)))
    first.cfg.optimization.num_epochs = 1
    first.run()
    resumed = make_trainer(from_dict(EvalConfig, image_config(tmp_path / "b", **FINETUNE)), seed=1)  # other probe
    resumed.run(resume=True)
    assert resumed.epoch == 2
    for a, b in ((whole.tuned, resumed.tuned), (whole.ema.module, resumed.ema.module)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), name
    assert resumed.history[-1].val == whole.history[-1].val
    # a frozen eval's probes are not a fine-tuned model, nor the reverse
    frozen = make_trainer(from_dict(EvalConfig, image_config(tmp_path / "b", "image_classification_frozen")))
    with pytest.raises(ConfigError, match="holds a fine-tuned encoder and its probe, but this run keeps"):
        frozen.load(resumed.latest_path)


# -- configs --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("eval_name", "optimization", "message"),
    [
        ("image_classification_frozen", {"layer_decay": 0.7}, "optimization.layer_decay: fine-tuning only"),
        ("image_classification_frozen", {"ema_decay": 0.99}, "optimization.ema_decay: fine-tuning only"),
        ("image_classification_finetune", {"multihead_kwargs": [{"lr": 1e-3}, {"lr": 2e-3}]}, "one encoder with one"),
        ("image_classification_finetune", {"cache_val_features": True}, "change every epoch"),
        ("image_classification_finetune", {"mixup": 0.8, "batch_size": 5}, "batch_size: got 5, expected an even"),
        ("image_classification_finetune", {"layer_decay": 1.5}, r"layer_decay: got 1.5, expected in \(0, 1\]"),
    ],
)
def test_config_errors_name_the_key(tmp_path, eval_name, optimization, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(EvalConfig, image_config(tmp_path, eval_name, **optimization))


def test_the_anticipation_eval_refuses_classification_training_keys():
    tiny = CONFIGS / "tiny_anticipation_cpu.yaml"
    with pytest.raises(ConfigError, match="optimization.mixup: a classification-eval key"):
        load_eval_config(tiny, ["optimization.mixup=0.8"])
    with pytest.raises(ConfigError, match="classifier.head: got 'linear'"):
        load_eval_config(tiny, ["classifier.head=linear"])


# -- end to end -----------------------------------------------------------------------------------------------------
def test_image_fine_tuning_end_to_end_then_val_only(tmp_path, capsys):
    from evals.main import main

    raw = image_config(tmp_path, num_epochs=1, batch_size=64, **FINETUNE)
    raw["classifier"] = {"head": "linear"}
    path = write_yaml(tmp_path, raw)
    assert main(["--fname", str(path), "--devices", "cpu"]) == 0
    folder = tmp_path / "out" / "ft"
    summary = json.loads((folder / "results.json").read_text())
    assert summary["eval_name"] == "image_classification_finetune" and summary["val_samples"] == 359
    assert 0 <= summary["top1"] <= summary["top5"] <= 100
    ckpt = torch.load(folder / "jepa-latest.pth.tar", weights_only=True)
    assert set(ckpt["classifier"]) == {"norm.weight", "norm.bias", "linear.weight", "linear.bias"}
    with (folder / "results.csv").open() as f:
        assert len(f.read().splitlines()) == 2  # the header and one epoch
    before = (folder / "jepa-latest.pth.tar").read_bytes()
    # the saved encoder and head (EMA weights) evaluated again: the same numbers, the file untouched
    assert main(["--fname", str(path), "--devices", "cpu", "--set", "val_only=true"]) == 0
    again = json.loads((folder / "results_val_only.json").read_text())
    assert (again["top1"], again["top5"]) == (summary["top1"], summary["top5"])
    assert (folder / "jepa-latest.pth.tar").read_bytes() == before


def test_video_fine_tuning_end_to_end_on_real_clips(tmp_path, digit_csvs):  # noqa: F811  (the fixture)
    from evals.main import main

    raw = video_eval_config(tmp_path, digit_csvs)  # 2 segments x 2 views, attended across segments
    raw["eval_name"] = "video_classification_finetune"
    raw["optimization"].update(layer_decay=0.75, drop_path=0.1, mixup=0.5, cutmix=1.0, label_smoothing=0.1)
    assert main(["--fname", str(write_yaml(tmp_path, raw)), "--devices", "cpu"]) == 0
    summary = json.loads((tmp_path / "out" / "video" / "results.json").read_text())
    assert summary["eval_name"] == "video_classification_finetune" and summary["val_samples"] == 4
    ckpt = torch.load(tmp_path / "out" / "video" / "jepa-latest.pth.tar", weights_only=True)
    assert ckpt["encoder"]["patch_embed.proj.weight"].shape[2] == 2 and ckpt["ema"] is None  # tubelets of 2


def test_shipped_tiny_fine_tuning_configs_start_from_the_frozen_configs_checkpoints():
    for name in ("ijepa_digits", "vjepa_digits"):
        frozen = load_eval_config(CONFIGS / f"tiny_{name}_cpu.yaml")
        tuned = load_eval_config(CONFIGS / f"tiny_{name}_finetune_cpu.yaml")
        assert tuned.finetune and not frozen.finetune
        assert tuned.pretrain.checkpoint_path == frozen.pretrain.checkpoint_path
        assert tuned.encoder_spec().embed_dim == frozen.encoder_spec().embed_dim
        assert tuned.output_folder != frozen.output_folder


@pytest.mark.slow  # two processes that import torch: about 30 s on a 2-core machine
def test_two_process_fine_tuning_gives_the_metrics_of_one_process(tmp_path):
    """Encoder and head train on the same global batches (per-rank batch halved, gradients averaged over the ranks
    by the one DDP wrapper around both), so the metrics match one process's (no drop path nor mixing, whose draws
    differ per rank)."""
    from evals.main import main

    results = []
    for devices, batch_size in ((["cpu"], 64), (["cpu", "cpu"], 32)):
        raw = image_config(tmp_path / str(len(devices)), num_epochs=1, batch_size=batch_size, layer_decay=0.75)
        assert main(["--fname", str(write_yaml(tmp_path, raw)), "--devices", *devices]) == 0
        results.append(json.loads((tmp_path / str(len(devices)) / "out" / "ft" / "results.json").read_text()))
    one, two = results
    assert two["world_size"] == 2 and one["val_samples"] == two["val_samples"] == 359
    (a,), (b,) = one["probes"], two["probes"]
    assert (a["val_top1"], a["val_top5"]) == (b["val_top1"], b["val_top5"])
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)  # sums in another order
