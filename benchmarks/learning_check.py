"""Learning check: does a pretraining config learn features a probe can use, on *this* data?

Pretrains a config (or takes a checkpoint), then probes frozen features of the pretrained target encoder and of the
same encoder at random initialisation (``pretrain.checkpoint=null`` in an eval), train split -> val split:

    python benchmarks/learning_check.py --fname configs/pretrain/tiny_ijepa_cpu.yaml
    python benchmarks/learning_check.py --fname configs/pretrain/tiny_ijepa_cpu.yaml \\
        --set data.dataset_type=ImageFolder data.root_path=/data data.image_folder=shapes   # reads train/, val/
    python benchmarks/learning_check.py --fname configs/pretrain/tiny_vjepa_cpu.yaml       # moving digits
    python benchmarks/learning_check.py --fname configs/pretrain/tiny_vjepa_cpu.yaml \\
        --set data.dataset_type=VideoDataset data.datasets=[/data/train_appearance.csv] \\
        --task appearance=/data/train_appearance.csv,/data/val_appearance.csv \\
        --task motion=/data/train_motion.csv,/data/val_motion.csv
    python benchmarks/learning_check.py --fname F.yaml --checkpoint runs/x/jepa-latest.pth.tar   # no pretraining

Images: the train and val splits of the configured data set (an ImageFolder's ``train/`` and ``val/``, or a
built-in set's split); ``--val DIR`` takes another folder of class sub-folders as the val split. Video: one
``--task NAME=TRAIN_CSV,VAL_CSV`` per label to probe (the CSVs' ``<path> <label>`` lines); moving digits default to
its digit and motion labels. A V-JEPA 2.1 config with ``img_data`` probes its images too (task ``image_label``;
``--val`` is then the images' val split). A val split that is the train split is refused: a probe scored on its training
data measures nothing.

Read-outs (each pretrained vs random init): ``mean`` logistic regression on mean-pooled last-layer tokens,
``mean_layers`` the same on every block's mean-pooled output concatenated, ``attentive`` an attentive probe on the
last-layer tokens (``--attentive-epochs``, 50 by default; on a few thousand clips the probe still underfits at 50,
and longer probes can rank encoders differently: README, "Learning on data nobody tuned for"); and ``pixels``, logistic
regression on the (pooled) raw pixels as a reference. One JSON line per (task, read-out), then a summary line with
every gain and the collapse signals of the pooled features.
"""

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The trainer itself comes from the app; what a config builds, from jepa.
from app.pretrain import Pretrainer  # noqa: E402
from benchmarks.probing import attentive_probe, logistic_probe  # noqa: E402
from jepa.checkpoint import load_strict, read_checkpoint, strip_prefixes  # noqa: E402
from jepa.config import load_pretrain_config  # noqa: E402
from jepa.config.pretrain import PretrainConfig  # noqa: E402
from jepa.data.robust import DropSkipped, split_skipped  # noqa: E402
from jepa.runtime.logging_utils import setup_logging  # noqa: E402
from jepa.training.builders import build_models, video_annotation_files  # noqa: E402
from jepa.training.losses import collapse_stats  # noqa: E402

logger = logging.getLogger("learning_check")
READOUTS = ("mean", "mean_layers", "attentive", "pixels")
ATTENTIVE_EPOCHS = 50  # every figure in the README's recipe tables; see --attentive-epochs


@dataclass
class Split:
    """Frozen features of one split: last-layer tokens ``[N, T, D]``, per-block means ``[N, depth * D]``."""

    tokens: torch.Tensor
    layers: torch.Tensor
    labels: np.ndarray


def parse_task(text: str) -> tuple[str, Path, Path]:
    name, sep, paths = text.partition("=")
    train, comma, val = paths.partition(",")
    if not sep or not comma or not name or not train or not val:
        raise SystemExit(f"--task {text!r}: expected NAME=TRAIN_CSV,VAL_CSV")
    return name, Path(train), Path(val)


def check_distinct(task: str, train: object, val: object) -> None:
    if Path(str(train)).resolve() == Path(str(val)).resolve():
        raise SystemExit(f"task {task}: the val split {val} is the train split; give held-out data")


def image_splits(d: Any, seed: int, val_dir: str | None) -> dict[str, tuple[object, object]]:
    """The ``label`` task of an image data section ``d`` (``data``, or V-JEPA 2.1's ``img_data``)."""
    from jepa.image.datasets import ImageFolder, make_image_dataset
    from jepa.image.transforms import make_eval_transforms

    transform = make_eval_transforms(crop_size=d.crop_size, resize_ratio=1.0)
    kw = dict(root_path=d.root_path, image_folder=d.image_folder, transform=transform, image_size=d.crop_size)
    train = make_image_dataset(d.dataset_type, split="train", seed=seed, on_error="skip", **kw)
    if val_dir is not None:
        check_distinct("label", getattr(train, "root", None) or "", val_dir)
        val = ImageFolder(Path(val_dir), transform=transform, on_error="skip")
    else:
        val = make_image_dataset(d.dataset_type, split="val", seed=seed, on_error="skip", **kw)
    return {"label": (train, val)}


def video_splits(cfg: PretrainConfig, tasks: list[str]) -> dict[str, tuple[object, object]]:
    from jepa.video.datasets import VideoDataset
    from jepa.video.transforms import VideoEvalTransform

    d = cfg.data
    pairs: list[tuple[str, Path, Path]] = [parse_task(t) for t in tasks]
    if not pairs:
        if d.dataset_type.lower() != "moving_digits":
            raise SystemExit("video data: give one --task NAME=TRAIN_CSV,VAL_CSV per label to probe")
        train_csv, val_csv = (Path(video_annotation_files(cfg, s)[0]) for s in ("train", "val"))
        for label in ("digit", "motion"):
            train_l, val_l = (p.with_name(p.name.replace("_digit", f"_{label}")) for p in (train_csv, val_csv))
            pairs.append((label, train_l, val_l))
    transform = VideoEvalTransform(crop_size=d.crop_size, short_side_ratio=1.0)
    out = {}
    for name, train_csv, val_csv in pairs:
        check_distinct(name, train_csv, val_csv)
        out[name] = tuple(
            VideoDataset(
                [csv],
                frames_per_clip=d.num_frames,
                frame_step=d.frame_step or 1,
                fps=d.fps,
                duration=d.clip_duration,
                random_clip_sampling=False,
                transform=transform,
                decoder=d.decoder,
                on_error="skip",
            )  # fmt: skip
            for csv in (train_csv, val_csv)
        )
    return out


@dataclass
class Decoded:
    """A split decoded and transformed once (inputs ``[N, ...]``, labels) and the unreadable files, reused by both
    encoders (and by tasks that label the same videos differently)."""

    x: torch.Tensor
    y: torch.Tensor
    skipped: list[str]


_DECODED: dict[tuple, tuple[torch.Tensor, list[int], list[str]]] = {}


def decode(dataset, batch_size: int = 64) -> Decoded:
    """Every readable sample of ``dataset``; inputs are shared between data sets that list the same files in the
    same order (two label CSVs of one set of videos), so each video is decoded once."""
    paths = getattr(dataset, "paths", None)
    key = (type(dataset).__name__, tuple(str(p) for p in paths)) if paths is not None else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=DropSkipped())
    if key is not None and key in _DECODED:
        x, kept, skipped = _DECODED[key]
        return Decoded(x, torch.as_tensor(dataset.targets)[kept], skipped)
    xs, ys, kept, skipped = [], [], [], []
    for batch in loader:
        batch, bad = split_skipped(batch)
        skipped += [f"{s.path}: {s.reason}" for s in bad]
        if batch is None:
            continue
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
        kept += [int(i) for i in batch[-1]]
    x = torch.cat(xs)
    if key is not None:
        _DECODED[key] = (x, kept, skipped)
    return Decoded(x, torch.cat(ys), skipped)


@torch.no_grad()
def features(encoder, data: Decoded, batch_size: int = 64) -> tuple[Split, torch.Tensor]:
    """Frozen features and the pooled pixels of a decoded split."""
    encoder.eval()
    tokens, layers, pixels = [], [], []
    for i in range(0, len(data.x), batch_size):
        x = data.x[i : i + batch_size]
        if x.ndim == 4 and getattr(encoder, "img_temporal_dim_size", None) == 1:
            x = x.unsqueeze(2)  # V-JEPA 2.1: images are 1-frame clips through the image tokenizer
        outs = encoder.forward_intermediates(x, norm=True, intermediates_only=True)
        tokens.append(outs[-1])
        layers.append(torch.cat([o.mean(dim=1) for o in outs], dim=1))
        pixels.append(pooled_pixels(x))
    return Split(torch.cat(tokens), torch.cat(layers), data.y.numpy()), torch.cat(pixels)


def pooled_pixels(x: torch.Tensor, side: int = 16, frames: int = 4) -> torch.Tensor:
    """Raw pixels as a reference read-out: images ``[B, C, H, W]`` pooled to ``side`` px, clips ``[B, C, T, H, W]``
    to ``frames`` x ``side`` px, flattened."""
    if x.ndim == 4:
        return F.adaptive_avg_pool2d(x.float(), side).flatten(1)
    return F.adaptive_avg_pool3d(x.float(), (min(frames, x.shape[2]), side, side)).flatten(1)


def probe_all(
    readouts, train: Split, val: Split, num_heads: int, seed: int, attentive_epochs: int = ATTENTIVE_EPOCHS
) -> dict[str, float]:
    res = {}
    if "mean" in readouts:
        res["mean"] = logistic_probe(train.tokens.mean(1).numpy(), train.labels, val.tokens.mean(1).numpy(), val.labels)
    if "mean_layers" in readouts:
        res["mean_layers"] = logistic_probe(train.layers.numpy(), train.labels, val.layers.numpy(), val.labels)
    if "attentive" in readouts:
        res["attentive"] = attentive_probe(train.tokens, train.labels, val.tokens, val.labels, num_heads,
                                           epochs=attentive_epochs, seed=seed)  # fmt: skip
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fname", required=True)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    parser.add_argument("--checkpoint", default=None, help="skip pretraining and probe this checkpoint")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--val", default=None, help="images: a folder of class folders to use as the val split")
    parser.add_argument("--task", dest="tasks", action="append", default=[], help="video: NAME=TRAIN_CSV,VAL_CSV")
    parser.add_argument("--readouts", nargs="+", default=list(READOUTS), choices=READOUTS)
    parser.add_argument("--attentive-epochs", type=int, default=ATTENTIVE_EPOCHS,
                        help="epochs of the attentive probe (one-cycle schedule over all of them)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.attentive_epochs < 1:
        raise SystemExit(f"--attentive-epochs: got {args.attentive_epochs}, expected at least 1")
    setup_logging()
    cfg = load_pretrain_config(args.fname, args.overrides)
    # The probe data first: a wrong --task or --val fails before minutes of pretraining.
    if cfg.video_data:
        if args.val is not None and cfg.img_data is None:
            raise SystemExit("--val is for image data; video tasks take --task NAME=TRAIN_CSV,VAL_CSV")
        splits = video_splits(cfg, args.tasks)
        if cfg.img_data is not None:  # V-JEPA 2.1 on images and video: probe both (--val: the images' val split)
            splits.update({f"image_{k}": v for k, v in image_splits(cfg.img_data, cfg.meta.seed, args.val).items()})
    else:
        if args.tasks:
            raise SystemExit("--task is for video data; images read the data set's train/val splits (or --val)")
        splits = image_splits(cfg.data, cfg.meta.seed, args.val)

    t0 = time.perf_counter()
    ckpt = args.checkpoint or Pretrainer(cfg, "cpu").train(max_steps=args.max_steps)["checkpoint"]
    train_s = time.perf_counter() - t0
    torch.manual_seed(cfg.meta.seed)
    random_encoder, _ = build_models(cfg)
    pretrained, _ = build_models(cfg)
    load_strict(pretrained, strip_prefixes(read_checkpoint(ckpt)["target_encoder"]), str(ckpt))

    gains: dict[str, float] = {}
    signals: dict[str, float] = {}
    for task, (train_set, val_set) in splits.items():
        results, pixel_acc = {}, None
        train_data, val_data = decode(train_set), decode(val_set)
        for path in sorted(set(train_data.skipped + val_data.skipped)):
            logger.warning("task %s: unreadable sample, not scored: %s", task, path)
        for name, encoder in (("pretrained", pretrained), ("random", random_encoder)):
            (tr, tr_pix), (va, va_pix) = features(encoder, train_data), features(encoder, val_data)
            results[name] = probe_all(args.readouts, tr, va, encoder.num_heads, cfg.meta.seed, args.attentive_epochs)
            stats = collapse_stats(va.tokens.mean(1))
            for key in ("feat_std", "eff_rank"):
                signals[f"{task}_{key}_{name}"] = round(float(stats[key]), 4)
            if "pixels" in args.readouts and pixel_acc is None:
                pixel_acc = logistic_probe(tr_pix.numpy(), tr.labels, va_pix.numpy(), va.labels)
        for readout in results["pretrained"]:
            p, r = results["pretrained"][readout], results["random"][readout]
            gains[f"{task}/{readout}"] = round(100 * (p - r), 1)
            row = {"task": task, "readout": readout, "pretrained": round(p, 4), "random": round(r, 4)}
            print(json.dumps({**row, "gain_points": gains[f"{task}/{readout}"]}), flush=True)
        if pixel_acc is not None:
            print(json.dumps({"task": task, "readout": "pixels", "accuracy": round(pixel_acc, 4)}), flush=True)
            signals[f"{task}_pixels"] = round(pixel_acc, 4)
    summary = {"summary": "learning_check", "config": args.fname, "overrides": args.overrides,
               "train_seconds": round(train_s, 1), "checkpoint": str(ckpt), "attentive_epochs": args.attentive_epochs,
               "gain_points": gains,
               **signals}  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
