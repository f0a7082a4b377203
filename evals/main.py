"""Frozen-evaluation entry point.

    python -m evals.main --fname configs/evals/k400.yaml [--devices cpu | cuda:0 [cuda:1 ...]] [--validate]
                         [--set optimization.lr=5e-4 ...] [--resume]

The config's ``eval_name`` picks the eval (``video_classification_frozen`` or ``image_classification_frozen``).
Official V-JEPA eval YAML files are accepted unchanged. ``--validate`` loads and checks the config, prints it
resolved and exits (0: valid, 1: not). ``--resume`` resumes the probes from ``<folder>/<write_tag>-latest.pth.tar``
whatever ``resume_checkpoint`` says (what a requeued job does). ``--set pretrain.checkpoint=null`` evaluates a
randomly initialised encoder, the baseline to compare a pretrained one with.
"""

import argparse
import importlib
import json
import logging
import sys
from typing import Any

import torch

from evals.probing import describe_val_samples
from jepa.config.evals import EvalConfig, load_eval_config
from jepa.runtime.launch import resolve_config, run_on_devices, run_parser
from jepa.runtime.logging_utils import setup_logging

logger = logging.getLogger("evals.main")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return run_parser("python -m evals.main", __doc__, "eval YAML config").parse_args(argv)


def run(cfg: EvalConfig, device: torch.device | str, *, rank: int = 0, world_size: int = 1, resume: bool = False):
    """Run the eval ``cfg.eval_name`` names on ``device``; returns its results summary."""
    module = importlib.import_module(f"evals.{cfg.eval_name}")
    return module.main(cfg, device, rank=rank, world_size=world_size, resume=resume)


def _print_summary(summary: dict[str, Any], folder: str) -> None:
    print(
        f"done: {summary['eval_name']} ({summary['tag']}), encoder {summary['encoder_checkpoint'] or 'random init'}: "
        f"top-1 {summary['top1']:.2f}%, top-5 {summary['top5']:.2f}% over "
        f"{describe_val_samples(summary['val_samples'], summary.get('val_unreadable', 0))} "
        f"(probe {summary['best_probe']} of {len(summary['probes'])}); results in {folder}"
    )
    if len(summary["probes"]) > 1:
        rows = [{k: p[k] for k in ("probe", "lr", "weight_decay", "val_top1", "val_top5")} for p in summary["probes"]]
        print(json.dumps(rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(stream=sys.stderr if args.validate else sys.stdout)
    cfg, code = resolve_config(args, load_eval_config)
    if code is not None:
        return code
    run_on_devices(_run_on_rank, args.devices, cfg, args.resume)
    return 0


def _run_on_rank(rank: int, world_size: int, device: torch.device, cfg: EvalConfig, resume: bool) -> None:
    summary = run(cfg, device, rank=rank, world_size=world_size, resume=resume)
    if rank == 0:
        _print_summary(summary, str(cfg.output_folder))


if __name__ == "__main__":
    sys.exit(main())
