"""Data helpers that images and video share: counting unreadable samples and what to do in their place.

A data set at ImageNet or Kinetics scale always holds a few files that cannot be read (truncated JPEGs, videos with
no decodable frames, files deleted since the list was made). One bad file must not end a week-long run, but a
mounted-wrong volume where every read fails must not turn into a silent loop over retries either. So a sample that
fails to load is logged with its path and counted once per distinct file, and then, depending on the data set's
``on_error`` policy (see :class:`RobustDataset`):

* ``"random"`` (training): replaced by a random other sample, drawn from a seed that depends on the sample and its
  draw (so a resumed run sees the same replacement), never by a fixed neighbour, which would get double weight;
* ``"skip"`` (evaluation): not replaced: ``dataset[i]`` returns a :class:`SkippedSample` marker, which
  :class:`DropSkipped` removes from its batch and hands on, so that a metric scores exactly the readable samples,
  each once, and the caller can list the unreadable ones;
* ``"next"``: replaced by the next index that loads (the original behaviour, kept for direct indexing).

When the distinct files that failed grow past a fraction of the distinct files tried, the data set stops with an
error that says so. Counts are per process (each DataLoader worker holds its own copy of the data set); set
:attr:`RobustDataset.bad_sample_log` to collect every process's bad files in one file (:func:`read_bad_sample_log`).
"""

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch.utils.data
from PIL import UnidentifiedImageError
from torch.utils.data import default_collate

from jepa.data.sampling import mix_seed

logger = logging.getLogger(__name__)

# Errors that mean "this file could not be read", as opposed to a bug in our code (TypeError, KeyError, IndexError,
# ...), which must propagate. PIL.UnidentifiedImageError is an OSError; it is listed to make the intent explicit.
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, UnidentifiedImageError, EOFError)

OnError = Literal["next", "random", "skip"]
ON_ERROR_POLICIES: tuple[str, ...] = ("next", "random", "skip")

_UNTRIED, _OK, _BAD = 0, 1, 2


class SampleLoadError(RuntimeError):
    """A sample, and the samples tried in its place, could not be loaded."""


@dataclass(frozen=True)
class SkippedSample:
    """What ``dataset[index]`` returns under ``on_error="skip"`` when sample ``index`` cannot be read."""

    index: int
    path: str
    reason: str


class PartialBatch(NamedTuple):
    """A batch without its unreadable samples: ``batch`` collates the readable ones (None when there were none)
    and ``skipped`` lists the others. A named tuple, so that DataLoader pinning reaches the tensors inside."""

    batch: Any
    skipped: list[SkippedSample]


class DropSkipped:
    """A collate function that removes :class:`SkippedSample` markers and collates the rest with ``collate_fn``
    (torch's default when None); returns a :class:`PartialBatch`. The markers travel with the batch to the main
    process, where DataLoader workers' own counters cannot be seen."""

    def __init__(self, collate_fn: Callable[[list], Any] | None = None) -> None:
        self.collate_fn = default_collate if collate_fn is None else collate_fn

    def __call__(self, samples: Sequence[object]) -> PartialBatch:
        kept = [s for s in samples if not isinstance(s, SkippedSample)]
        skipped = [s for s in samples if isinstance(s, SkippedSample)]
        return PartialBatch(self.collate_fn(kept) if kept else None, skipped)


def split_skipped(batch: Any) -> tuple[Any, list[SkippedSample]]:
    """``(readable batch or None, skipped samples)`` of what a loader yielded; a plain batch skipped nothing."""
    if isinstance(batch, PartialBatch):
        return batch.batch, list(batch.skipped)
    return batch, []


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def append_bad_sample(log: str | Path, path: str, reason: str) -> None:
    """Append ``<path>\\t<reason>\\n`` to ``log`` in one ``os.write`` on an ``O_APPEND`` descriptor, so that the
    lines of several processes never interleave."""
    safe_path = str(path).replace("\t", " ").replace("\n", " ")
    line = f"{safe_path}\t{_one_line(reason)[:1000]}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_bad_sample_log(path: str | Path) -> dict[str, str]:
    """The distinct files of a bad-sample log (see :attr:`RobustDataset.bad_sample_log`), each with the first
    reason given for it; ``{}`` when the log does not exist (nothing failed)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    bad: dict[str, str] = {}
    for line in text.splitlines():
        file, tab, reason = line.rpartition("\t")
        if tab:
            bad.setdefault(file, reason)
    return bad


class SkipCounter:
    """Counts the distinct samples that could not be read among the distinct samples tried, logs each bad one once
    with its path, and stops when too many fail.

    A sample retried (a bad file drawn again, or the same index asked for in a later epoch) is counted once, so a
    cluster of bad files does not look larger than it is. Counts are per process: every DataLoader worker holds
    its own copy of the data set and so of its counter, and :meth:`check` judges the files that process has tried.

    Args:
        max_failures_kept: how many failures (path and error) are kept to quote in error messages.
    """

    def __init__(self, max_failures_kept: int = 5) -> None:
        self.skipped = 0  # distinct samples that failed
        self.total_seen = 0  # distinct samples tried
        self.max_failures_kept = max_failures_kept
        # Kept as strings so that the counter stays small and picklable (exceptions may hold frames or handles).
        self.failures: list[str] = []
        # One byte per index (untried / ok / bad): an ImageNet-sized data set costs a megabyte, not a set of ints.
        self._state = bytearray()

    def _mark(self, index: int | None, state: int) -> int:
        """Mark ``index`` and return its previous state (``_UNTRIED`` when no index is given: counted anew)."""
        if index is None:
            return _UNTRIED
        if index >= len(self._state):
            self._state.extend(bytes(index + 1 - len(self._state)))
        previous = self._state[index]
        if previous != _BAD:  # a file that failed once stays counted as bad
            self._state[index] = state
        return previous

    def record_ok(self, index: int | None = None) -> None:
        """Count one sample that loaded (``index`` in its data set; without it every call counts as a new one)."""
        if self._mark(index, _OK) == _UNTRIED:
            self.total_seen += 1

    def record(self, index: int, path: str, error: BaseException | str) -> bool:
        """Count and log sample ``index``, read from ``path``, that failed with ``error``; returns whether it is a
        newly failed sample (logged at WARNING; a known bad one again only at DEBUG)."""
        previous = self._mark(index, _BAD)
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        message = f"{path}: {reason}"
        if previous == _BAD:
            logger.debug("sample %d failed again (%s)", index, message)
            return False
        self.skipped += 1
        if previous == _UNTRIED:
            self.total_seen += 1
        if len(self.failures) < self.max_failures_kept:
            self.failures.append(message)
        logger.warning(
            "skipping sample %d (%s), %d of %d distinct samples failed so far in this process",
            index,
            message,
            self.skipped,
            self.total_seen,
        )
        return True

    def check(self, max_fraction: float = 0.5, min_seen: int = 20) -> None:
        """Raise ``RuntimeError`` when more than ``max_fraction`` of at least ``min_seen`` distinct samples
        failed."""
        if self.total_seen < min_seen or self.skipped <= max_fraction * self.total_seen:
            return
        raise RuntimeError(
            f"{self.skipped} of {self.total_seen} samples failed to load in this process (distinct files tried; "
            f"more than {max_fraction:.0%}); the data set is probably missing, unmounted or in the wrong format. "
            f"First failures: {'; '.join(self.failures)}"
        )

    def __repr__(self) -> str:
        return f"SkipCounter(skipped={self.skipped}, total_seen={self.total_seen})"


class RobustDataset(torch.utils.data.Dataset):
    """A map-style data set that copes with samples it cannot read.

    Subclasses implement ``__len__``, :meth:`load` (returning a tuple such as ``(x, label)``) and, for useful log
    lines, :meth:`sample_path`. ``dataset[i]`` returns ``load(j) + (j,)`` where ``j`` is the index that was actually
    loaded: ``i`` itself or, when ``load(i)`` raises one of :data:`READ_ERRORS`, a replacement chosen by
    ``on_error``:

    * ``"next"``: the next index (modulo the length) that loads.
    * ``"random"``: ``j`` drawn uniformly among the other indices from
      ``mix_seed(seed, i, attempt, draw)``, where ``draw`` is one draw of torch's global generator. Under
      :class:`jepa.data.sampling.SeededDataset`, which seeds that generator from the run seed, the epoch and the index
      (or draw position), the replacement is a function of the sample's key: the same in any worker and after a
      resume, and a different one in another epoch, so no sample gets a bad neighbour's weight.
    * ``"skip"``: no replacement; ``dataset[i]`` returns a :class:`SkippedSample` (use :class:`DropSkipped` as,
      or around, the collate function). The stop threshold does not apply: each index is visited once, and the
      caller judges the totals.

    Every failure is recorded in :attr:`skip_counter` (once per distinct index) and, when :attr:`bad_sample_log`
    is set, appended to that file. Other exceptions (bugs) propagate unchanged.

    Args:
        max_retries: how many replacements to try after ``i`` fails before giving up with
            :class:`SampleLoadError` (``"next"`` never tries more than the length of the data set).
        max_bad_fraction: stop with ``RuntimeError`` once more than this fraction of the distinct samples tried in
            this process failed ...
        min_seen: ... counting from ``min(min_seen, len(self))`` distinct samples on.
        on_error: ``"next"``, ``"random"`` or ``"skip"`` (see above).
        seed: mixed into the seed of random replacements.
        bad_sample_log: see :attr:`bad_sample_log`.

    Attributes:
        bad_sample_log: None, or a file to which every process appends ``<path>\\t<reason>`` once per distinct
            sample that failed in it (settable after construction, before the DataLoader starts its workers);
            :func:`read_bad_sample_log` gives the distinct bad files of all processes.
    """

    def __init__(
        self,
        max_retries: int = 10,
        max_bad_fraction: float = 0.5,
        min_seen: int = 20,
        *,
        on_error: OnError = "next",
        seed: int = 0,
        bad_sample_log: str | Path | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if on_error not in ON_ERROR_POLICIES:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_POLICIES)}, got {on_error!r}")
        self.max_retries = max_retries
        self.max_bad_fraction = max_bad_fraction
        self.min_seen = min_seen
        self.on_error = on_error
        self.seed = seed
        self.bad_sample_log = bad_sample_log
        self.skip_counter = SkipCounter()

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[object, ...]:
        """Read sample ``index``; raise one of :data:`READ_ERRORS` when its file cannot be read."""
        raise NotImplementedError

    def sample_path(self, index: int) -> str:
        """Where sample ``index`` comes from, for log lines and error messages."""
        return f"<sample {index}>"

    def _attempts(self, n: int) -> int:
        if self.on_error == "skip":
            return 1
        if self.on_error == "next":
            return min(self.max_retries + 1, n)
        return self.max_retries + 1 if n > 1 else 1

    def _candidate(self, index: int, attempt: int, n: int, draw: int) -> int:
        if attempt == 0:
            return index
        if self.on_error == "next":
            return (index + attempt) % n
        # Uniform over the other n - 1 indices (the modulo bias of a 63-bit hash is negligible).
        return (index + 1 + mix_seed(self.seed, index, attempt, draw) % (n - 1)) % n

    def _record_failure(self, index: int, error: BaseException) -> tuple[str, str]:
        path, reason = self.sample_path(index), f"{type(error).__name__}: {error}"
        if self.skip_counter.record(index, path, reason) and self.bad_sample_log is not None:
            append_bad_sample(self.bad_sample_log, path, reason)
        return path, reason

    def __getitem__(self, index: int) -> tuple[object, ...] | SkippedSample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} samples")
        index %= n
        attempts = self._attempts(n)
        failures: list[str] = []
        draw = 0
        for attempt in range(attempts):
            j = self._candidate(index, attempt, n, draw)
            try:
                sample = self.load(j)
            except READ_ERRORS as e:
                path, reason = self._record_failure(j, e)
                if self.on_error == "skip":
                    return SkippedSample(j, path, reason)
                failures.append(f"{path}: {reason}")
                if attempt + 1 < attempts:
                    # Judged before moving on, so that a small data set that fails everywhere still ends in the
                    # SampleLoadError that lists every file tried.
                    self.skip_counter.check(self.max_bad_fraction, min(self.min_seen, n))
                if attempt == 0 and self.on_error == "random":
                    draw = int(torch.randint(2**62, ()))
                continue
            if not isinstance(sample, tuple):
                raise TypeError(f"{type(self).__name__}.load must return a tuple, got {type(sample).__name__}")
            self.skip_counter.record_ok(j)
            return (*sample, j)
        listing = "\n  ".join(failures)
        how = "tried after it" if self.on_error == "next" else "drawn in its place"
        raise SampleLoadError(
            f"sample {index} could not be loaded, nor the {len(failures) - 1} samples {how}:\n  {listing}"
        )
