"""Pretraining entry point.

    python -m app.main --fname configs/pretrain/tiny_ijepa_cpu.yaml [--devices cpu | cuda:0 [cuda:1 ...]]
                       [--validate] [--set optimization.lr=5e-4 ...] [--max-steps N] [--resume]

``--validate`` loads and checks the config, prints the resolved config and exits (0: valid, 1: not). Official
I-JEPA and V-JEPA YAML files are accepted unchanged. Several devices (``--devices cuda:0 cuda:1``, ``--devices cpu
cpu``; by default every visible GPU) start one process per device; under torchrun or in a Slurm job launched by
``app.main_distributed`` the processes already exist and each joins the process group. ``--resume`` continues from
``<folder>/<write_tag>-latest.pth.tar`` when it exists, whatever ``meta.load_checkpoint`` says (what a requeued job
does). ``--overwrite`` starts afresh in a folder that holds another run's ``latest`` (an error otherwise). Exit
status: 0 when training finished, 1 on a config error, 75 when it stopped early on request (SIGTERM, SIGINT,
SIGUSR1 or a preemption: ``latest`` holds the step it stopped at; a second signal exits at once).
"""

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import torch

from jepa.config import PretrainConfig, load_pretrain_config
from jepa.runtime.distributed import launched_externally, pick_devices
from jepa.runtime.launch import EXIT_STOPPED, StopSignals, resolve_config, run_on_devices, run_parser
from jepa.runtime.logging_utils import setup_logging

logger = logging.getLogger("app.main")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = run_parser("python -m app.main", __doc__, "pretraining YAML config")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many global steps")
    parser.add_argument(
        "--overwrite", action="store_true", help="start afresh in a folder that holds another run's checkpoints"
    )
    return parser.parse_args(argv)


def train_on_rank(
    rank: int,
    world_size: int,
    device: torch.device,
    cfg: PretrainConfig,
    max_steps: int | None = None,
    resume: bool = False,
    stop: Callable[[], bool] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """One rank's share of the run (the process group, if any, is initialised); returns the run summary.

    SIGTERM, SIGINT and SIGUSR1 (torchrun, ``scancel``, Kubernetes, Ctrl-C) ask the run to save ``latest`` at the
    next step boundary and stop, like ``stop()`` (a launcher's preemption flag) does."""
    if rank > 0:
        logging.getLogger().setLevel(logging.WARNING)  # one process speaks for the run
    from app.pretrain import Pretrainer

    trainer = Pretrainer(cfg, device)
    with StopSignals() as signals:

        def stop_now() -> bool:
            return signals.is_set() or (stop is not None and stop())

        return trainer.train(max_steps=max_steps, resume=resume, stop=stop_now, overwrite=overwrite)


def main(argv: list[str] | None = None, stop: Callable[[], bool] | None = None) -> int:
    """Run the command line ``argv``; ``stop`` (polled at step boundaries) asks the run to save and stop early."""
    args = parse_args(argv)
    # With --validate stdout carries only the resolved YAML, so it can be redirected to a file.
    setup_logging(stream=sys.stderr if args.validate else sys.stdout)
    cfg, code = resolve_config(args, load_pretrain_config)
    if code is not None:
        return code
    from app.pretrain import RunFolderError, check_run_folder

    try:
        check_run_folder(cfg, resume=args.resume, overwrite=args.overwrite)
    except RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if stop is not None and not launched_externally() and len(pick_devices(args.devices)) > 1:
        raise ValueError("stop= is for processes started by a launcher; spawned ranks cannot poll it")
    rank, summary = run_on_devices(
        train_on_rank, args.devices, cfg, args.max_steps, args.resume, stop, args.overwrite
    )
    if rank == 0:
        state = "stopped early" if summary["stopped"] else "done"
        print(
            f"{state}: {summary['steps']} steps ({summary['epochs']:.2f} epochs) on {summary['world_size']} "
            f"process(es) in {summary['seconds']:.1f} s, final loss {summary['final_loss']:.4f}, "
            f"{summary['steps_per_s']:.2f} steps/s, checkpoint {summary['checkpoint']}"
        )
    return EXIT_STOPPED if summary["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
