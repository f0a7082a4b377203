"""Learning check for video pretraining: appearance (digit class) and motion (direction) from frozen features.

Pretrains the tiny V-JEPA config (or reuses a checkpoint), then probes the pretrained target encoder and the same
encoder at random initialisation on moving-digit clips (train split -> val split, one deterministic clip each):

    python benchmarks/vjepa_learning_check.py --fname configs/pretrain/tiny_vjepa_cpu.yaml [--set key=value ...]

Read-outs: logistic regression on mean-pooled tokens (``mean``) and an attentive probe on the tokens
(``attentive``, the V-JEPA paper's protocol). One JSON line per (task, read-out), then a summary line.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The trainer itself comes from the app; what a config builds, from jepa.
from app.pretrain import Pretrainer  # noqa: E402
from benchmarks.probing import attentive_probe, extract, logistic_probe  # noqa: E402
from jepa.checkpoint import load_strict, read_checkpoint, strip_prefixes  # noqa: E402
from jepa.config import load_pretrain_config  # noqa: E402
from jepa.runtime.logging_utils import setup_logging  # noqa: E402
from jepa.training.builders import build_models, video_annotation_files  # noqa: E402
from jepa.video.datasets import VideoDataset  # noqa: E402
from jepa.video.transforms import VideoEvalTransform  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fname", required=True)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    parser.add_argument("--checkpoint", default=None, help="skip pretraining and probe this checkpoint")
    parser.add_argument("--readouts", nargs="+", default=["mean", "attentive"])
    args = parser.parse_args()
    setup_logging()
    cfg = load_pretrain_config(args.fname, args.overrides)
    t0 = time.perf_counter()
    ckpt = args.checkpoint or Pretrainer(cfg, "cpu").train()["checkpoint"]
    train_s = time.perf_counter() - t0

    torch.manual_seed(cfg.meta.seed)
    random_encoder, _ = build_models(cfg)
    pretrained, _ = build_models(cfg)
    load_strict(pretrained, strip_prefixes(read_checkpoint(ckpt)["target_encoder"]), str(ckpt))

    d = cfg.data
    transform = VideoEvalTransform(crop_size=d.crop_size, short_side_ratio=1.0)
    results = {}
    for task in ("digit", "motion"):
        splits = {}
        for split in ("train", "val"):
            csv = Path(video_annotation_files(cfg, split)[0])
            csv = csv.with_name(csv.name.replace("_digit", f"_{task}"))
            splits[split] = VideoDataset(
                [csv], frames_per_clip=d.num_frames, frame_step=d.sampling_rate, random_clip_sampling=False,
                transform=transform, decoder=d.decoder,
            )  # fmt: skip
        for name, encoder in (("pretrained", pretrained), ("random", random_encoder)):
            tr_tok, _, tr_y = extract(encoder, splits["train"], batch_size=64)
            va_tok, _, va_y = extract(encoder, splits["val"], batch_size=64)
            if "mean" in args.readouts:
                acc = logistic_probe(tr_tok.mean(1).numpy(), tr_y, va_tok.mean(1).numpy(), va_y)
                results[(task, "mean", name)] = acc
            if "attentive" in args.readouts:
                acc = attentive_probe(tr_tok, tr_y, va_tok, va_y, encoder.num_heads, seed=cfg.meta.seed)
                results[(task, "attentive", name)] = acc
    for task in ("digit", "motion"):
        for readout in args.readouts:
            p, r = results[(task, readout, "pretrained")], results[(task, readout, "random")]
            row = {"task": task, "readout": readout, "pretrained": round(p, 4), "random": round(r, 4)}
            print(json.dumps({**row, "delta": round(p - r, 4)}))
    print(json.dumps({"summary": "vjepa_learning_check", "train_seconds": round(train_s, 1), "checkpoint": str(ckpt)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
