"""Extract frozen-encoder features of a video list or an image folder to one array, resumably.

    python -m jepa.extract --checkpoint vitl16.pth.tar --data videos.csv --out feats.npy --num-frames 16
    python -m jepa.extract --hub vjepa2_vitl --data videos.csv --out feats.npy --frames-per-clip 16
    python -m jepa.extract --checkpoint ijepa.pth.tar --model vit_huge --patch-size 14 --data val/ --out val.pt

Inputs: an official annotation CSV (``<video path> <label>`` per line) or an ImageFolder tree
(``root/<class>/<image>``). Every video is read as clips of ``--frames-per-clip`` frames taken every
``--frame-step`` frames: by default windows that slide over the whole video (``--window-stride``, default one clip
span: adjacent clips), or ``--clips-per-video N`` clips centred in N equal segments (V-JEPA's evaluation).
Clips and images get the evaluation preprocessing (:class:`jepa.preprocess.Preprocess`).

Outputs, for ``--out F`` (``.npy`` or ``.pt``):
  * ``F``: float32 features, one row per clip (or image): ``[rows, D]`` with ``--pool mean``, ``[rows, N, D]``
    tokens with ``--pool none``;
  * ``F.index.csv``: per row its input: ``row, sample, path, label, clip, start_frame`` (``start_frame`` is empty
    for images);
  * ``F.json``: the settings, the number of rows, and every input that could not be read (path and error).

Resuming: inputs are processed in chunks of ``--chunk-size`` files, each saved atomically under ``F.partial/``
once done; a rerun with the same settings skips the saved chunks, and a rerun after completion does nothing.
Unreadable files are skipped, logged with their path, counted, and listed in ``F.json``; when more than half of the
files fail the run stops with an error.
"""

import argparse
import csv
import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch import Tensor

from jepa.checkpoint import CheckpointError, atomic_write, load_encoder, read_checkpoint, save_checkpoint
from jepa.config.pretrain import model_spec_from_config_dict
from jepa.config.spec import ARCHITECTURE_KEYS, VIT_SIZES, EncoderSpec, spec_differences, with_architecture_of
from jepa.data import READ_ERRORS, SkipCounter
from jepa.features import POOLINGS, pool
from jepa.image.datasets import ImageFolder
from jepa.models.vision_transformer import VisionTransformer
from jepa.preprocess import Preprocess
from jepa.runtime.precision import resolve_dtype
from jepa.video.datasets import VideoDataset, clip_indices, sliding_clip_indices
from jepa.video.decoding import VideoDecoder

logger = logging.getLogger("jepa.extract")  # also when run as __main__

INDEX_COLUMNS = ("row", "sample", "path", "label", "clip", "start_frame")
_FORMAT_VERSION = 1

# What a data set's load(i) gives extraction: clips [K, ...] (or one image as [1, ...]), the label, and the start
# frame of each clip (-1 for an image).
Item = tuple[Tensor, int, list[int]]


class SkippedInput(TypedDict):
    """An input that could not be read, as the summary lists it."""

    sample: int
    path: str
    error: str


class VideoClipDataset(VideoDataset):
    """Every clip that feature extraction reads from each video of an annotation CSV.

    ``load(i)`` returns ``(clips, label, starts)``: ``clips`` ``[K, 3, F, S, S]`` (transformed) or uint8
    ``[K, F, H, W, 3]`` without a transform, and the first frame of each clip. With ``clips_per_video=None`` the clips
    slide over the whole video (:func:`jepa.video.datasets.sliding_clip_indices`, ``K`` depends on the length);
    with ``N`` they are the N clips of V-JEPA's evaluation (:func:`jepa.video.datasets.clip_indices`, centred in N
    equal segments).
    """

    def __init__(
        self,
        csv_path: str | Path,
        frames_per_clip: int,
        frame_step: int,
        clips_per_video: int | None = None,
        window_stride: int | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
        decoder: str | VideoDecoder = "auto",
    ) -> None:
        super().__init__(
            [csv_path], frames_per_clip=frames_per_clip, frame_step=frame_step, num_clips=clips_per_video or 1,
            random_clip_sampling=False, transform=transform, decoder=decoder,
        )  # fmt: skip
        self.clips_per_video = clips_per_video
        self.window_stride = window_stride

    # A deliberate change of the sample layout: extract_features reads these data sets through load() only.
    def load(self, index: int) -> Item:  # type: ignore[override]
        """``(clips, label, start frames)`` of video ``index`` (see the class documentation)."""
        path = self.paths[index]
        n = self.decoder.num_frames(path)
        if self.clips_per_video is None:
            clips = sliding_clip_indices(n, self.frames_per_clip, self.frame_step, self.window_stride)
        else:
            clips = clip_indices(n, self.frames_per_clip, self.frame_step, self.clips_per_video, False, False)
        frames = torch.from_numpy(self.decoder.read(path, np.concatenate(clips)))
        out = list(frames.split(self.frames_per_clip))
        if self.transform is not None:
            out = [self.transform(c) for c in out]
        return torch.stack(out), int(self.targets[index]), [int(c[0]) for c in clips]


class ImageItems(ImageFolder):
    """An ImageFolder whose ``load(i)`` returns ``(image[None], label, [-1])``, the layout of
    :class:`VideoClipDataset` (one "clip" per image, no start frame)."""

    # A deliberate change of the sample layout, as VideoClipDataset's.
    def load(self, index: int) -> Item:  # type: ignore[override]
        """``(image [1, 3, S, S], label, [-1])`` of image ``index``."""
        image, label = super().load(index)
        if not isinstance(image, Tensor):
            raise TypeError(f"ImageItems needs a transform that returns a tensor [3, S, S], got {type(image).__name__}")
        return image.unsqueeze(0), label, [-1]

    @property
    def paths(self) -> list[str]:
        """Image path per index."""
        return [p for p, _ in self.samples]


class _Loads(torch.utils.data.Dataset):
    """Loads files ``indices`` of a data set and hands back failures instead of raising, so that a failed file is
    skipped and counted (never replaced by another file, which would shift rows)."""

    def __init__(self, dataset: VideoClipDataset | ImageItems, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, Item | BaseException]:
        i = self.indices[k]
        try:
            return i, self.dataset.load(i)
        except READ_ERRORS as e:
            return i, e


@dataclass
class ExtractionResult:
    """What :func:`extract_features` wrote: the feature file, its row index and summary, and the counts."""

    out: Path
    index: Path
    summary: Path
    rows: int
    skipped: list[SkippedInput] = field(default_factory=list)
    computed_chunks: int = 0
    reused_chunks: int = 0


class Progress:
    """A log line every ``interval`` seconds (and at the end): files done, rows, rate and time left."""

    def __init__(self, total: int, unit: str, done: int = 0, interval: float = 10.0) -> None:
        self.total, self.unit, self.interval = total, unit, interval
        self.start_done = self.done = done
        self.rows = 0
        self.skipped = 0
        self.t0 = self.last = time.monotonic()

    def update(self, files: int, rows: int, skipped: int = 0, force: bool = False) -> None:
        """Count ``files`` more files done (``skipped`` of them unreadable) that gave ``rows`` rows; log a line when
        ``interval`` seconds have passed since the last one, or when ``force``."""
        self.done += files
        self.rows += rows
        self.skipped += skipped
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            logger.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """``"12/40 videos (30%), 96 rows, 1.5 videos/s, ETA 0:00:19, 0 skipped"``."""
        elapsed = max((now or time.monotonic()) - self.t0, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        left = self.total - self.done
        eta = _hms(left / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / max(self.total, 1)
        return (
            f"{self.done}/{self.total} {self.unit} ({pct:.0f}%), {self.rows} rows this run, "
            f"{rate:.2f} {self.unit}/s, ETA {eta}, {self.skipped} skipped"
        )


def _hms(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def sidecar_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """``(index CSV, summary JSON, folder of partial chunks)`` that go with the feature file ``out``."""
    out = Path(out)
    index, summary, partial = (out.with_name(out.name + suffix) for suffix in (".index.csv", ".json", ".partial"))
    return index, summary, partial


def _check_settings(found: Mapping[str, object], expected: Mapping[str, object], where: Path) -> None:
    diff = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    if diff:
        details = "; ".join(f"{k}: {found.get(k)!r} there, {expected.get(k)!r} now" for k in diff)
        raise ValueError(
            f"{where} was made with other settings ({details}); use another --out, or --overwrite to start afresh"
        )


@torch.no_grad()
def _encode(encoder: VisionTransformer, clips: list[Tensor], how: str, device: torch.device, dtype) -> Tensor:
    x = torch.stack(clips).to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        tokens = encoder.forward_features(x)
    return pool(tokens, how).float().cpu()


def _chunks(n: int, size: int) -> Iterator[tuple[int, int, int]]:
    for c, start in enumerate(range(0, n, size)):
        yield c, start, min(start + size, n)


def extract_features(
    encoder: VisionTransformer,
    dataset: VideoClipDataset | ImageItems,
    out: str | Path,
    *,
    pool_mode: str = "mean",
    batch_size: int = 8,
    chunk_size: int = 64,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    num_workers: int = 0,
    settings: Mapping[str, object] | None = None,
    overwrite: bool = False,
    log_interval: float = 10.0,
    max_skip_fraction: float = 0.5,
) -> ExtractionResult:
    """Encode every clip (or image) of ``dataset`` with ``encoder`` and write the features to ``out``.

    See the module documentation for the files written and how resuming works.

    Args:
        encoder: a frozen encoder (it is put in eval mode and moved to ``device``).
        dataset: a :class:`VideoClipDataset` or :class:`ImageItems`, with the preprocessing as its transform.
        out: the feature file, ``.npy`` (NumPy) or ``.pt`` (a torch tensor).
        pool_mode: ``"mean"`` (one ``[D]`` vector per row) or ``"none"`` (the tokens ``[N, D]``).
        batch_size: clips (or images) per forward pass.
        chunk_size: files per saved chunk (the unit of resuming).
        device: where the encoder runs.
        dtype: autocast dtype (``torch.bfloat16``, ...), or None for float32; features are saved as float32.
        num_workers: DataLoader processes that decode and preprocess.
        settings: what produced the features (model, checkpoint, clip sampling, ...); stored in the summary, and a
            rerun whose settings differ from the saved chunks' is an error rather than a mix of features.
        overwrite: discard previous outputs and partial chunks.
        log_interval: seconds between progress lines.
        max_skip_fraction: stop when more than this fraction of at least 20 files failed to load.
    """
    out = Path(out)
    _check_arguments(encoder, dataset, out, pool_mode, batch_size, chunk_size)
    video = isinstance(dataset, VideoClipDataset)
    n = len(dataset)
    paths = [str(p) for p in dataset.paths]
    full_settings = {
        "format_version": _FORMAT_VERSION,
        **dict(settings or {}),
        "pool": pool_mode,
        "num_inputs": n,
        "inputs": "videos" if video else "images",
        "chunk_size": chunk_size,
    }
    full_settings = json.loads(json.dumps(full_settings, default=str))  # as it reads back from JSON
    complete = _start_outputs(out, full_settings, overwrite)
    if complete is not None:
        return complete
    partial = sidecar_paths(out)[2]

    chunks = list(_chunks(n, chunk_size))
    chunk_file = {c: partial / f"chunk-{c:06d}.pt" for c, _, _ in chunks}
    done = {c for c, _, _ in chunks if chunk_file[c].exists()}
    files_done = sum(end - start for c, start, end in chunks if c in done)
    if done:
        logger.info("%s: resuming; %d of %d chunks (%d files) already done", out, len(done), len(chunks), files_done)
    device = torch.device(device)
    encoder = encoder.eval().to(device)
    unit = "videos" if video else "images"
    progress = Progress(n, unit, done=files_done, interval=log_interval)
    counter = SkipCounter()
    computed = 0
    for c, start, end in chunks:
        if c in done:
            continue
        feats, rows, skipped = _run_chunk(
            encoder, dataset, range(start, end), paths, pool_mode, batch_size, device, dtype, num_workers,
            counter, progress, max_skip_fraction,
        )  # fmt: skip
        save_checkpoint({"features": feats, "rows": rows, "skipped": skipped}, chunk_file[c])
        computed += 1
    progress.update(0, 0, force=True)
    return _finish(out, chunks, chunk_file, full_settings, computed, len(done))


def _check_arguments(encoder, dataset, out: Path, pool_mode: str, batch_size: int, chunk_size: int) -> None:
    if out.suffix not in (".npy", ".pt"):
        raise ValueError(f"--out must end in .npy or .pt, got {out}")
    if pool_mode not in POOLINGS:
        raise ValueError(f"unknown pooling {pool_mode!r}; valid: {', '.join(POOLINGS)}")
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if isinstance(dataset, VideoClipDataset) and not encoder.is_video:
        raise ValueError("this is an image encoder (num_frames == 1); it cannot encode video clips")


def _start_outputs(out: Path, settings: Mapping[str, object], overwrite: bool) -> ExtractionResult | None:
    """Clear the outputs (``overwrite``), or return the result of a complete earlier run with the same settings;
    otherwise make the folder of partial chunks, whose settings must be ``settings``, and return None."""
    index_path, summary_path, partial = sidecar_paths(out)
    if overwrite:
        shutil.rmtree(partial, ignore_errors=True)
        for p in (out, index_path, summary_path):
            p.unlink(missing_ok=True)
    elif out.exists() and summary_path.exists() and not partial.exists():
        summary = json.loads(summary_path.read_text())
        _check_settings(summary.get("settings", {}), settings, summary_path)
        logger.info("%s is complete (%d rows); nothing to do (--overwrite redoes it)", out, summary["rows"])
        return ExtractionResult(out, index_path, summary_path, summary["rows"], summary.get("skipped", []))
    partial.mkdir(parents=True, exist_ok=True)
    settings_file = partial / "settings.json"
    if settings_file.exists():
        _check_settings(json.loads(settings_file.read_text()), settings, settings_file)
    else:
        atomic_write(settings_file, lambda f: f.write(json.dumps(settings, indent=1)), mode="w")
    return None


def _run_chunk(
    encoder, dataset, indices, paths, pool_mode, batch_size, device, dtype, num_workers, counter, progress,
    max_skip_fraction,
) -> tuple[Tensor, list[list], list[SkippedInput]]:  # fmt: skip
    loader = torch.utils.data.DataLoader(
        _Loads(dataset, indices), batch_size=None, shuffle=False, num_workers=num_workers
    )
    rows: list[list] = []
    skipped: list[SkippedInput] = []
    outs: list[Tensor] = []
    pending: list[Tensor] = []
    for i, loaded in loader:
        if isinstance(loaded, BaseException):
            counter.record(i, paths[i], loaded)
            counter.check(max_skip_fraction, min_seen=20)
            skipped.append({"sample": i, "path": paths[i], "error": f"{type(loaded).__name__}: {loaded}"})
            progress.update(1, 0, skipped=1)
            continue
        counter.record_ok()
        clips, label, starts = loaded
        for k, start in enumerate(starts):
            rows.append([i, paths[i], label, k, start])
            pending.append(clips[k])
            if len(pending) == batch_size:
                outs.append(_encode(encoder, pending, pool_mode, device, dtype))
                pending = []
        progress.update(1, len(starts))
    if pending:
        outs.append(_encode(encoder, pending, pool_mode, device, dtype))
    feats = torch.cat(outs) if outs else torch.empty(0)
    return feats, rows, skipped


def _finish(out, chunks, chunk_file, settings, computed, reused) -> ExtractionResult:
    index_path, summary_path, partial = sidecar_paths(out)
    feats, rows, skipped = [], [], []
    for c, _, _ in chunks:
        part = read_checkpoint(chunk_file[c])
        if part["features"].numel():
            feats.append(part["features"])
        rows.extend(part["rows"])
        skipped.extend(part["skipped"])
    if not feats:
        raise RuntimeError(f"no input could be read; first failures: {skipped[:5]}")
    features = torch.cat(feats)
    if out.suffix == ".npy":
        atomic_write(out, lambda f: np.save(f, features.numpy()))
    else:
        atomic_write(out, lambda f: torch.save(features, f))

    def write_index(f) -> None:
        w = csv.writer(f)
        w.writerow(INDEX_COLUMNS)
        for r, (sample, path, label, clip, start) in enumerate(rows):
            w.writerow([r, sample, path, label, clip, "" if start < 0 else start])

    atomic_write(index_path, write_index, mode="w")
    summary = {
        "settings": settings,
        "rows": len(rows),
        "feature_shape": list(features.shape),
        "skipped": skipped,
        "index": index_path.name,
    }
    atomic_write(summary_path, lambda f: f.write(json.dumps(summary, indent=1)), mode="w")
    shutil.rmtree(partial)
    if skipped:
        listing = "\n  ".join(f"{s['path']}: {s['error']}" for s in skipped)
        logger.warning("%d input(s) could not be read and have no rows:\n  %s", len(skipped), listing)
    logger.info("wrote %s %s, %s and %s", out, tuple(features.shape), index_path.name, summary_path.name)
    return ExtractionResult(out, index_path, summary_path, len(rows), skipped, computed, reused)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jepa.extract", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("model")
    src.add_argument("--checkpoint", help="checkpoint file (official layout, or a plain encoder state dict)")
    src.add_argument("--hub", help="a release of jepa.hub.RELEASES (downloads its weights unless --checkpoint)")
    src.add_argument("--checkpoint-key", default="target_encoder", choices=["target_encoder", "encoder"])
    src.add_argument("--model", choices=sorted(VIT_SIZES), help="size (default: read from the weights)")
    src.add_argument("--num-heads", type=int, help="heads of a width that is not a released size")
    src.add_argument("--patch-size", type=int)
    src.add_argument("--tubelet-size", type=int)
    src.add_argument("--num-frames", type=int, help="frames the model was built for (its position table)")
    src.add_argument("--img-size", type=int, help="resolution the model was built for (its position table)")
    src.add_argument("--uniform-power", action=argparse.BooleanOptionalAction, default=None)
    src.add_argument("--use-rope", action=argparse.BooleanOptionalAction, default=None)
    data = p.add_argument_group("data")
    data.add_argument("--data", required=True, help="annotation CSV of videos, or an ImageFolder root")
    data.add_argument("--out", required=True, help="feature file, .npy or .pt")
    data.add_argument("--pool", default="mean", choices=POOLINGS)
    data.add_argument("--clips-per-video", type=int, help="N clips centred in N segments (default: slide over all)")
    data.add_argument("--window-stride", type=int, help="frames between sliding clips (default: one clip span)")
    data.add_argument("--frames-per-clip", type=int, help="default: the model's num_frames")
    data.add_argument("--frame-step", type=int, default=4, help="frames between the frames of a clip")
    data.add_argument("--crop-size", type=int, help="default: the model's img_size")
    data.add_argument("--resize-ratio", type=float, default=256 / 224, help="short side / crop size before the crop")
    data.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"])
    run = p.add_argument_group("run")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--chunk-size", type=int, default=64, help="files per saved chunk (the unit of resuming)")
    run.add_argument("--num-workers", type=int, default=0)
    run.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="autocast dtype; auto: bfloat16 where it is native (GPUs, CPUs with AVX-512 BF16 / AMX)")
    run.add_argument("--overwrite", action="store_true", help="discard previous outputs and partial chunks")
    run.add_argument("--log-interval", type=float, default=10.0, help="seconds between progress lines")
    args = p.parse_args(argv)
    if args.checkpoint is None and args.hub is None:
        p.error("give --checkpoint (with optional --model) or --hub")
    if args.hub is not None and args.model is not None:
        p.error("--hub fixes the architecture; drop --model")
    return args


def _model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The model options given on the command line, as keywords for the encoder builders."""
    names = ("num_heads", "patch_size", "tubelet_size", "num_frames", "img_size", "uniform_power", "use_rope")
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


# The command line's model options, compared with a stored config: --img-size / --num-frames say what to build
# at (a position table is resampled), so they are not claims about the weights.
_CLI_ARCHITECTURE_KEYS = tuple(k for k in ARCHITECTURE_KEYS if k != "num_frames")


def encoder_spec_from_args(args: argparse.Namespace, stored: Mapping[str, Any]) -> EncoderSpec:
    """The encoder of a ``--checkpoint`` that stores the config it was trained with (``stored``: ours do): that
    architecture, built at ``--img-size`` / ``--num-frames`` when given; ``--model`` and the other model options
    must agree with it.

    Raises:
        CheckpointError: an option contradicts the stored config (each key with both values).
    """
    trained = model_spec_from_config_dict(stored).encoder
    size = VIT_SIZES[args.model] if args.model else {}
    claimed = dataclasses.replace(trained, model_name=None, **{**size, **_model_overrides(args)})
    wrong = spec_differences(trained, claimed, _CLI_ARCHITECTURE_KEYS)
    if wrong:
        details = "; ".join(f"{d.key}: checkpoint {d.checkpoint!r} vs command line {d.config!r}" for d in wrong)
        raise CheckpointError(f"{args.checkpoint} was trained as another model than the command line says: {details}")
    return with_architecture_of(claimed, trained)


def build_from_args(args: argparse.Namespace) -> VisionTransformer:
    """The frozen encoder that the command line names: a ``--hub`` release, or a ``--checkpoint`` built from the
    config it stores (ours do: :func:`encoder_spec_from_args`) or else from its weights' shapes and ``--model``."""
    overrides = _model_overrides(args)
    if args.hub is not None:
        from jepa.hub import load

        overrides.pop("num_heads", None)
        return load(
            args.hub, pretrained=args.checkpoint is None, checkpoint=args.checkpoint, which=args.checkpoint_key,
            **overrides,
        )  # fmt: skip
    ckpt = read_checkpoint(args.checkpoint)  # read once: its stored config, then its weights
    stored = ckpt.get("config")
    try:
        if isinstance(stored, dict):
            return load_encoder(ckpt, which=args.checkpoint_key, spec=encoder_spec_from_args(args, stored))
        return load_encoder(ckpt, which=args.checkpoint_key, model_name=args.model, **overrides)
    except CheckpointError as e:
        raise CheckpointError(f"{args.checkpoint}: {e}") from e


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module documentation)."""
    from jepa.runtime.logging_utils import setup_logging

    args = _parse_args(argv)
    setup_logging(stream=sys.stderr)
    encoder = build_from_args(args)
    crop = args.crop_size or encoder.img_height
    pre = Preprocess(crop_size=crop, resize_ratio=args.resize_ratio)
    data = Path(args.data)
    if data.is_dir():
        dataset: VideoClipDataset | ImageItems = ImageItems(data, transform=pre)
        sampling: dict[str, int | None] = {}
    elif data.is_file():
        if not encoder.is_video:
            raise SystemExit(f"{data} lists videos but the encoder is an image model (num_frames == 1)")
        frames = args.frames_per_clip or encoder.num_frames
        dataset = VideoClipDataset(
            data, frames, args.frame_step, args.clips_per_video, args.window_stride, pre, args.decoder
        )
        sampling = dict(frames_per_clip=frames, frame_step=args.frame_step, clips_per_video=args.clips_per_video,
                        window_stride=args.window_stride)  # fmt: skip
    else:
        raise SystemExit(f"--data {data} is neither an annotation CSV file nor an image folder")
    settings = {
        "data": str(data.resolve()),
        "checkpoint": None if args.checkpoint is None else str(Path(args.checkpoint).resolve()),
        "checkpoint_key": args.checkpoint_key,
        "hub": args.hub,
        "model": args.model,
        **_model_overrides(args),
        "crop_size": crop,
        "resize_ratio": args.resize_ratio,
        **sampling,
    }
    resolved = resolve_dtype(args.dtype, args.device, "--dtype")
    dtype = None if resolved == torch.float32 else resolved
    logger.info("encoding %d %s from %s", len(dataset), "videos" if sampling else "images", data)
    result = extract_features(
        encoder, dataset, args.out, pool_mode=args.pool, batch_size=args.batch_size, chunk_size=args.chunk_size,
        device=args.device, dtype=dtype, num_workers=args.num_workers, settings=settings, overwrite=args.overwrite,
        log_interval=args.log_interval,
    )  # fmt: skip
    print(json.dumps({"out": str(result.out), "rows": result.rows, "skipped": len(result.skipped),
                      "index": str(result.index)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
