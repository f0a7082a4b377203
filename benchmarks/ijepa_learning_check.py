"""Learning check for image pretraining: does the tiny I-JEPA learn features a probe can use?

Pretrains the given config (or reuses a checkpoint), then probes frozen features of the pretrained target encoder
and of the same encoder at random initialisation on the data set's train/val splits:

    python benchmarks/ijepa_learning_check.py --fname configs/pretrain/tiny_ijepa_cpu.yaml [--set key=value ...]
    python benchmarks/ijepa_learning_check.py --fname F.yaml --checkpoint runs/x/jepa-latest.pth.tar

Read-outs: logistic regression on mean-pooled last-layer tokens (``mean``), on the concatenated mean-pooled
outputs of every block (``mean_layers``), and an attentive probe trained on the last-layer tokens (``attentive``,
the papers' protocol). Prints one JSON line per read-out and a final summary line.
"""

import argparse
import json
import logging
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
from jepa.image.datasets import make_image_dataset  # noqa: E402
from jepa.image.transforms import make_eval_transforms  # noqa: E402
from jepa.runtime.logging_utils import setup_logging  # noqa: E402
from jepa.training.builders import build_models  # noqa: E402

logger = logging.getLogger("learning_check")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fname", required=True)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    parser.add_argument("--checkpoint", default=None, help="skip pretraining and probe this checkpoint")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--readouts", nargs="+", default=["mean", "mean_layers", "attentive"])
    args = parser.parse_args()
    setup_logging()
    cfg = load_pretrain_config(args.fname, args.overrides)

    t0 = time.perf_counter()
    if args.checkpoint is None:
        summary = Pretrainer(cfg, "cpu").train(max_steps=args.max_steps)
        ckpt_path = summary["checkpoint"]
    else:
        ckpt_path = args.checkpoint
    train_s = time.perf_counter() - t0

    torch.manual_seed(cfg.meta.seed)
    random_encoder, _ = build_models(cfg)
    pretrained, _ = build_models(cfg)
    load_strict(pretrained, strip_prefixes(read_checkpoint(ckpt_path)["target_encoder"]), ckpt_path)

    d = cfg.data
    transform = make_eval_transforms(crop_size=d.crop_size, resize_ratio=1.0)
    kw = dict(root_path=d.root_path, image_folder=d.image_folder, transform=transform, image_size=d.crop_size)
    train_set = make_image_dataset(d.dataset_type, split="train", seed=cfg.meta.seed, **kw)
    val_set = make_image_dataset(d.dataset_type, split="val", seed=cfg.meta.seed, **kw)

    results = {}
    for name, encoder in (("pretrained", pretrained), ("random", random_encoder)):
        tr_tok, tr_lay, tr_y = extract(encoder, train_set)
        va_tok, va_lay, va_y = extract(encoder, val_set)
        res = {}
        if "mean" in args.readouts:
            res["mean"] = logistic_probe(tr_tok.mean(1).numpy(), tr_y, va_tok.mean(1).numpy(), va_y)
        if "mean_layers" in args.readouts:
            res["mean_layers"] = logistic_probe(tr_lay.numpy(), tr_y, va_lay.numpy(), va_y)
        if "attentive" in args.readouts:
            res["attentive"] = attentive_probe(tr_tok, tr_y, va_tok, va_y, encoder.num_heads, seed=cfg.meta.seed)
        pooled = tr_tok.mean(1)
        res["feat_std"] = float(pooled.std(0).mean())
        results[name] = res
    for readout in args.readouts:
        p, r = results["pretrained"][readout], results["random"][readout]
        print(
            json.dumps({"readout": readout, "pretrained": round(p, 4), "random": round(r, 4), "delta": round(p - r, 4)})
        )
    print(
        json.dumps(
            {
                "summary": "learning_check",
                "dataset": d.dataset_type,
                "train_seconds": round(train_s, 1),
                "feat_std_pretrained": round(results["pretrained"]["feat_std"], 4),
                "feat_std_random": round(results["random"]["feat_std"], 4),
                "checkpoint": str(ckpt_path),
                "overrides": args.overrides,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
