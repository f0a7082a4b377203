"""Run logging: a CSV of per-step metrics and a compact console line."""

import csv
import logging
import sys
from pathlib import Path


def setup_logging(level: int = logging.INFO, stream=None) -> None:
    """Console logging for entry points (the library itself never configures logging); stdout by default."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=stream or sys.stdout,
    )


class CSVLogger:
    """Rows of metrics in ``path``. With ``append`` (a resumed run) rows go after the existing ones, whose header
    must match; otherwise the file is started afresh."""

    def __init__(self, path: str | Path, columns: list[str], append: bool = True) -> None:
        self.path = Path(path)
        self.columns = columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append and self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open() as f:
                header = f.readline().strip().split(",")
            if header != columns:
                raise ValueError(f"{self.path} has columns {header}, expected {columns}; use another logging folder")
        else:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(columns)

    def drop_rows_after(self, column: str, value: int) -> None:
        """Remove rows whose ``column`` exceeds ``value``: a run resumed from step N logged past N before it
        stopped, and those steps are about to be run (and logged) again."""
        with self.path.open(newline="") as f:
            rows = list(csv.reader(f))
        col = self.columns.index(column)
        kept = rows[:1] + [r for r in rows[1:] if r and int(float(r[col])) <= value]
        if len(kept) != len(rows):
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerows(kept)

    def log(self, **row: object) -> None:
        missing = set(self.columns) - set(row)
        if missing:
            raise KeyError(f"CSV row lacks {sorted(missing)}")
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row[c]) for c in self.columns])


def _fmt(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value
