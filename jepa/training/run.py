"""A run's folder, as both trainers keep it: checkpoint paths, atomic saves, strict loads, which checkpoint a run
resumes from, and the CSV log that a resumed run continues.

Files: ``<folder>/<tag>-latest.pth.tar`` (rewritten at every save), ``<folder>/<tag>-ep<N>.pth.tar`` (the ones
kept) and the CSV logs. With several processes only the writing rank (rank 0) writes; the others get ``None``
from the methods that write.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from jepa.checkpoint import CheckpointError, load_strict, remove_stale_tmp, save_checkpoint, strip_prefixes
from jepa.runtime.logging_utils import CSVLogger

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFolder:
    """The files of one run in ``folder``, named after ``tag``; ``writer``: this process writes them (rank 0)."""

    folder: Path
    tag: str
    writer: bool = True

    @property
    def latest(self) -> Path:
        return self.folder / f"{self.tag}-latest.pth.tar"

    def epoch_path(self, epoch: int) -> Path:
        return self.folder / f"{self.tag}-ep{epoch}.pth.tar"

    def resolve(self, path: str | Path) -> Path:
        """``path``, relative to the run folder unless absolute."""
        path = Path(path)
        return path if path.is_absolute() else self.folder / path

    def prepare(self) -> None:
        """Create the folder and remove the temporary files a run killed while writing a checkpoint left there
        (logged); before anything of this run writes into it."""
        if self.writer:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_tmp(self.folder)

    def save(self, state: Mapping[str, Any], *, epoch: int | None = None) -> Path | None:
        """Write ``state`` to ``latest`` and, given ``epoch``, to that epoch's file too, each atomically (a crash
        leaves the previous file); returns ``latest``, or None on a rank that does not write."""
        if not self.writer:
            return None
        save_checkpoint(state, self.latest)
        if epoch is not None:
            save_checkpoint(state, self.epoch_path(epoch))
        return self.latest

    def csv_log(self, name: str, columns: list[str], *, column: str, value: int) -> CSVLogger | None:
        """The CSV log ``name`` of a run that is at ``column == value`` (its step or epoch): a fresh file at 0;
        after a resume, the existing rows without those logged after ``value``, which are about to be logged again.
        None on a rank that does not write."""
        if not self.writer:
            return None
        log = CSVLogger(self.folder / name, columns, append=value > 0)
        log.drop_rows_after(column, value)
        return log

    def resume_path(
        self,
        *,
        latest_first: bool,
        requested: bool,
        requested_by: str,
        read_path: str | Path | None = None,
        read_key: str = "read_path",
        log: logging.Logger = logger,
    ) -> Path | None:
        """The checkpoint the run continues from, or None to start from scratch.

        ``latest_first`` (a requeued job, ``--resume``): ``latest`` whenever it exists, whatever the config says.
        Otherwise only when ``requested`` (by the setting ``requested_by``): ``read_path`` when given (relative to
        the folder; :class:`CheckpointError` naming ``read_key`` when it does not exist), else ``latest`` when it
        exists. A start from scratch although a resume was asked for is logged on ``log``.
        """
        if latest_first and self.latest.is_file():
            return self.latest
        if not requested:
            if latest_first:
                log.info("--resume: %s does not exist yet: starting from scratch", self.latest)
            return None
        if read_path:
            path = self.resolve(read_path)
            if not path.is_file():
                raise CheckpointError(f"{read_key} {path} does not exist")
            return path
        if self.latest.is_file():
            return self.latest
        log.info("%s is set but %s does not exist yet: starting from scratch", requested_by, self.latest)
        return None


def load_modules(ckpt: Mapping[str, Any], modules: Mapping[str, nn.Module], path: str | Path) -> None:
    """Load ``ckpt[name]`` into each of ``modules``, strictly (every key and shape; ``module.`` prefixes of DDP
    files are stripped). A missing name is a :class:`CheckpointError` that lists the file's keys."""
    for name, module in modules.items():
        if name not in ckpt:
            raise CheckpointError(f"{path} has no '{name}'; its keys are {sorted(ckpt)}")
        load_strict(module, strip_prefixes(ckpt[name]), f"{path} [{name}]")
