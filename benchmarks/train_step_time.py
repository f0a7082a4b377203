"""Train-step time of a pretraining config on this machine, bf16 autocast against float32 in the same run.

    python benchmarks/train_step_time.py --fname configs/pretrain/tiny_vjepa_cpu.yaml [--steps 10] [--device cpu]

Times ``--steps`` full updates (forward, backward, AdamW, EMA) on one fixed batch after two warm-up steps, so data
loading is excluded. Prints one JSON line per precision.
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
from jepa.config import load_pretrain_config  # noqa: E402
from jepa.training.builders import mask_sets  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fname", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    args = parser.parse_args()
    for dtype in ("bfloat16", "float32"):
        overrides = [*args.overrides, f"meta.dtype={dtype}", "data.num_workers=0", "logging.folder=/tmp/step_time"]
        cfg = load_pretrain_config(args.fname, overrides)
        trainer = Pretrainer(cfg, args.device)
        (x, _, _), masks_enc, masks_pred = next(iter(trainer.loader))
        x = x.to(trainer.device)
        sets = mask_sets(cfg, [m.to(trainer.device) for m in masks_enc], [m.to(trainer.device) for m in masks_pred])
        for _ in range(2):
            trainer.train_step(x, sets)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(x, sets)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / args.steps
        row = {
            "config": args.fname, "dtype": dtype, "device": str(trainer.device), "batch": x.shape[0],
            "step_ms": round(1000 * per_step, 1), "samples_per_s": round(x.shape[0] / per_step, 1),
        }  # fmt: skip
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
