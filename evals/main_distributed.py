r"""Frozen evaluation on a Slurm cluster, through submitit.

    python -m evals.main_distributed --fname configs/evals/k400.yaml --folder /shared/$USER/jobs \
        --partition P --time 1000 [--account A] [--qos Q] [--exclude NODES] [--nodes N --tasks-per-node G] \
        [--cpus-per-task C] [--mem-per-gpu 55G] [--set KEY=VALUE ...] [--batch-launch]

The same launcher as ``app.main_distributed`` (see :mod:`jepa.runtime.launch`): one task per GPU, the YAML's ``nodes`` /
``tasks_per_node`` unless given, the resolved config snapshotted under ``--folder/configs``, each task running
``evals.main``'s command line (``--fname <snapshot>``) on its rank of the job's process group.
On preemption or at the time limit submitit requeues the job at once
(at most ``--max-requeues`` times) and the requeued tasks run with ``--resume``, continuing from the probes' last
checkpoint. ``--batch-launch``: ``--fname`` lists configs, submitted as a job array.
"""

import argparse
import sys
from pathlib import Path

import submitit

from jepa.config import dump_config
from jepa.config.evals import load_eval_config
from jepa.runtime.launch import Prepared, launch, launcher_main, launcher_parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return launcher_parser("python -m evals.main_distributed", __doc__).parse_args(argv)


def prepare(fname: Path, overrides: list[str]) -> Prepared:
    """Validate the eval config with its overrides; the snapshot is the resolved config."""
    cfg = load_eval_config(fname, overrides)
    return Prepared(dump_config(cfg), cfg.nodes, cfg.tasks_per_node)


def submit(argv: list[str] | None = None) -> list[submitit.Job]:
    """Submit the jobs ``argv`` describes; returns submitit's job handles."""
    return launch(parse_args(argv), entry="evals.main:main", prepare=prepare, stop_aware=False)


def main(argv: list[str] | None = None) -> int:
    return launcher_main(lambda: submit(argv))


if __name__ == "__main__":
    sys.exit(main())
