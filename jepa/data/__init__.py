"""What image and video data share: unreadable-sample handling (:mod:`jepa.data.robust`, re-exported here),
seeded sampling (:mod:`jepa.data.sampling`), the built-in digits (:mod:`jepa.data.digits`) and normalisation
(:mod:`jepa.data.transforms`)."""

from jepa.data.robust import (
    ON_ERROR_POLICIES,
    READ_ERRORS,
    DropSkipped,
    OnError,
    PartialBatch,
    RobustDataset,
    SampleLoadError,
    SkipCounter,
    SkippedSample,
    append_bad_sample,
    read_bad_sample_log,
    split_skipped,
)

__all__ = [
    "ON_ERROR_POLICIES", "READ_ERRORS", "DropSkipped", "OnError", "PartialBatch", "RobustDataset", "SampleLoadError",
    "SkipCounter", "SkippedSample", "append_bad_sample", "read_bad_sample_log", "split_skipped",
]  # fmt: skip
