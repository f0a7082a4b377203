"""Slurm launches through submitit, shared by pretraining (``app.main_distributed``) and evals
(``evals.main_distributed``).

A launch validates the config, writes a snapshot of it under ``--folder`` (the job reads the snapshot, not the
file it was made from, which may change while the job waits in the queue), and submits one :class:`Job` per config
with one task per GPU: ``nodes`` x ``tasks_per_node`` tasks (from the YAML unless given), ``gpus_per_node =
tasks_per_node``. Each task exports the torch.distributed variables from submitit's job environment and runs the
entry point's ``main(argv)``, which joins the process group.

Preemption and time limits: Slurm sends ``USR2`` ``--signal-delay-s`` seconds before it stops the job. For an entry
point that accepts ``stop=`` (pretraining), the signal only raises a flag (:class:`StopSignals`; so do SIGTERM,
SIGINT and SIGUSR1, in every launch mode); the training loop sees it at its next step boundary, every rank saves
``latest`` at that step and returns, and then (for the preemption signal) rank 0 hands the signal to submitit,
which calls :meth:`Job.checkpoint` and requeues the job. Other entry points (evals) are checkpointed and requeued by
submitit at once and resume from their last checkpoint. A requeued job runs with ``--resume`` (continue from
``latest``), at most ``--max-requeues`` times.

Nothing here knows a cluster: no partition, account, path or memory default; what is not given is left to Slurm.
"""

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import submitit
import yaml

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")
# What signal.signal installs and returns: a handler, SIG_DFL / SIG_IGN, or None (one not installed from Python).
SignalHandler = Callable[[int, FrameType | None], object] | int | None

EXIT_STOPPED = 75  # sysexits' EX_TEMPFAIL: an entry point stopped on request before the end; run it again to resume
CLUSTERS = ("slurm", "local", "debug")


class LaunchError(ValueError):
    """A launch request that cannot be submitted; the message names the argument or the file."""


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The Slurm options both launchers take."""
    parser.add_argument("--fname", required=True, help="YAML config (with --batch-launch: a file listing configs)")
    parser.add_argument("--folder", required=True, help="job folder: submitit logs, config snapshots")
    parser.add_argument("--partition", required=True, help="Slurm partition")
    parser.add_argument("--time", type=int, required=True, help="time limit per job, in minutes")
    parser.add_argument("--account", default=None, help="Slurm account")
    parser.add_argument("--qos", default=None, help="Slurm quality of service")
    parser.add_argument("--exclude", default=None, help="nodes to avoid, e.g. node[01-03],node07")
    parser.add_argument("--nodes", type=int, default=None, help="nodes per job (default: the YAML's `nodes`)")
    parser.add_argument(
        "--tasks-per-node", type=int, default=None, help="processes (= GPUs) per node (default: the YAML's)"
    )
    parser.add_argument("--gpus-per-node", type=int, default=None, help="default: tasks per node; 0 for CPU jobs")
    parser.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per process (data workers + 1)")
    parser.add_argument("--mem-per-gpu", default=None, help="memory per GPU, e.g. 55G")
    parser.add_argument("--mem", default=None, help="memory per node, e.g. 480G (instead of --mem-per-gpu)")
    parser.add_argument("--signal-delay-s", type=int, default=120, help="USR2 this long before the time limit")
    parser.add_argument("--max-requeues", type=int, default=20, help="requeues after preemption or timeout")
    parser.add_argument("--batch-launch", action="store_true", help="--fname lists configs: submit a job array")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE", help="override keys")
    parser.add_argument(
        "--cluster", choices=CLUSTERS, default="slurm",
        help="slurm, or submitit's local / debug executors to try a launch on this machine",
    )  # fmt: skip


@dataclass
class Prepared:
    """A config ready to submit: the text of its snapshot, its process layout, the resources of each task it asks
    for (V-JEPA 2's ``cpus_per_task`` / ``mem_per_gpu``; None: not said), and arguments for the entry point besides
    ``--fname``."""

    text: str
    nodes: int
    tasks_per_node: int
    extra_argv: list[str] = field(default_factory=list)
    cpus_per_task: int | None = None
    mem_per_gpu: str | None = None


def raw_layout(path: Path) -> tuple[int, int]:
    """``(nodes, tasks_per_node)`` of a YAML config (1, 1 where it does not say)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise LaunchError(f"{path} is not a YAML mapping")
    layout = []
    for key in ("nodes", "tasks_per_node"):
        value = raw.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LaunchError(f"{path}: {key} must be a positive integer, got {value!r}")
        layout.append(value)
    return layout[0], layout[1]


def read_config_list(path: str | Path) -> list[Path]:
    """The configs a ``--batch-launch`` file names: a YAML list (the official format), or one path per line
    (blank lines and ``#`` comments ignored). Relative paths are taken from the working directory."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"--batch-launch list {path} does not exist")
    text = path.read_text()
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        loaded = None
    if isinstance(loaded, list):
        names = [str(x) for x in loaded]
    else:
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        names = [n for n in names if n]
    if not names:
        raise LaunchError(f"--batch-launch list {path} names no config")
    configs = [Path(n) for n in names]
    missing = [str(c) for c in configs if not c.is_file()]
    if missing:
        raise LaunchError(f"{path} lists configs that do not exist: {', '.join(missing)}")
    return configs


def snapshot_config(text: str, folder: Path, name: str) -> Path:
    """Write ``text`` to a new file ``<folder>/configs/<name>-<timestamp>.yaml`` and return its path."""
    configs = Path(folder) / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = configs / f"{name}-{stamp}{f'-{n}' if n else ''}.yaml"
        try:
            with path.open("x") as f:  # exclusive: never overwrite the snapshot of a job already queued
                f.write(text)
            return path
        except FileExistsError:
            continue
    raise LaunchError(f"could not find a free snapshot name for {name} in {configs}")


def executor_parameters(
    args: argparse.Namespace,
    nodes: int,
    tasks_per_node: int,
    name: str,
    *,
    cpus_per_task: int | None = None,
    mem_per_gpu: str | None = None,
) -> dict[str, object]:
    """``AutoExecutor.update_parameters`` keywords for one job of ``nodes`` x ``tasks_per_node`` processes, one
    per GPU. ``cpus_per_task`` and ``mem_per_gpu`` are the config's, used where the command line gives none (and
    no ``--mem``); options given nowhere are left out (Slurm's own defaults apply)."""
    if args.mem and args.mem_per_gpu:
        raise LaunchError("--mem and --mem-per-gpu are exclusive (Slurm refuses both)")
    cpus = args.cpus_per_task if args.cpus_per_task is not None else cpus_per_task
    mem_gpu = args.mem_per_gpu or (None if args.mem else mem_per_gpu)
    if args.time < 1:
        raise LaunchError(f"--time must be at least 1 minute, got {args.time}")
    if args.signal_delay_s >= 60 * args.time:
        raise LaunchError(f"--signal-delay-s {args.signal_delay_s} must be shorter than --time {args.time} minutes")
    gpus = tasks_per_node if args.gpus_per_node is None else args.gpus_per_node
    params = {
        "name": name,
        "timeout_min": args.time,
        "nodes": nodes,
        "tasks_per_node": tasks_per_node,
        "gpus_per_node": gpus,
        "cpus_per_task": cpus,
        "slurm_partition": args.partition,
        "slurm_account": args.account,
        "slurm_qos": args.qos,
        "slurm_exclude": args.exclude,
        "slurm_mem_per_gpu": mem_gpu,
        "slurm_mem": args.mem,
        "slurm_signal_delay_s": args.signal_delay_s,
    }
    return {k: v for k, v in params.items() if v is not None}


def make_executor(
    args: argparse.Namespace,
    nodes: int,
    tasks_per_node: int,
    name: str,
    *,
    cpus_per_task: int | None = None,
    mem_per_gpu: str | None = None,
) -> submitit.AutoExecutor:
    """A submitit executor for ``args.cluster`` with :func:`executor_parameters`; logs go to ``<folder>/<job id>``."""
    executor = submitit.AutoExecutor(
        folder=Path(args.folder) / "%j",
        cluster=args.cluster,
        slurm_max_num_timeout=args.max_requeues,
        local_max_num_timeout=args.max_requeues,
    )
    params = executor_parameters(
        args, nodes, tasks_per_node, name, cpus_per_task=cpus_per_task, mem_per_gpu=mem_per_gpu
    )
    executor.update_parameters(**params)
    return executor


def resolve_entry(entry: str) -> Callable[..., int]:
    """``"package.module:function"`` -> the function."""
    module, _, name = entry.partition(":")
    if not name:
        raise LaunchError(f"entry point {entry!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module), name)


STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)  # torchrun, scancel, Ctrl-C, k8s


class StopSignals:
    """While active, each of ``signums`` raises a stop flag instead of killing the process mid-step: the training
    loop polls :meth:`is_set` at every step boundary, saves ``latest`` and returns. A second signal, of any of
    them, exits at once (the default action of that signal). :meth:`forward` runs the handler ``forward_signum``
    had before (submitit's requeue), when that is the signal that arrived.

    Signals whose handler is already another :class:`StopSignals`' (an outer launcher's) are left to it, and
    outside the main thread nothing is installed (Python only runs handlers there).
    """

    def __init__(self, signums: tuple[int, ...] = STOP_SIGNALS, forward_signum: int | None = None) -> None:
        self.signums = tuple(dict.fromkeys(signums))
        self.forward_signum = forward_signum
        self.received: int | None = None
        self.previous: dict[int, SignalHandler] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: stop signals are not handled here")
            return self
        for signum in self.signums:
            current = signal.getsignal(signum)
            if isinstance(getattr(current, "__self__", None), StopSignals):
                continue
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            logger.error("received %s again: exiting now, without saving", name)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        logger.warning("received %s: saving at the next step boundary, then stopping (send it again to exit now)",
                       name)  # fmt: skip

    def is_set(self) -> bool:
        return self.received is not None

    def forward(self) -> None:
        """Run the handler ``forward_signum`` had before, if it is the signal that arrived (submitit's: rank 0
        checkpoints the job and requeues it)."""
        if self.received is None or self.received != self.forward_signum:
            return
        previous = self.previous.get(self.received)
        if callable(previous):
            previous(self.received, None)
        else:
            logger.warning("no requeue handler for %s: run again with --resume", signal.Signals(self.received).name)


def preemption_signal() -> int:
    """The signal submitit's jobs receive before preemption or the time limit (``USR2`` unless configured)."""
    name = "SIG" + submitit.JobEnvironment.USR_SIG
    if not hasattr(signal, name):
        raise LaunchError(f"unknown preemption signal {name} (SUBMITIT_PREEMPT_SIGNAL)")
    return getattr(signal, name)


@dataclass
class Job:
    """One submitit job: each task runs ``entry(argv)`` (plus ``resume_argv`` once requeued).

    Args:
        entry: ``"package.module:function"``, imported in the task; the function takes ``argv`` (and ``stop=`` when
            ``stop_aware``) and returns an exit status (0: done, :data:`EXIT_STOPPED`: stopped early on request).
        argv: its command line.
        resume_argv: appended once the job has been requeued, to continue from the last checkpoint.
        stop_aware: the entry point polls ``stop()`` and saves before returning :data:`EXIT_STOPPED`; the
            preemption signal then waits for it (see :class:`StopSignals`).
        max_requeues: how often :meth:`checkpoint` may requeue the job (preemptions and timeouts together).
        requeues: how often it has been requeued so far.
    """

    entry: str
    argv: list[str]
    resume_argv: list[str] = field(default_factory=lambda: ["--resume"])
    stop_aware: bool = False
    max_requeues: int = 20
    requeues: int = 0

    @property
    def task_argv(self) -> list[str]:
        return [*self.argv, *(self.resume_argv if self.requeues else [])]

    def __call__(self) -> int:
        from jepa.runtime.distributed import init_distributed

        # Join the group before the entry point does, so that its rank is known for the stop/requeue logic.
        world = init_distributed()
        fn = resolve_entry(self.entry)
        argv = self.task_argv
        logger.info("%s %s (rank %d of %d, requeue %d)", self.entry, " ".join(argv), world.rank, world.world_size,
                    self.requeues)  # fmt: skip
        if self.stop_aware:
            preempt = preemption_signal()
            with StopSignals((preempt, *STOP_SIGNALS), forward_signum=preempt) as flag:
                status = fn(argv, stop=flag.is_set)
            if status == EXIT_STOPPED:
                flag.forward()  # rank 0: checkpoint() and requeue; it exits there (other ranks return below)
        else:
            status = fn(argv)
        if status not in (0, EXIT_STOPPED):
            raise RuntimeError(f"{self.entry} {' '.join(argv)} exited with status {status}")
        return status

    def checkpoint(self, *args: object, **kwargs: object) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on preemption or timeout: the same job, marked to resume; None (no requeue) once
        ``max_requeues`` is reached."""
        if self.requeues >= self.max_requeues:
            logger.error("not requeuing: the job was requeued %d times already (--max-requeues)", self.requeues)
            return None
        logger.warning("requeuing (%d of at most %d), to resume from the latest checkpoint", self.requeues + 1,
                       self.max_requeues)  # fmt: skip
        return submitit.helpers.DelayedSubmission(dataclasses.replace(self, requeues=self.requeues + 1))


def launch(
    args: argparse.Namespace, *, entry: str, prepare: Callable[[Path, list[str]], Prepared], stop_aware: bool
) -> list[submitit.Job]:
    """Submit ``args.fname`` (or, with ``--batch-launch``, every config it lists: one job array per process
    layout) to run ``entry``; returns the submitit jobs.

    Args:
        prepare: ``(config path, --set overrides) -> Prepared``; validates the config and says what to snapshot.
    """
    fnames = read_config_list(args.fname) if args.batch_launch else [Path(args.fname)]
    # One executor (one job array) per process layout and per-task resources.
    groups: dict[tuple[int, int, int | None, str | None], list[tuple[Path, Prepared]]] = {}
    for fname in fnames:  # validate everything before writing or submitting anything
        if not fname.is_file():
            raise LaunchError(f"config {fname} does not exist")
        prepared = prepare(fname, list(args.overrides))
        layout = (args.nodes or prepared.nodes, args.tasks_per_node or prepared.tasks_per_node,
                  prepared.cpus_per_task, prepared.mem_per_gpu)  # fmt: skip
        groups.setdefault(layout, []).append((fname, prepared))
    executors = {
        key: make_executor(args, key[0], key[1], Path(args.fname).stem, cpus_per_task=key[2], mem_per_gpu=key[3])
        for key in groups
    }
    submitted: list[submitit.Job] = []
    for layout, configs in groups.items():
        jobs = []
        for fname, prepared in configs:
            snapshot = snapshot_config(prepared.text, Path(args.folder), fname.stem)
            argv = ["--fname", str(snapshot.resolve()), *prepared.extra_argv]
            jobs.append(Job(entry, argv, stop_aware=stop_aware, max_requeues=args.max_requeues))
            logger.info("%s -> snapshot %s (%d node(s) x %d task(s))", fname, snapshot, *layout[:2])
        executor = executors[layout]
        if len(jobs) == 1:
            submitted.append(executor.submit(jobs[0]))
        else:
            with executor.batch():  # one job array
                pending = [executor.submit(job) for job in jobs]
            submitted.extend(pending)
    for job in submitted:
        logger.info("submitted job %s (logs in %s)", job.job_id, Path(args.folder) / str(job.job_id))
    return submitted


def launcher_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The command line of a Slurm launcher (``app.main_distributed``, ``evals.main_distributed``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_launch_arguments(parser)
    return parser


def launcher_main(submit: Callable[[], list[submitit.Job]]) -> int:
    """Run a launcher: submit, print one job id per line; a bad config or option prints the error and gives 1."""
    import sys

    from jepa.config import ConfigError
    from jepa.runtime.logging_utils import setup_logging

    setup_logging()
    try:
        jobs = submit()
    except (ConfigError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for job in jobs:
        print(job.job_id)
    return 0


def run_parser(prog: str, description: str | None, config_help: str) -> argparse.ArgumentParser:
    """The options ``app.main`` and ``evals.main`` share: the config, devices, validation, overrides, resume."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fname", required=True, help=config_help)
    parser.add_argument("--devices", nargs="+", default=None, help="cpu | cuda:0 [cuda:1 ...] (default: what is there)")
    parser.add_argument("--validate", action="store_true", help="check the config, print it resolved, exit")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE", help="override keys")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint if there is one")
    return parser


def resolve_config(
    args: argparse.Namespace, load: Callable[[str, list[str]], Any], *, paths: bool = True
) -> tuple[Any, int | None]:
    """Load ``args.fname`` with ``args.overrides`` through ``load``, then check what it points at on this machine
    (:func:`jepa.config.checks.check_paths`: data, checkpoints, output folders; skipped with ``paths=False``), so
    that a run fails here, before building anything; with ``--validate`` print it resolved. Returns ``(config,
    None)`` to go on, or ``(None, exit code)``: 1 for an invalid config, 0 after ``--validate``."""
    import sys

    from jepa.config import ConfigError, dump_config
    from jepa.config.checks import check_paths

    try:
        cfg = load(args.fname, args.overrides)
        if paths:
            try:
                check_paths(cfg, resume=args.resume, validate_only=args.validate)
            except ConfigError as e:
                raise ConfigError(f"{args.fname}: {e}") from None
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return None, 1
    if args.validate:
        print(dump_config(cfg), end="")
        print(f"# {args.fname}: valid", file=sys.stderr)
        return None, 0
    return cfg, None


def run_on_devices(fn: Callable[..., T], requested: list[str] | None, *args: object) -> tuple[int, T]:
    """Run ``fn(rank, world_size, device, *args)`` on every device of the run and return ``(rank, result)``.

    Under a launcher (torchrun, a Slurm task) this process is one rank: it joins the group and runs its share
    (at most one ``requested`` device). Otherwise the requested devices (default: all GPUs, or the CPU) each get a
    process; with one device ``fn`` runs here, with several the result is rank 0's.
    """
    from jepa.runtime.distributed import init_distributed, launched_externally, pick_devices, spawn

    if launched_externally():
        if requested and len(requested) > 1:
            raise SystemExit(
                f"--devices {' '.join(requested)}: this process was started by a launcher (torchrun, Slurm) that "
                "runs one process per device; pass at most one device"
            )
        world = init_distributed(requested[0] if requested else None)
        return world.rank, fn(world.rank, world.world_size, world.device, *args)
    devices = pick_devices(requested)
    if len(devices) == 1:
        return 0, fn(0, 1, devices[0], *args)
    return 0, spawn(_with_logging, devices, fn, *args)[0]


def _with_logging(rank: int, world_size: int, device: "torch.device", fn: Callable[..., T], *args: object) -> T:
    from jepa.runtime.logging_utils import setup_logging

    setup_logging()  # a spawned process starts with Python's default logging
    return fn(rank, world_size, device, *args)
