"""EPIC-KITCHENS-100 for action anticipation: the annotation CSVs, the video layout and the observed clips.

Annotations are the official CSVs (``EPIC_100_train.csv``, ``EPIC_100_validation.csv``): one row per action
segment with, among others, ``narration_id, participant_id, video_id, start_frame, stop_frame, verb, verb_class,
noun, noun_class``. Only ``video_id, start_frame, stop_frame, verb_class, noun_class`` are required (what the
official V-JEPA 2 reader uses); the participant is the part of ``video_id`` before its first ``_`` (``P01_11`` ->
``P01``), as officially. Frames are numbered in the videos' own frame rate (50 or 60 fps for EK100).

Videos lie under a root, ``base_path``, in one of the two layouts the official code knows (``file_format``):
``0``: ``<base_path>/<participant>/videos/<video_id>.MP4``; ``1``: ``<base_path>/<participant>/<video_id>.MP4``.

The observed clip of a segment (:func:`anticipation_clip_indices`): ``frames_per_clip`` frames at ``fps`` frames
per second that end ``t_a`` seconds (the anticipation time) before an *anchor* frame, ``anchor = p * start_frame +
(1 - p) * stop_frame`` for an anticipation point ``p`` in ``[0, 1]``. The official code draws ``p`` from
``train_anticipation_point`` for training and uses ``p = 0`` for validation, so its validation clips end ``t_a``
before the action *ends* (upstream vjepa2 issue #173); the standard EK100 protocol ends them ``t_a`` before the
action *starts*, which is ``p = 1``.

Classes (:class:`ActionClasses`): verbs, nouns and actions (``(verb_class, noun_class)`` pairs) seen in training,
numbered in the official order; validation segments of an action never seen in training are dropped, as
officially.
"""

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jepa.data.robust import OnError, RobustDataset
from jepa.video.decoding import VideoDecoder, make_decoder
from jepa.video.transforms import Clip

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("video_id", "start_frame", "stop_frame", "verb_class", "noun_class")
FILE_FORMATS = (0, 1)


@dataclass(frozen=True)
class ActionSegment:
    """One annotated action: frames ``[start_frame, stop_frame]`` of video ``video_id``, its EK100 verb and noun
    classes (the CSV's ``verb_class`` / ``noun_class``) and, when the CSV has one, its ``narration_id``."""

    video_id: str
    start_frame: int
    stop_frame: int
    verb: int
    noun: int
    narration_id: str | None = None

    @property
    def participant_id(self) -> str:
        """The participant, read from the video id as the official code does (``P01_11`` -> ``P01``)."""
        return self.video_id.split("_")[0]

    @property
    def action(self) -> tuple[int, int]:
        return self.verb, self.noun


def _int_field(row: dict[str, str], key: str, where: str) -> int:
    value = row[key]
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: column {key} holds {value!r}, expected an integer") from None


def read_ek100_csv(path: str | Path) -> list[ActionSegment]:
    """The action segments of an EK100 annotation CSV (with a header row), in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a required column (:data:`REQUIRED_COLUMNS`) is missing, a value is not an integer, a segment
            ends before it starts, or the file lists no segment; the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EK100 annotation file {path} does not exist")
    segments = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; the header has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            segment = ActionSegment(
                video_id=row["video_id"],
                start_frame=_int_field(row, "start_frame", where),
                stop_frame=_int_field(row, "stop_frame", where),
                verb=_int_field(row, "verb_class", where),
                noun=_int_field(row, "noun_class", where),
                narration_id=row.get("narration_id") or None,
            )
            if segment.stop_frame < segment.start_frame or segment.start_frame < 0:
                raise ValueError(f"{where}: frames {segment.start_frame}..{segment.stop_frame} are not a segment")
            segments.append(segment)
    if not segments:
        raise ValueError(f"EK100 annotation file {path} lists no segments")
    return segments


def ek100_video_path(base_path: str | Path, video_id: str, file_format: int = 1) -> Path:
    """Where video ``video_id`` lies under ``base_path`` in layout ``file_format`` (see the module docstring)."""
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be 0 or 1, got {file_format!r}")
    participant = video_id.split("_")[0]
    folder = Path(base_path) / participant
    return (folder / "videos" if file_format == 0 else folder) / f"{video_id}.MP4"


@dataclass(frozen=True)
class ActionClasses:
    """Contiguous class indices of the verbs, nouns and ``(verb, noun)`` actions seen in training.

    The numbering is the official code's, so that the rows of a released probe's heads line up: each index is the
    position in Python's iteration order of the set of training values (a set of ``(verb, noun)`` pairs built in
    CSV order; its verbs and nouns). That order is deterministic (ints and tuples of ints hash the same in every
    process and Python >= 3.8); for EK100's verbs (0-96) and nouns (0-299) it is ascending order (a set of small
    ints iterates in order when its table outgrows the largest one), for the actions it is the tuples' hash order.
    """

    verbs: dict[int, int]
    nouns: dict[int, int]
    actions: dict[tuple[int, int], int]

    @classmethod
    def from_training(cls, segments: Sequence[ActionSegment]) -> "ActionClasses":
        pairs = set([s.action for s in segments])  # noqa: C403  (the official construction, for its order)
        verbs = set([v for v, _ in pairs])  # noqa: C403
        nouns = set([n for _, n in pairs])  # noqa: C403
        return cls(
            verbs={v: i for i, v in enumerate(verbs)},
            nouns={n: i for i, n in enumerate(nouns)},
            actions={a: i for i, a in enumerate(pairs)},
        )

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(verbs, nouns, actions)``: the widths of the probe's three heads."""
        return len(self.verbs), len(self.nouns), len(self.actions)

    def keep(self, segments: Sequence[ActionSegment]) -> list[ActionSegment]:
        """The segments whose action was seen in training (the official filter of the validation split)."""
        return [s for s in segments if s.action in self.actions]

    def labels(self, segment: ActionSegment) -> tuple[int, int, int]:
        """``(verb, noun, action)`` class indices of ``segment`` (KeyError for an action not seen in training)."""
        return self.verbs[segment.verb], self.nouns[segment.noun], self.actions[segment.action]

    def to_dict(self) -> dict[str, list]:
        """The EK100 classes behind each index, for checkpoints: ``verbs[i]`` is the ``verb_class`` of index ``i``."""
        return {
            "verbs": sorted(self.verbs, key=self.verbs.__getitem__),
            "nouns": sorted(self.nouns, key=self.nouns.__getitem__),
            "actions": [list(a) for a in sorted(self.actions, key=self.actions.__getitem__)],
        }


def anticipation_clip_indices(
    start_frame: int,
    stop_frame: int,
    *,
    video_fps: float,
    frames_per_clip: int,
    fps: float,
    anticipation_time: float,
    anticipation_point: float,
) -> np.ndarray:
    """Frame indices ``[frames_per_clip]`` of the clip observed before an action, as the official code picks them.

    With ``step = int(video_fps / fps)`` frames between clip frames and the anchor ``a = int(p * start_frame +
    (1 - p) * stop_frame - int(anticipation_time * video_fps))`` (``p``: ``anticipation_point``), the clip is
    ``a - frames_per_clip * step, ..., a - step``: it ends ``anticipation_time`` seconds before the anchor, which
    itself is the action's stop frame for ``p = 0`` and its start frame for ``p = 1``. Frames before the video's
    start are frame 0 (the first frame repeated).

    Raises:
        ValueError: the video's frame rate is below ``fps`` (no whole step), or an argument is out of range.
    """
    if not 0.0 <= anticipation_point <= 1.0 or anticipation_time < 0 or frames_per_clip < 1 or fps <= 0:
        raise ValueError(
            f"need 0 <= anticipation_point <= 1, anticipation_time >= 0, frames_per_clip >= 1, fps > 0; got "
            f"{anticipation_point}, {anticipation_time}, {frames_per_clip}, {fps}"
        )
    step = int(video_fps / fps)
    if step < 1:
        raise ValueError(f"the video runs at {video_fps:g} fps, below the {fps:g} frames per second a clip samples")
    p = anticipation_point
    anchor = int(start_frame * p + (1 - p) * stop_frame - int(anticipation_time * video_fps))
    indices = np.arange(anchor - frames_per_clip * step, anchor, step, dtype=np.int64)
    indices[indices < 0] = 0
    return indices


class AnticipationClips(RobustDataset):
    """The observed clip of every action segment: ``dataset[i] = (clip, labels, anticipation_time, j)``.

    ``labels`` is int64 ``[3]`` (verb, noun, action class indices of :class:`ActionClasses`), ``anticipation_time``
    the seconds between the clip's end and its anchor (a float32 scalar tensor), ``j`` the index actually loaded
    (see :class:`jepa.data.RobustDataset`). The anticipation time and point of each sample are drawn uniformly from
    their ranges with torch's global generator, which :class:`jepa.data.sampling.SeededDataset` seeds per sample
    (a range ``(x, x)`` is the constant ``x``). A video that is missing, cannot be decoded or is shorter than the
    clip's frames is a read error: counted, listed and skipped or replaced according to ``on_error``.

    Args:
        segments: the action segments (see :func:`read_ek100_csv`; validation: filtered by :meth:`ActionClasses.keep`).
        classes: the class indices.
        base_path, file_format: where the videos lie (:func:`ek100_video_path`).
        frames_per_clip, fps: the clip's frames and their rate.
        anticipation_time: ``(min, max)`` seconds between the clip's end and the anchor.
        anticipation_point: ``(min, max)`` of ``p`` in :func:`anticipation_clip_indices`.
        transform: applied to the uint8 clip ``[T, H, W, 3]``; None returns that tensor.
        decoder: ``"auto"``, ``"decord"``, ``"pyav"`` or a :class:`jepa.video.decoding.VideoDecoder`.
        on_error, seed: see :class:`jepa.data.RobustDataset`.
    """

    def __init__(
        self,
        segments: Sequence[ActionSegment],
        classes: ActionClasses,
        *,
        base_path: str | Path,
        file_format: int,
        frames_per_clip: int,
        fps: float,
        anticipation_time: tuple[float, float],
        anticipation_point: tuple[float, float],
        transform=None,
        decoder: str | VideoDecoder = "auto",
        on_error: OnError = "next",
        seed: int = 0,
    ) -> None:
        super().__init__(on_error=on_error, seed=seed)
        for name, (lo, hi) in (("anticipation_time", anticipation_time), ("anticipation_point", anticipation_point)):
            if not 0 <= lo <= hi or (name == "anticipation_point" and hi > 1):
                raise ValueError(f"{name} must be a range 0 <= min <= max{' <= 1' * (name != 'anticipation_time')}, "
                                 f"got {(lo, hi)}")  # fmt: skip
        self.segments = list(segments)
        self.classes = classes
        self.labels = torch.tensor([classes.labels(s) for s in self.segments], dtype=torch.int64).reshape(-1, 3)
        self.paths = [ek100_video_path(base_path, s.video_id, file_format) for s in self.segments]
        self.frames_per_clip = frames_per_clip
        self.fps = fps
        self.anticipation_time = anticipation_time
        self.anticipation_point = anticipation_point
        self.transform = transform
        self.decoder = make_decoder(decoder) if isinstance(decoder, str) else decoder

    def __len__(self) -> int:
        return len(self.segments)

    def sample_path(self, index: int) -> str:
        s = self.segments[index]
        return f"{self.paths[index]} [{s.narration_id or f'frames {s.start_frame}-{s.stop_frame}'}]"

    @staticmethod
    def _draw(bounds: tuple[float, float]) -> float:
        lo, hi = bounds
        return lo if lo == hi else lo + (hi - lo) * float(torch.rand(()))

    def load(self, index: int) -> tuple[Clip | Tensor, Tensor, Tensor]:
        s, path = self.segments[index], self.paths[index]
        at, ap = self._draw(self.anticipation_time), self._draw(self.anticipation_point)
        indices = anticipation_clip_indices(
            s.start_frame, s.stop_frame, video_fps=self.decoder.fps(path), frames_per_clip=self.frames_per_clip,
            fps=self.fps, anticipation_time=at, anticipation_point=ap,
        )  # fmt: skip
        clip = torch.from_numpy(self.decoder.read(path, indices))
        if self.transform is not None:
            clip = self.transform(clip)
        return clip, self.labels[index], torch.tensor(at, dtype=torch.float32)
