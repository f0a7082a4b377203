"""Anticipation digits: a tiny built-in action-anticipation task in the EPIC-KITCHENS-100 format.

Each video shows a real digit gliding in one direction for ``observed_frames`` frames; then the *action* starts:
the digit turns into the next digit (``(d + 1) % 10``) and moves on in the direction 90 degrees clockwise of its
old one (right -> down -> left -> up -> right) for ``action_frames`` frames. The action's verb is the new
direction (0 right, 1 left, 2 down, 3 up) and its noun the new digit (0-9), so both labels describe what happens
*after* the frames before the action: they are determined by what those frames show (the old digit and
direction) but never visible in them, which is what an anticipation probe must bridge. The action class is the
``(verb, noun)`` pair (40 of them).

Files are written as EK100 is laid out (``file_format: 1``), so the normal EK100 reader
(:mod:`jepa.video.epickitchens`) and decoder read them: ``<out_dir>/videos/<participant>/<video_id>.MP4`` and an
annotation CSV ``<out_dir>/<split>.csv`` with the EK100 columns, one action per video (``start_frame`` =
``observed_frames``, ``stop_frame`` = the last frame). Train videos belong to participant ``P90``, validation videos
to ``P91``, and the two never share a source digit (:class:`jepa.data.digits.DigitSource`'s split).

Rendering and encoding are the moving digits' (:func:`jepa.video.moving_digits.render_moving_digit`, PyAV): each
part of a video is a straight path at constant speed (``U(0.5, 1)`` px per frame) centred on the canvas.
"""

import csv
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jepa.data.digits import DigitSource
from jepa.video.moving_digits import DIRECTIONS, _encoder_settings, _is_complete, _write_mp4, render_moving_digit

# Motion label -> the label of the direction 90 degrees clockwise (labels: 0 right, 1 left, 2 down, 3 up).
CLOCKWISE = {0: 2, 2: 1, 1: 3, 3: 0}
PARTICIPANTS = {"train": "P90", "val": "P91"}
EK100_COLUMNS = ("narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
                 "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
                 "noun_class")  # fmt: skip
_DIGIT_SIDE = {"mnist5k": 28, "digits": 16}
_SPEED = (0.5, 1.0)  # pixels per frame
_FORMAT_VERSION = 1


def next_action(digit: int, direction: int) -> tuple[int, int]:
    """``(verb, noun)`` of the action that follows a digit moving in ``direction``: the new direction and digit."""
    return CLOCKWISE[direction], (digit + 1) % 10


def _timestamp(frame: int, fps: int) -> str:
    seconds = frame / fps
    return f"{int(seconds // 3600):02d}:{int(seconds // 60 % 60):02d}:{seconds % 60:05.2f}"


def render_anticipation_video(
    before: np.ndarray, after: np.ndarray, *, size: int, direction: int, observed_frames: int, action_frames: int,
    speeds: tuple[float, float], offsets: tuple[int, int],
) -> np.ndarray:  # fmt: skip
    """uint8 ``[observed_frames + action_frames, size, size]``: digit ``before`` moving in ``direction``, then
    digit ``after`` moving 90 degrees clockwise of it; each part at its speed (px per frame) and offset across its
    motion (see :func:`jepa.video.moving_digits.render_moving_digit`)."""
    first = render_moving_digit(before, size, observed_frames, direction, speeds[0] * (observed_frames - 1), offsets[0])
    second = render_moving_digit(
        after, size, action_frames, CLOCKWISE[direction], speeds[1] * (action_frames - 1), offsets[1]
    )
    return np.concatenate([first, second])


def make_anticipation_digits(
    out_dir: str | Path,
    *,
    num_videos: int,
    split: Literal["train", "val"] = "train",
    observed_frames: int = 16,
    action_frames: int = 8,
    size: int = 32,
    fps: int = 8,
    source: Literal["mnist5k", "digits"] = "digits",
    seed: int = 0,
    codec: Literal["libx264", "mpeg4"] = "libx264",
) -> Path:
    """Write ``num_videos`` anticipation-digit videos of ``split`` and their EK100 annotation CSV under
    ``out_dir``, unless already there (same parameters recorded in ``<split>_manifest.json``, every file present).

    Given ``seed`` the videos are deterministic: ``seed`` and ``split`` seed the digits drawn (shuffled passes over
    the split), the balanced directions, the speeds and the offsets. Returns the CSV's path; the videos' root
    (the EK100 ``base_path``) is ``out_dir / "videos"``.
    """
    d = _DIGIT_SIDE.get(source)
    if d is None or split not in PARTICIPANTS:
        raise ValueError(f"source must be one of {', '.join(_DIGIT_SIDE)} and split train or val; got {source!r}, "
                         f"{split!r}")  # fmt: skip
    if num_videos < 1 or observed_frames < 2 or action_frames < 2 or fps < 1 or size % 2 or size < d:
        raise ValueError(
            f"need num_videos >= 1, observed_frames >= 2, action_frames >= 2, fps >= 1 and an even size >= {d}; got "
            f"{num_videos}, {observed_frames}, {action_frames}, {fps}, {size}"
        )
    out = Path(out_dir).resolve()
    csv_path, manifest_path = out / f"{split}.csv", out / f"{split}_manifest.json"
    params = dict(format_version=_FORMAT_VERSION, num_videos=num_videos, split=split, observed_frames=observed_frames,
                  action_frames=action_frames, size=size, fps=fps, source=source, seed=seed, codec=codec)  # fmt: skip
    if _is_complete(manifest_path, params, (csv_path,)):
        return csv_path
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # an interrupted run must not look complete to the next one
    participant = PARTICIPANTS[split]
    (out / "videos" / participant).mkdir(parents=True, exist_ok=True)
    digits = DigitSource(source, split=split, image_size=d)
    rng = np.random.default_rng([seed, list(PARTICIPANTS).index(split), 17])
    videos = _write_videos(out / "videos" / participant, digits, rng, params, _encoder_settings(codec)[0])
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EK100_COLUMNS)
        writer.writeheader()
        writer.writerows(v["row"] for v in videos)
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(params=params, videos=videos), indent=1))
    tmp.replace(manifest_path)
    return csv_path


def _write_videos(
    folder: Path, digits: DigitSource, rng: np.random.Generator, params: dict[str, Any], codec: str
) -> list[dict[str, Any]]:
    """Render and encode the videos of one split into ``folder``; returns each one's manifest entry (its path, its
    EK100 row and what was drawn for it). Draws from ``rng``, in order: the digit order, the balanced directions,
    the speeds, the offsets, and per video the source index of its second digit."""
    n, size = params["num_videos"], params["size"]
    p_frames, a_frames, fps = params["observed_frames"], params["action_frames"], params["fps"]
    side = digits.image_size
    order = rng.permutation(len(digits))
    directions = rng.permutation(np.arange(n) % len(DIRECTIONS))
    speeds = rng.uniform(*_SPEED, size=(n, 2))
    offsets = rng.integers(0, size - side + 1, size=(n, 2))
    by_class = {c: np.flatnonzero(digits.targets == c) for c in range(10)}
    videos = []
    for k in range(n):
        index = int(order[k % len(order)])
        digit, direction = int(digits.targets[index]), int(directions[k])
        verb, noun = next_action(digit, direction)
        after = int(rng.choice(by_class[noun]))
        frames = render_anticipation_video(
            digits.pixels(index), digits.pixels(after), size=size, direction=direction, observed_frames=p_frames,
            action_frames=a_frames, speeds=(float(speeds[k, 0]), float(speeds[k, 1])),
            offsets=(int(offsets[k, 0]), int(offsets[k, 1])),
        )  # fmt: skip
        video_id = f"{folder.name}_{k:04d}"
        path = folder / f"{video_id}.MP4"
        _write_mp4(path, frames, fps, codec)
        start, stop = p_frames, p_frames + a_frames - 1
        row = dict(
            narration_id=f"{video_id}_0", participant_id=folder.name, video_id=video_id,
            narration_timestamp=_timestamp(start, fps), start_timestamp=_timestamp(start, fps),
            stop_timestamp=_timestamp(stop, fps), start_frame=start, stop_frame=stop,
            narration=f"{DIRECTIONS[verb]} {noun}", verb=DIRECTIONS[verb], verb_class=verb, noun=str(noun),
            noun_class=noun,
        )  # fmt: skip
        sources = [int(digits.source_indices[index]), int(digits.source_indices[after])]
        videos.append(dict(path=str(path), row=row, digit=digit, direction=direction, source_indices=sources))
    return videos


# The videos generated for ``data.dataset: anticipation_digits``: a few seconds, once.
STANDARD_VIDEOS = {"train": 200, "val": 100}


def standard_anticipation_digits(
    root_path: str | Path | None, *, size: int, split: Literal["train", "val"]
) -> tuple[Path, Path]:
    """The standard anticipation-digit set of ``split`` (200 train / 100 val videos of 16 + 8 frames at 8 fps,
    ``size`` px) under ``root_path / "<size>px"`` (default root ``runs/data/anticipation_digits``), generated on
    first use; returns ``(base_path, annotation CSV)`` in the EK100 layout ``file_format: 1``."""
    root = Path(root_path or "runs/data/anticipation_digits") / f"{size}px"
    csv_path = make_anticipation_digits(root, num_videos=STANDARD_VIDEOS[split], size=size, split=split)
    return root / "videos", csv_path
