"""Data helpers that images and video share: counting unreadable samples and skipping past them.

A data set at ImageNet or Kinetics scale always holds a few files that cannot be read (truncated JPEGs, videos with
no decodable frames, files deleted since the list was made). One bad file must not end a week-long run, but a
mounted-wrong volume where every read fails must not turn into a silent loop over retries either. So a sample that
fails to load is logged with its path, counted, and replaced by the next one; when the failed fraction grows too
large the data set stops with an error that says so.
"""

import logging

import torch.utils.data
from PIL import UnidentifiedImageError

logger = logging.getLogger(__name__)

# Errors that mean "this file could not be read", as opposed to a bug in our code (TypeError, KeyError, IndexError,
# ...), which must propagate. PIL.UnidentifiedImageError is an OSError; it is listed to make the intent explicit.
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, UnidentifiedImageError, EOFError)


class SampleLoadError(RuntimeError):
    """A sample, and the samples tried in its place, could not be loaded."""


class SkipCounter:
    """Counts samples that could not be read, logs each one with its path, and stops when too many fail.

    Counts are per process: every DataLoader worker holds its own copy of the data set and so of its counter, and
    :meth:`check` judges the failures that worker has seen. With several workers the main process's counter stays
    at zero; read the per-worker warnings in the log for the totals.

    Args:
        max_failures_kept: how many failures (path and error) are kept to quote in error messages.
    """

    def __init__(self, max_failures_kept: int = 5) -> None:
        self.skipped = 0
        self.total_seen = 0
        self.max_failures_kept = max_failures_kept
        # Kept as strings so that the counter stays small and picklable (exceptions may hold frames or handles).
        self.failures: list[str] = []

    def record_ok(self) -> None:
        """Count one sample that loaded."""
        self.total_seen += 1

    def record(self, index: int, path: str, error: BaseException) -> None:
        """Count and log one sample (``index`` in its data set, read from ``path``) that failed with ``error``."""
        self.skipped += 1
        self.total_seen += 1
        message = f"{path}: {type(error).__name__}: {error}"
        if len(self.failures) < self.max_failures_kept:
            self.failures.append(message)
        logger.warning(
            "skipping sample %d (%s), %d of %d samples failed so far in this process",
            index,
            message,
            self.skipped,
            self.total_seen,
        )

    def check(self, max_fraction: float = 0.5, min_seen: int = 20) -> None:
        """Raise ``RuntimeError`` when more than ``max_fraction`` of at least ``min_seen`` samples failed."""
        if self.total_seen < min_seen or self.skipped <= max_fraction * self.total_seen:
            return
        raise RuntimeError(
            f"{self.skipped} of {self.total_seen} samples failed to load in this process (more than "
            f"{max_fraction:.0%}); the data set is probably missing, unmounted or in the wrong format. "
            f"First failures: {'; '.join(self.failures)}"
        )

    def __repr__(self) -> str:
        return f"SkipCounter(skipped={self.skipped}, total_seen={self.total_seen})"


class RobustDataset(torch.utils.data.Dataset):
    """A map-style data set that skips samples it cannot read.

    Subclasses implement ``__len__``, :meth:`load` (returning a tuple such as ``(x, label)``) and, for useful log
    lines, :meth:`sample_path`. ``dataset[i]`` returns ``load(j) + (j,)`` where ``j`` is the index that was actually
    loaded: ``i`` itself, or when ``load(i)`` raises one of :data:`READ_ERRORS`, the next index (modulo the length)
    that loads. Every failure is recorded in :attr:`skip_counter`. Other exceptions (bugs) propagate unchanged.

    Args:
        max_retries: how many following indices to try after ``i`` fails before giving up with
            :class:`SampleLoadError` (never more than the length of the data set, so no index is tried twice).
        max_skip_fraction: stop with ``RuntimeError`` once more than this fraction of loads failed ...
        min_seen: ... counting from this many loads on (per process, see :class:`SkipCounter`).
    """

    def __init__(self, max_retries: int = 10, max_skip_fraction: float = 0.5, min_seen: int = 20) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        self.max_retries = max_retries
        self.max_skip_fraction = max_skip_fraction
        self.min_seen = min_seen
        self.skip_counter = SkipCounter()

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple:
        """Read sample ``index``; raise one of :data:`READ_ERRORS` when its file cannot be read."""
        raise NotImplementedError

    def sample_path(self, index: int) -> str:
        """Where sample ``index`` comes from, for log lines and error messages."""
        return f"<sample {index}>"

    def __getitem__(self, index: int) -> tuple:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} samples")
        index %= n
        failures: list[str] = []
        for offset in range(min(self.max_retries + 1, n)):
            j = (index + offset) % n
            try:
                sample = self.load(j)
            except READ_ERRORS as e:
                path = self.sample_path(j)
                self.skip_counter.record(j, path, e)
                failures.append(f"{path}: {type(e).__name__}: {e}")
                self.skip_counter.check(self.max_skip_fraction, self.min_seen)
                continue
            if not isinstance(sample, tuple):
                raise TypeError(f"{type(self).__name__}.load must return a tuple, got {type(sample).__name__}")
            self.skip_counter.record_ok()
            return (*sample, j)
        listing = "\n  ".join(failures)
        raise SampleLoadError(
            f"sample {index} could not be loaded, nor the {len(failures) - 1} samples tried after it:\n  {listing}"
        )
