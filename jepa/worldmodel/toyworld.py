"""A built-in world for world models and planning that needs no download: a blob on a canvas moved by 2-D actions.

The state is the blob's centre ``(x, y)`` in ``[0, 1]^2`` (``x`` to the right, ``y`` down); an action is a
displacement ``(dx, dy)``, each component clipped to ``[-max_step, max_step]``. The blob stops at the canvas edges
and cannot enter an obstacle (a move that would end inside one is cut short at the obstacle's border, one axis at a
time). Frames are rendered anti-aliased, so sub-pixel moves change the pixels.

:func:`write_toy_trajectories` writes random trajectories in the DROID layout of :mod:`jepa.worldmodel.data`
(one folder per trajectory: ``metadata.json``, ``trajectory.h5`` with the 7-number states ``(x, y, 0, 0, 0, 0, 0)``
and ``recordings/MP4/<camera>.mp4``, plus a CSV listing the folders), so that training reads them like robot data.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from jepa.worldmodel.actions import STATE_DIM

logger = logging.getLogger(__name__)

CAMERA = "toy_cam"  # the camera name of the generated recordings (video file and extrinsics key)
CAMERA_VIEW = "left_mp4_path"  # the metadata key the official config reads (data.camera_views)

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in [0, 1] coordinates


@dataclass(frozen=True)
class ToyWorld:
    """The scene and its dynamics.

    Args:
        size: canvas side in pixels.
        radius: blob radius as a fraction of the side.
        max_step: largest displacement per step along each axis (fraction of the side).
        obstacles: boxes ``(x0, y0, x1, y1)`` the blob's centre cannot enter, drawn grey.
        halo: width (standard deviation, fraction of the side) of a dim Gaussian glow around the blob (0: none). It
            makes frames of distant positions overlap, so that distances between frames (and between their
            embeddings) grow with the distance between positions instead of saturating once two blobs no longer
            overlap: what lets a short-horizon planner see the goal from afar.
    """

    size: int = 32
    radius: float = 0.12
    max_step: float = 0.1
    obstacles: Sequence[Box] = field(default_factory=tuple)
    halo: float = 1.5

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(action, dtype=np.float64)[..., :2], -self.max_step, self.max_step)

    def blocked(self, pos: np.ndarray) -> bool:
        return any(x0 <= pos[0] <= x1 and y0 <= pos[1] <= y1 for x0, y0, x1, y1 in self.obstacles)

    def step(self, pos: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The position ``[2]`` reached from ``pos`` by ``action`` (its first two entries; see the module doc)."""
        pos = np.asarray(pos, dtype=np.float64)
        move = self.clip_action(action)
        new = pos.copy()
        for axis in (0, 1):  # one axis at a time, so the blob slides along an obstacle's side
            trial = new.copy()
            trial[axis] = np.clip(trial[axis] + move[axis], 0.0, 1.0)
            if not self.blocked(trial):
                new = trial
        return new

    def render(self, pos: np.ndarray) -> np.ndarray:
        """The frame ``[size, size, 3]`` uint8 of the blob at ``pos``: white blob in its halo, grey obstacles, black
        ground."""
        s = self.size
        centres = (np.arange(s) + 0.5) / s
        img = np.zeros((s, s), dtype=np.float64)
        for x0, y0, x1, y1 in self.obstacles:
            inside_x = (centres >= x0) & (centres <= x1)
            inside_y = (centres >= y0) & (centres <= y1)
            img[np.ix_(inside_y, inside_x)] = 0.4
        dist = np.hypot(centres[None, :] - pos[0], centres[:, None] - pos[1])
        blob = np.clip(self.radius * s + 0.5 - dist * s, 0.0, 1.0)
        if self.halo > 0:
            blob = np.maximum(blob, 0.5 * np.exp(-0.5 * (dist / self.halo) ** 2))
        img = np.maximum(img, blob)
        return np.repeat((img * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=-1)

    def random_position(self, rng: np.random.Generator) -> np.ndarray:
        for _ in range(1000):
            pos = rng.uniform(0.0, 1.0, size=2)
            if not self.blocked(pos):
                return pos
        raise RuntimeError("the obstacles cover the canvas: no free position found in 1000 draws")


def toy_state(pos: np.ndarray) -> np.ndarray:
    """The 7-number DROID-style state ``(x, y, 0, 0, 0, 0, 0)`` of positions ``[..., 2]``."""
    pos = np.asarray(pos, dtype=np.float64)
    out = np.zeros((*pos.shape[:-1], STATE_DIM))
    out[..., :2] = pos
    return out


def random_trajectory(world: ToyWorld, length: int, rng: np.random.Generator, smoothness: float = 0.7
                      ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A random walk of ``length`` positions ``[length, 2]`` and the commanded actions ``[length - 1, 2]``: each
    action keeps ``smoothness`` of the previous one and adds a fresh uniform draw, so moves are varied but not
    jittery."""
    pos = [world.random_position(rng)]
    actions = []
    prev = np.zeros(2)
    for _ in range(length - 1):
        a = smoothness * prev + (1 - smoothness) * rng.uniform(-1.0, 1.0, size=2) * world.max_step * 1.5
        a = world.clip_action(a)
        actions.append(a)
        pos.append(world.step(pos[-1], a))
        prev = a
    return np.stack(pos), np.stack(actions) if actions else np.zeros((0, 2))


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode RGB uint8 frames ``[T, H, W, 3]`` to an H.264 (or MPEG-4 where x264 is missing) MP4 with PyAV."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = cast("av.VideoStream", container.add_stream(codec, rate=fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "8"}
        else:
            stream.bit_rate = 2_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_trajectory(folder: Path, frames: np.ndarray, states: np.ndarray, fps: int) -> None:
    """One trajectory in the DROID layout: ``metadata.json``, ``trajectory.h5`` (``observation/robot_state/
    cartesian_position [T, 6]``, ``gripper_position [T]``, ``observation/camera_extrinsics/<camera>_left [T, 6]``)
    and ``recordings/MP4/<camera>.mp4``."""
    import h5py  # type: ignore[import-untyped]

    folder.mkdir(parents=True, exist_ok=True)
    write_mp4(folder / "recordings" / "MP4" / f"{CAMERA}.mp4", frames, fps)
    with h5py.File(folder / "trajectory.h5", "w") as f:
        robot = f.create_group("observation/robot_state")
        robot["cartesian_position"] = states[:, :6]
        robot["gripper_position"] = states[:, 6]
        f.create_group("observation/camera_extrinsics")[f"{CAMERA}_left"] = np.zeros((len(states), 6))
    meta = {CAMERA_VIEW: f"recordings/MP4/{CAMERA}.mp4", "trajectory_length": len(states), "fps": fps}
    (folder / "metadata.json").write_text(json.dumps(meta))


def write_toy_trajectories(
    root: str | Path,
    *,
    num_trajectories: int,
    length: int,
    world: ToyWorld,
    fps: int = 4,
    seed: int = 0,
    split: str = "train",
) -> Path:
    """Write ``num_trajectories`` random trajectories of ``length`` frames under ``root/<split>/`` and the CSV
    ``root/<split>.csv`` listing their folders (one absolute path a line, as the official DROID CSV); returns the
    CSV. Existing complete output (the CSV) is reused."""
    root = Path(root)
    csv = root / f"{split}.csv"
    if csv.is_file():
        return csv
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}.get(split, 2)])
    folders = []
    for i in range(num_trajectories):
        pos, _ = random_trajectory(world, length, rng)
        frames = np.stack([world.render(p) for p in pos])
        folder = (root / split / f"traj_{i:05d}").resolve()
        write_trajectory(folder, frames, toy_state(pos), fps)
        folders.append(str(folder))
    tmp = csv.with_suffix(".tmp")
    tmp.write_text("".join(f"{f}\n" for f in folders))
    tmp.rename(csv)  # last, so that an interrupted generation is redone
    logger.info("wrote %d toy-world trajectories of %d frames to %s", num_trajectories, length, csv)
    return csv
