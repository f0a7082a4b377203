r"""Pretraining on a Slurm cluster, through submitit.

    python -m app.main_distributed --fname configs/pretrain/vjepa_vitl16.yaml --folder /shared/$USER/jobs \
        --partition P --time 4300 [--account A] [--qos Q] [--exclude NODES] [--nodes N --tasks-per-node G] \
        [--cpus-per-task C] [--mem-per-gpu 55G] [--set KEY=VALUE ...] [--batch-launch]

One task per GPU: ``nodes`` x ``tasks_per_node`` processes (the YAML's ``nodes`` / ``tasks_per_node`` unless
given), each with the YAML's ``cpus_per_task`` cores and ``mem_per_gpu`` memory (V-JEPA 2's keys) unless
``--cpus-per-task`` / ``--mem-per-gpu`` / ``--mem`` say otherwise. The config is validated and its resolved form
snapshotted under ``--folder/configs``; each task runs ``python -m app.main --fname <snapshot>`` and joins the
process group. Before the time limit or on preemption the
run saves ``latest`` at its current step and the job requeues itself with ``--resume`` (at most
``--max-requeues`` times). With ``--batch-launch``, ``--fname`` lists configs (a YAML list or one path per line),
submitted as a job array. ``--cluster local`` runs the same job on this machine through submitit's local executor.
"""

import argparse
import sys
from pathlib import Path

import submitit

from jepa.config import dump_config, load_pretrain_config
from jepa.runtime.launch import Prepared, launch, launcher_main, launcher_parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return launcher_parser("python -m app.main_distributed", __doc__).parse_args(argv)


def prepare(fname: Path, overrides: list[str]) -> Prepared:
    """Validate the config with its overrides; the snapshot is the resolved config (overrides applied). Its
    ``cpus_per_task`` / ``mem_per_gpu`` (V-JEPA 2's keys) size each task unless the command line does."""
    cfg = load_pretrain_config(fname, overrides)
    return Prepared(dump_config(cfg), cfg.nodes, cfg.tasks_per_node, cpus_per_task=cfg.cpus_per_task,
                    mem_per_gpu=cfg.mem_per_gpu)  # fmt: skip


def submit(argv: list[str] | None = None) -> list[submitit.Job]:
    """Submit the jobs ``argv`` describes; returns submitit's job handles."""
    return launch(parse_args(argv), entry="app.main:main", prepare=prepare, stop_aware=True)


def main(argv: list[str] | None = None) -> int:
    return launcher_main(lambda: submit(argv))


if __name__ == "__main__":
    sys.exit(main())
