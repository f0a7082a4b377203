"""Run logging: a CSV of per-step metrics and a compact console line."""

import csv
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO


def setup_logging(level: int = logging.INFO, stream=None) -> None:
    """Console logging for entry points (the library itself never configures logging); stdout by default."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=stream or sys.stdout,
    )


def _writer(f: TextIO) -> Any:
    # The csv module ends rows with CRLF by default; logs are read by Unix tools, pandas and diffs alike.
    return csv.writer(f, lineterminator="\n")


class CSVLogger:
    """Rows of metrics in ``path``, one LF-terminated line each. With ``append`` (a resumed run) rows go after the
    existing ones, whose header must match (a file an older version wrote with CRLF line ends is converted first);
    otherwise the file is started afresh."""

    def __init__(self, path: str | Path, columns: list[str], append: bool = True) -> None:
        self.path = Path(path)
        self.columns = columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                rows = list(csv.reader(f))
            header = rows[0] if rows else []
            if header != columns:
                raise ValueError(f"{self.path} has columns {header}, expected {columns}; use another logging folder")
            if b"\r\n" in self.path.read_bytes():
                self._rewrite(rows)
        else:
            with self.path.open("w", newline="") as f:
                _writer(f).writerow(columns)

    def _rewrite(self, rows: list[list[str]]) -> None:
        """Replace the file's rows, atomically (a crash leaves the old file or the new one)."""
        tmp = self.path.with_name(f".{self.path.name}.rewrite")
        with tmp.open("w", newline="") as f:
            _writer(f).writerows(rows)
        os.replace(tmp, self.path)

    def drop_rows_after(self, column: str, value: int) -> None:
        """Remove rows whose ``column`` exceeds ``value``: a run resumed from step N logged past N before it
        stopped, and those steps are about to be run (and logged) again."""
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        col = self.columns.index(column)
        kept = rows[:1] + [r for r in rows[1:] if r and int(float(r[col])) <= value]
        if len(kept) != len(rows):
            self._rewrite(kept)

    def log(self, **row: object) -> None:
        missing = set(self.columns) - set(row)
        if missing:
            raise KeyError(f"CSV row lacks {sorted(missing)}")
        with self.path.open("a", newline="") as f:
            _writer(f).writerow([_fmt(row[c]) for c in self.columns])


def _fmt(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value
