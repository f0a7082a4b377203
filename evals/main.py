"""Frozen-evaluation entry point.

    python -m evals.main --fname configs/evals/k400.yaml [--devices cpu | cuda:0 [cuda:1 ...]] [--validate]
                         [--set optimization.lr=5e-4 ...] [--resume]

The config's ``eval_name`` picks the eval (``video_classification_frozen``, ``image_classification_frozen``,
``action_anticipation_frozen``, or the fine-tuning ones ``video_classification_finetune`` and
``image_classification_finetune``).
Official V-JEPA eval YAML files are accepted unchanged. ``--validate`` loads and checks the config, prints it
resolved and exits (0: valid, 1: not). ``--resume`` resumes the probes from ``<folder>/<write_tag>-latest.pth.tar``
whatever ``resume_checkpoint`` says (what a requeued job does). ``--set pretrain.checkpoint=null`` evaluates a
randomly initialised encoder, the baseline to compare a pretrained one with. ``--set val_only=true`` (what the
official V-JEPA 2 inference files set) evaluates the saved probes once, without training: ``probe_checkpoint``, or
the output folder's ``<write_tag>-latest.pth.tar`` or ``latest.pt``; the results go to ``results_val_only.json``.
"""

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from evals.probing import describe_val_samples
from jepa.config.evals import EvalConfig, load_eval_config
from jepa.runtime.launch import resolve_config, run_on_devices, run_parser
from jepa.runtime.logging_utils import setup_logging

if TYPE_CHECKING:
    from jepa.config.anticipation import AnticipationConfig
    from jepa.config.planning import PlanningConfig

logger = logging.getLogger("evals.main")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return run_parser("python -m evals.main", __doc__, "eval YAML config").parse_args(argv)


# eval_name -> the package whose main(cfg, device, rank=, world_size=, resume=) runs it. Fine-tuning is an option of
# the classification evals (the same data and engine; evals.probing.ProbeTrainer with finetune), so they run it.
EVAL_PACKAGES = {
    "video_classification_frozen": "evals.video_classification_frozen",
    "image_classification_frozen": "evals.image_classification_frozen",
    "action_anticipation_frozen": "evals.action_anticipation_frozen",
    "video_classification_finetune": "evals.video_classification_frozen",
    "image_classification_finetune": "evals.image_classification_frozen",
    "planning": "evals.planning",  # world-model planning (app vjepa_droid checkpoints): MPC episodes, no probes
}
# The headline metrics a summary may carry, in the order they are printed.
_METRICS = (("top1", "top-1"), ("top5", "top-5"), ("verb_recall5", "verb recall@5"),
            ("noun_recall5", "noun recall@5"), ("action_recall5", "action recall@5"))  # fmt: skip


def run(
    cfg: "EvalConfig | AnticipationConfig | PlanningConfig",
    device: torch.device | str,
    *,
    rank: int = 0,
    world_size: int = 1,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the eval ``cfg.eval_name`` names on ``device``; returns its results summary."""
    module = importlib.import_module(EVAL_PACKAGES[cfg.eval_name])
    return module.main(cfg, device, rank=rank, world_size=world_size, resume=resume)


def _print_summary(summary: dict[str, Any], folder: str) -> None:
    """One line of results: the metrics the summary has (classification: top-1 / top-5; anticipation: recall@5
    of verbs, nouns and actions; planning: success rate and mean final distance per method), then, with several
    probes, each probe's row."""
    if summary.get("eval_name") == "planning":
        parts = [f"{m} {r['success_rate']:.1f}% success, mean final distance {r['mean_final_distance']:.3f}"
                 + (f", {r['plan_ms_per_step']:.0f} ms/step" if "plan_ms_per_step" in r else "")
                 for m, r in summary["methods"].items()]  # fmt: skip
        print(f"done: planning ({summary.get('tag')}), {summary['episodes']} episodes of {summary['steps']} steps, "
              f"world model {summary['checkpoint']}: {'; '.join(parts)}; results in {folder}")  # fmt: skip
        return
    metrics = ", ".join(f"{name} {summary[key]:.2f}%" for key, name in _METRICS if summary.get(key) is not None)
    if "val_samples" in summary and summary["val_samples"] is not None:
        metrics += f" over {describe_val_samples(summary['val_samples'], summary.get('val_unreadable') or 0)}"
    probes = summary.get("probes") or []
    best = f" (probe {summary['best_probe']} of {len(probes)})" if "best_probe" in summary and probes else ""
    if summary.get("val_only"):
        best += f", val_only: the saved probes of {summary.get('probe_checkpoint')}"
    print(
        f"done: {summary['eval_name']} ({summary.get('tag')}), encoder "
        f"{summary.get('encoder_checkpoint') or 'random init'}: {metrics or 'no metrics'}{best}; results in {folder}"
    )
    if len(probes) > 1:
        keys = ("probe", "lr", "weight_decay", *(f"val_{k}" for k, _ in _METRICS))
        print(json.dumps([{k: p[k] for k in keys if k in p} for p in probes]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(stream=sys.stderr if args.validate else sys.stdout)
    # A planning config names a world-model checkpoint, which jepa.config.checks does not know yet: its eval checks
    # the file when it loads it.
    cfg, code = resolve_config(args, load_eval_config, paths=not _is_planning(args.fname))
    if code is not None:
        return code
    run_on_devices(_run_on_rank, args.devices, cfg, args.resume)
    return 0


def _is_planning(fname: str) -> bool:
    from jepa.config.strict import ConfigError, read_yaml_sections

    try:
        return read_yaml_sections(Path(fname)).get("eval_name") == "planning"
    except (ConfigError, OSError):
        return False  # resolve_config reports it


def _run_on_rank(
    rank: int, world_size: int, device: torch.device, cfg: "EvalConfig | AnticipationConfig | PlanningConfig",
    resume: bool,
) -> None:
    summary = run(cfg, device, rank=rank, world_size=world_size, resume=resume)
    if rank == 0:
        _print_summary(summary, str(cfg.output_folder))


if __name__ == "__main__":
    sys.exit(main())
