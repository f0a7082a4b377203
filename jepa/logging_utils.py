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
    """Appends rows to ``path``; writes the header when the file is new (a resumed run keeps appending)."""

    def __init__(self, path: str | Path, columns: list[str]) -> None:
        self.path = Path(path)
        self.columns = columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open() as f:
                header = f.readline().strip().split(",")
            if header != columns:
                raise ValueError(f"{self.path} has columns {header}, expected {columns}; use another logging folder")
        else:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(columns)

    def log(self, **row: object) -> None:
        missing = set(self.columns) - set(row)
        if missing:
            raise KeyError(f"CSV row lacks {sorted(missing)}")
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row[c]) for c in self.columns])


def _fmt(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value
