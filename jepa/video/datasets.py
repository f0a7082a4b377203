"""Video data sets: clips sampled from the videos that annotation CSVs list, and a sampler that mixes CSVs by weight.

An annotation CSV is the official V-JEPA format: one ``"<video path> <integer label>"`` per line, separated by
white space. A sample is ``(clips, label, index)`` (see :class:`VideoDataset`); a video that cannot be read
(missing, empty, corrupt, truncated, or too short when short videos are filtered) is logged with its path, counted
and replaced or skipped as the data set's ``on_error`` says (see :class:`jepa.data.RobustDataset`). A video too
short for one clip that is not filtered is padded with its last frame, with a warning naming it.

Clip geometry: a clip of ``frames_per_clip`` frames taken every ``frame_step`` frames starting at ``start`` reads
frames ``start + k * frame_step`` for ``k < frames_per_clip`` and is said to span ``frames_per_clip * frame_step``
frames (the official ``clip_len``); a clip fits in a video of ``n`` frames when ``start + span <= n``.
"""

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from jepa.data import OnError, RobustDataset
from jepa.data.sampling import mix_seed
from jepa.video.annotations import annotation_lines
from jepa.video.decoding import Size, VideoDecoder, make_decoder

logger = logging.getLogger(__name__)

# What the caller's transform makes of a uint8 clip (a tensor, several views, ...): handed on, never looked into.
ClipTransform = Callable[[torch.Tensor], object]


class TooShort(ValueError):
    """A video holds fewer frames than one clip spans (raised when short videos are filtered, or it has none)."""


def frame_step_for(
    video_fps: float, *, frames_per_clip: int, fps: float | None = None, duration: float | None = None
) -> int:
    """The frame step that samples a video of ``video_fps`` at a target rate or over a target duration.

    Exactly one of:
        fps: take frames at this rate, as V-JEPA 2's data set computes it: ``step = ceil(video_fps) // fps``
            (rounded down, from the container's rate rounded up: 29.97 fps at a target of 4 steps by 7).
        duration: a clip of ``frames_per_clip`` frames covers this many seconds:
            ``step = round(duration * video_fps / frames_per_clip)`` (rounded half up).

    Never returns less than 1 (a target rate above the video's repeats no frame: it reads every frame; the
    official code stops there).
    """
    if (fps is None) == (duration is None):
        raise ValueError(f"give exactly one of fps and duration, got fps={fps}, duration={duration}")
    if not (math.isfinite(video_fps) and video_fps > 0):
        raise ValueError(f"video_fps must be a positive number, got {video_fps}")
    if frames_per_clip < 1:
        raise ValueError(f"frames_per_clip must be >= 1, got {frames_per_clip}")
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return max(1, int(math.ceil(video_fps) // fps))
    if duration is None or not duration > 0:  # duration is given here (exactly one of the two is)
        raise ValueError(f"duration must be positive, got {duration}")
    return max(1, math.floor(duration * video_fps / frames_per_clip + 0.5))


def clip_indices(
    num_video_frames: int,
    frames_per_clip: int,
    frame_step: int,
    num_clips: int,
    random_clip_sampling: bool,
    allow_clip_overlap: bool,
    rng: np.random.Generator | None = None,
    *,
    filter_short_videos: bool = False,
) -> list[np.ndarray]:
    """Frame indices of ``num_clips`` clips of a video of ``num_video_frames`` frames.

    Each clip reads ``start + k * frame_step`` for ``k < frames_per_clip``; its start is chosen so that the clip
    fits (``start + frames_per_clip * frame_step <= num_video_frames``):

    * Without ``allow_clip_overlap`` the video is cut into ``num_clips`` equal segments (boundaries
      ``i * n // num_clips``) and clip ``i`` belongs to segment ``i``: it lies inside the segment when the segment
      is at least one span long, and otherwise covers it (clips of short segments then overlap their neighbours
      as little as they can). ``random_clip_sampling`` draws the start uniformly among those positions (training);
      without it the clip is centred on the segment (evaluation; start rounded down).
    * With ``allow_clip_overlap`` the starts are drawn uniformly over the whole video, independently, and sorted;
      without ``random_clip_sampling`` they are evenly spaced from the first to the last possible start (one clip:
      centred).

    A video shorter than one span raises :class:`TooShort` when ``filter_short_videos``; otherwise every clip
    starts at frame 0 and indices past the end repeat the last frame (``min(k * frame_step, n - 1)``), the
    official padding. A video of no frames always raises :class:`TooShort`.

    Args:
        rng: draws the random starts; required with ``random_clip_sampling``, unused otherwise.

    Returns:
        ``num_clips`` int64 arrays ``[frames_per_clip]``, in increasing order of start.
    """
    for name, value in (("frames_per_clip", frames_per_clip), ("frame_step", frame_step), ("num_clips", num_clips)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if num_video_frames < 0:
        raise ValueError(f"num_video_frames must be >= 0, got {num_video_frames}")
    n = num_video_frames
    span = frames_per_clip * frame_step
    offsets = np.arange(frames_per_clip, dtype=np.int64) * frame_step
    if n < span:
        if filter_short_videos or n == 0:
            raise TooShort(f"video of {n} frames is shorter than one clip ({frames_per_clip} x {frame_step} frames)")
        return [np.minimum(offsets, n - 1) for _ in range(num_clips)]
    if random_clip_sampling and rng is None:
        raise ValueError("random_clip_sampling needs a random generator (rng)")
    draw = rng if random_clip_sampling else None  # the generator of random starts; None: deterministic ones
    last_start = n - span
    starts: np.ndarray | list[int | np.int64]
    if allow_clip_overlap:
        if draw is not None:
            starts = np.sort(draw.integers(0, last_start + 1, size=num_clips))
        elif num_clips == 1:
            starts = np.array([last_start // 2])
        else:
            starts = np.floor(np.linspace(0, last_start, num_clips) + 0.5)
    else:
        starts = []
        for i in range(num_clips):
            segment_start, segment_end = i * n // num_clips, (i + 1) * n // num_clips
            # Starts whose clip lies inside the segment, or covers it when the segment is shorter than a clip.
            lo, hi = sorted((segment_start, segment_end - span))
            lo, hi = min(max(lo, 0), last_start), min(max(hi, 0), last_start)
            starts.append(draw.integers(lo, hi + 1) if draw is not None else (lo + hi) // 2)
    return [int(start) + offsets for start in starts]


def sliding_clip_indices(
    num_video_frames: int, frames_per_clip: int, frame_step: int, stride: int | None = None
) -> list[np.ndarray]:
    """Frame indices of clips that slide over a whole video, for reading out every part of a long video.

    Clips start at ``0, stride, 2 * stride, ...`` while they fit (``start + frames_per_clip * frame_step <=
    num_video_frames``); when the last of them stops short of the video's end, one more clip is placed flush with
    the end, so every frame lies within some clip's span. ``stride`` defaults to the span (``frames_per_clip *
    frame_step``: adjacent, non-overlapping clips). A video shorter than one span gives one clip from frame 0 whose
    indices past the end repeat the last frame, as :func:`clip_indices` pads.

    Returns:
        int64 arrays ``[frames_per_clip]`` in increasing order of start (``clip[0]`` is the start frame).
    """
    for name, value in (("frames_per_clip", frames_per_clip), ("frame_step", frame_step)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    span = frames_per_clip * frame_step
    stride = span if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if num_video_frames < 1:
        raise TooShort(f"video of {num_video_frames} frames has nothing to read")
    offsets = np.arange(frames_per_clip, dtype=np.int64) * frame_step
    if num_video_frames < span:
        return [np.minimum(offsets, num_video_frames - 1)]
    last = num_video_frames - span
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return [start + offsets for start in starts]


def read_annotation_csv(csv_path: str | Path) -> list[tuple[Path, int]]:
    """``(video path, label)`` per line of an official annotation CSV.

    Each non-blank line is ``<path> <integer label>``; the label is the last white-space separated field, so paths
    may contain spaces. A relative path is resolved against the CSV file's folder (the official code resolved it
    against the working directory, so a CSV only worked from one place); ``~`` is expanded.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"annotation file {csv_path} does not exist")
    samples = []
    for _, written, label in annotation_lines(csv_path):
        path = Path(written).expanduser()
        samples.append((path if path.is_absolute() else csv_path.parent / path, label))
    if not samples:
        raise ValueError(f"annotation file {csv_path} lists no videos")
    return samples


class VideoDataset(RobustDataset):
    """Clips of the videos listed in one or more annotation CSVs (Kinetics, SSv2, ...).

    ``dataset[i]`` is ``(clips, label, j)``: ``j`` is the index actually loaded (see
    :class:`jepa.data.RobustDataset`), ``label`` its int label, and ``clips`` the transformed clip when
    ``num_clips == 1``, else a list of ``num_clips`` transformed clips in temporal order. Without ``transform`` a
    clip is a uint8 tensor ``[T, H, W, 3]`` (``T`` the index's :attr:`clip_lengths`); ``transform`` receives it.

    Random clip positions come from a numpy generator seeded from ``seed`` and one draw of torch's global
    generator, so :class:`jepa.data.sampling.SeededDataset` makes them a function of the sample's seed.

    Args:
        data_paths: annotation CSVs (see :func:`read_annotation_csv`).
        datasets_weights: relative weight of each CSV in :attr:`sample_weights`; None weighs every video equally.
        frames_per_clip: frames per clip.
        dataset_fpcs: instead, the frames per clip of each CSV of ``data_paths`` (V-JEPA 2: clips of several
            lengths in one data set; see :attr:`clip_lengths`).
        frame_step: frames between consecutive frames of a clip (the config's ``sampling_rate``).
        fps, duration: instead of ``frame_step``, a per-video step from the video's frame rate (at most one; see
            :func:`frame_step_for`).
        num_clips, random_clip_sampling, allow_clip_overlap, filter_short_videos: see :func:`clip_indices`.
        transform: applied to each clip.
        decoder: ``"auto"``, ``"decord"``, ``"pyav"`` or a :class:`VideoDecoder`.
        resize_on_decode: ``(height, width)`` that frames are resized to while decoding (cheaper than decoding
            full-size frames and resizing afterwards); None keeps the stored size.
        max_retries, max_bad_fraction, on_error: see :class:`jepa.data.RobustDataset` (``"random"`` for
            training, ``"skip"`` for evaluation).
        seed: mixed into the seed of the random clip positions and of random replacements.

    Attributes:
        paths: video path per index.
        targets: int64 ``[len]``, label per index.
        dataset_ids: int64 ``[len]``, which CSV of ``data_paths`` each index comes from.
        clip_lengths: int64 ``[len]``, frames per clip of each index (``frames_per_clip``, or its CSV's entry of
            ``dataset_fpcs``).
        sample_weights: float64 ``[len]``, summing to 1; the videos of CSV ``d`` share its normalised weight
            equally (``weight_d / sum(weights) / num_videos_d``). Draw with
            :class:`jepa.data.sampling.WeightedEpochSampler`.
        padded_files: path -> frames it holds, of every video this process padded by repeating its last frame
            (shorter than the ``(frames_per_clip - 1) * step + 1`` frames one clip reads); each is also logged
            once, with the frames it has and needs.
    """

    def __init__(
        self,
        data_paths: Sequence[str | Path] | str | Path,
        datasets_weights: Sequence[float] | None = None,
        frames_per_clip: int = 16,
        frame_step: int = 4,
        fps: float | None = None,
        dataset_fpcs: Sequence[int] | None = None,
        duration: float | None = None,
        num_clips: int = 1,
        random_clip_sampling: bool = True,
        allow_clip_overlap: bool = False,
        filter_short_videos: bool = False,
        transform: ClipTransform | None = None,
        decoder: str | VideoDecoder = "auto",
        resize_on_decode: Size | None = None,
        max_retries: int = 10,
        seed: int = 0,
        max_bad_fraction: float = 0.5,
        on_error: OnError = "next",
    ) -> None:
        super().__init__(max_retries=max_retries, max_bad_fraction=max_bad_fraction, on_error=on_error, seed=seed)
        if isinstance(data_paths, str | Path):
            data_paths = [data_paths]
        if not data_paths:
            raise ValueError("data_paths lists no annotation files")
        if fps is not None and duration is not None:
            raise ValueError(f"give at most one of fps and duration, got fps={fps}, duration={duration}")
        for name, value in (("frames_per_clip", frames_per_clip), ("frame_step", frame_step), ("num_clips", num_clips)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if dataset_fpcs is not None:
            if len(dataset_fpcs) != len(data_paths):
                raise ValueError(f"{len(dataset_fpcs)} dataset_fpcs for {len(data_paths)} annotation files")
            if min(dataset_fpcs) < 1:
                raise ValueError(f"dataset_fpcs must be >= 1, got {list(dataset_fpcs)}")
        self.data_paths = [Path(p) for p in data_paths]
        self.frames_per_clip = frames_per_clip
        self.frame_step = frame_step
        self.fps = fps
        self.duration = duration
        self.num_clips = num_clips
        self.random_clip_sampling = random_clip_sampling
        self.allow_clip_overlap = allow_clip_overlap
        self.filter_short_videos = filter_short_videos
        self.transform = transform
        self.decoder = make_decoder(decoder) if isinstance(decoder, str) else decoder
        self.resize_on_decode = resize_on_decode
        self.padded_files: dict[str, int] = {}

        per_csv = [read_annotation_csv(p) for p in self.data_paths]
        self.paths: list[Path] = [path for samples in per_csv for path, _ in samples]
        self.targets = np.array([label for samples in per_csv for _, label in samples], dtype=np.int64)
        self.dataset_ids = np.repeat(np.arange(len(per_csv)), [len(s) for s in per_csv])
        fpcs = [frames_per_clip] * len(per_csv) if dataset_fpcs is None else list(dataset_fpcs)
        self.clip_lengths = np.asarray(fpcs, dtype=np.int64)[self.dataset_ids]
        self.sample_weights = _sample_weights([len(s) for s in per_csv], datasets_weights, self.data_paths)

    def __len__(self) -> int:
        return len(self.paths)

    def sample_path(self, index: int) -> str:
        return str(self.paths[index])

    def load(self, index: int) -> tuple[object, int]:
        path = self.paths[index]
        fpc = int(self.clip_lengths[index])
        num_frames = self.decoder.num_frames(path)
        step = self.frame_step
        if self.fps is not None or self.duration is not None:
            step = frame_step_for(self.decoder.fps(path), frames_per_clip=fpc, fps=self.fps, duration=self.duration)
        rng = None
        if self.random_clip_sampling:
            rng = np.random.default_rng(mix_seed(self.seed, int(torch.randint(2**62, ()))))
        try:
            clips = clip_indices(
                num_frames,
                fpc,
                step,
                self.num_clips,
                self.random_clip_sampling,
                self.allow_clip_overlap,
                rng,
                filter_short_videos=self.filter_short_videos,
            )
        except TooShort as e:
            raise TooShort(f"{path}: {e}") from None
        needed = (fpc - 1) * step + 1  # the last frame a clip from frame 0 reads, plus one
        if num_frames < needed:
            self._note_padded(path, num_frames, fpc, needed, step)
        # One read for all clips: the decoder visits the file once, in order.
        frames = torch.from_numpy(self.decoder.read(path, np.concatenate(clips), self.resize_on_decode))
        views = frames.split(fpc)
        out: list[object] = list(views) if self.transform is None else [self.transform(clip) for clip in views]
        return (out[0] if self.num_clips == 1 else out), int(self.targets[index])

    def _note_padded(self, path: Path, num_frames: int, fpc: int, needed: int, step: int) -> None:
        key = str(path)
        if key in self.padded_files:
            return
        self.padded_files[key] = num_frames
        logger.warning(
            "%s holds %d frames but a clip of %d frames every %d needs %d: padding it by repeating its last frame "
            "(%d short videos padded so far in this process; filter_short_videos skips them instead)",
            key, num_frames, fpc, step, needed, len(self.padded_files),
        )  # fmt: skip


def _sample_weights(sizes: list[int], weights: Sequence[float] | None, names: list[Path]) -> np.ndarray:
    if weights is None:
        weights = sizes  # every video counts the same
    elif len(weights) != len(sizes):
        raise ValueError(f"{len(weights)} datasets_weights for {len(sizes)} annotation files ({names})")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"datasets_weights must be finite, >= 0 and not all 0, got {list(weights)}")
    per_sample = w / w.sum() / np.asarray(sizes, dtype=np.float64)
    return np.repeat(per_sample, sizes)
