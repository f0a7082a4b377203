r"""Frozen evaluation on a Slurm cluster, through submitit.

    python -m evals.main_distributed --fname configs/evals/k400.yaml --folder /shared/$USER/jobs \
        --partition P --time 1000 [--account A] [--qos Q] [--exclude NODES] [--nodes N --tasks-per-node G] \
        [--cpus-per-task C] [--mem-per-gpu 55G] [--set KEY=VALUE ...] [--batch-launch]

The same launcher as ``app.main_distributed`` (see :mod:`jepa.launch`): one task per GPU, the YAML's ``nodes`` /
``tasks_per_node`` unless given, the resolved config snapshotted under ``--folder/configs``, each task running
``evals.main``'s command line (``--fname <snapshot>``) on its rank of the job's process group (:func:`run_task`).
On preemption or at the time limit submitit requeues the job at once
(at most ``--max-requeues`` times) and the requeued tasks run with ``--resume``, continuing from the probes' last
checkpoint. ``--batch-launch``: ``--fname`` lists configs, submitted as a job array.
"""

import argparse
import sys
from pathlib import Path

import submitit

from evals import main as evals_main
from jepa.config import ConfigError, dump_config
from jepa.config.evals import load_eval_config
from jepa.launch import LaunchError, Prepared, add_launch_arguments, launch
from jepa.logging_utils import setup_logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m evals.main_distributed", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_launch_arguments(parser)
    return parser.parse_args(argv)


def prepare(fname: Path, overrides: list[str]) -> Prepared:
    """Validate the eval config with its overrides; the snapshot is the resolved config."""
    cfg = load_eval_config(fname, overrides)
    return Prepared(dump_config(cfg), cfg.nodes, cfg.tasks_per_node)


def run_task(argv: list[str]) -> int:
    """One task of a job: ``evals.main``'s command line ``argv``; inside a submitit task ``evals.main`` joins the
    job's process group on this task's rank rather than starting processes of its own."""
    return evals_main.main(argv)


def submit(argv: list[str] | None = None) -> list[submitit.Job]:
    """Submit the jobs ``argv`` describes; returns submitit's job handles."""
    return launch(parse_args(argv), entry="evals.main_distributed:run_task", prepare=prepare, stop_aware=False)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        jobs = submit(argv)
    except (ConfigError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for job in jobs:
        print(job.job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
