"""Downstream use of a frozen video encoder: a linear classifier on its features of moving-digit clips (CPU).

Moving digits are short MP4s of a real handwritten digit gliding in one of four directions; each clip has two
labels, the digit (appearance) and the direction (motion). This script encodes one clip per video with a frozen
encoder (mean-pooled tokens, through :func:`jepa.extract.extract_features`, which caches them next to the data and
resumes if interrupted), trains a linear classifier (multinomial logistic regression) on the training clips and
prints its accuracy on the held-out clips for both labels::

    # the tiny V-JEPA that `python -m app.main --fname configs/pretrain/tiny_vjepa_cpu.yaml` trains
    python examples/frozen_features_moving_digits.py --checkpoint runs/tiny_vjepa_cpu/jepa-latest.pth.tar
    python examples/frozen_features_moving_digits.py                        # the same encoder at random init
    python examples/frozen_features_moving_digits.py --checkpoint ... --also-random   # both, side by side

The clips (2,000 train / 500 val, 16 frames of 32 px; about 20 s to make) are written once under ``--data-root``,
the folder the tiny V-JEPA config trains from. The defaults describe that config's encoder (width 96, depth 4,
4 heads, patch 4, tubelets of 2, 8 frames taken every 2nd frame); for another model change them.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import jepa
from jepa.extract import VideoClipDataset, extract_features
from jepa.models import build_encoder
from jepa.preprocess import Preprocess
from jepa.runtime.logging_utils import setup_logging
from jepa.video.datasets import read_annotation_csv
from jepa.video.moving_digits import make_moving_digits


def parse_args() -> argparse.Namespace:
    """Command-line options (see the module documentation)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="pretraining checkpoint (official layout); default: random init")
    p.add_argument("--also-random", action="store_true", help="also report the encoder at random initialisation")
    p.add_argument("--data-root", default="runs/data/moving_digits/16f_32px")
    p.add_argument("--features-dir", default="runs/examples/frozen_features", help="where features are cached")
    p.add_argument("--train-videos", type=int, default=2000)
    p.add_argument("--val-videos", type=int, default=500)
    p.add_argument("--embed-dim", type=int, default=96)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--num-frames", type=int, default=8, help="frames per clip")
    p.add_argument("--frame-step", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def make_encoder(args: argparse.Namespace, checkpoint: str | None) -> nn.Module:
    """The frozen encoder: loaded from ``checkpoint`` (its target encoder), or built at random init."""
    arch = dict(patch_size=args.patch_size, img_size=args.img_size, num_frames=args.num_frames, tubelet_size=2,
                uniform_power=True)  # fmt: skip
    if checkpoint is not None:
        return jepa.load_encoder(checkpoint, which="target_encoder", num_heads=args.num_heads, **arch)
    torch.manual_seed(args.seed)
    encoder = build_encoder(None, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.num_heads, **arch)
    return encoder.requires_grad_(False).eval()


def train_linear(train_x: np.ndarray, train_y: np.ndarray, l2: float = 1.0) -> nn.Module:
    """Multinomial logistic regression on standardised features, full batch with L-BFGS; the penalty
    ``l2 / 2 * |W|^2`` on the summed loss is scikit-learn's default (``C = 1 / l2 = 1``)."""
    x = torch.as_tensor(train_x)
    mean, std = x.mean(0), x.std(0) + 1e-6
    y = torch.as_tensor(train_y)
    linear = nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=1000, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(linear((x - mean) / std), y) + l2 / 2 / len(y) * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return nn.Sequential(_Standardise(mean, std), linear).eval()


class _Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def features(encoder: nn.Module, csv: Path, args: argparse.Namespace, encoder_tag: str) -> np.ndarray:
    """Mean-pooled features ``[videos, D]`` of one clip per video (centred), cached under ``--features-dir`` in a
    file named after everything that produced them."""
    settings = {"encoder": encoder_tag, "data": str(csv.resolve()), "frames": args.num_frames,
                "frame_step": args.frame_step, "crop": args.img_size}  # fmt: skip
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    pre = Preprocess(crop_size=args.img_size, resize_ratio=1.0)
    clips = VideoClipDataset(csv, args.num_frames, args.frame_step, clips_per_video=1, transform=pre.video)
    out = Path(args.features_dir) / f"{csv.stem}-{key}.npy"
    result = extract_features(
        encoder, clips, out, batch_size=args.batch_size, chunk_size=500, settings=settings, log_interval=30
    )
    return np.load(result.out)


def main() -> int:
    """Make the clips, extract features, fit and evaluate a linear classifier per label; one JSON line each."""
    args = parse_args()
    setup_logging()  # progress lines of the feature extraction
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    root = Path(args.data_root)
    csvs = {}
    for split, n in (("train", args.train_videos), ("val", args.val_videos)):
        digit_csv = make_moving_digits(root, num_videos=n, num_frames=16, size=args.img_size, split=split)
        csvs[split] = {"digit": digit_csv, "motion": digit_csv.with_name(f"{split}_motion.csv")}

    encoders = {}
    if args.checkpoint is not None:
        encoders["pretrained"] = args.checkpoint
    if args.checkpoint is None or args.also_random:
        encoders["random"] = None
    results = {}
    for name, checkpoint in encoders.items():
        encoder = make_encoder(args, checkpoint)
        if checkpoint is None:
            tag = f"random init, seed {args.seed}, width {args.embed_dim}, depth {args.depth}"
        else:
            tag = f"{Path(checkpoint).resolve()} modified {Path(checkpoint).stat().st_mtime_ns}"
        x = {s: features(encoder, csvs[s]["digit"], args, tag) for s in ("train", "val")}
        for task in ("digit", "motion"):
            y = {s: np.array([label for _, label in read_annotation_csv(csvs[s][task])]) for s in ("train", "val")}
            classifier = train_linear(x["train"], y["train"])
            with torch.no_grad():
                predicted = classifier(torch.as_tensor(x["val"])).argmax(1).numpy()
            results[(name, task)] = float((predicted == y["val"]).mean())
            print(json.dumps({"encoder": name, "task": task, "val_accuracy": round(results[(name, task)], 4),
                              "train_clips": len(x["train"]), "val_clips": len(x["val"])}))  # fmt: skip
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
