"""Trajectory clips in the DROID layout, for training action-conditioned predictors.

Layout (the official V-JEPA 2-AC one): a CSV with one trajectory folder a line (space separated, first column read,
no header). Each folder holds

* a metadata ``*.json`` (the first one found) mapping camera views (``left_mp4_path``, ...) to their recording,
  whose path ends in ``recordings/MP4/<camera>.mp4``; the video is read from ``<folder>/recordings/MP4/<camera>.mp4``;
* ``trajectory.h5`` with ``observation/robot_state/cartesian_position [N, 6]`` (xyz, Euler xyz),
  ``observation/robot_state/gripper_position [N]`` and ``observation/camera_extrinsics/<camera>_left [N, 6]``,
  one row per video frame.

A sample is ``frames_per_clip`` frames at ``fps`` (every ``ceil(video_fps / fps)``-th frame) from a random window,
their states ``[T, 7]`` (position, Euler angles, gripper), the actions between them ``[T - 1, 7]``
(:func:`jepa.worldmodel.actions.states_to_actions`) and the extrinsics ``[T, 6]``. The camera view is drawn at
random among ``camera_views``. The built-in toy world (:mod:`jepa.worldmodel.toyworld`) writes this layout too.

Differences from the official loader: the window start is uniform over every window that fits (the official one
never picks the window that ends at the last frame, and needs one frame more than the window); frames are resized
to ``crop_size`` and normalised without augmentation; an unreadable trajectory is logged, counted and replaced
(:class:`jepa.data.robust.RobustDataset`) rather than retried silently.
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jepa.data.robust import RobustDataset
from jepa.data.transforms import IMAGENET_NORMALIZATION, Normalization
from jepa.masks.collate import MaskCollator
from jepa.video.decoding import make_decoder
from jepa.worldmodel.actions import states_to_actions

H5_NAME = "trajectory.h5"


def read_trajectory_csv(path: str | Path) -> list[str]:
    """The trajectory folders a DROID CSV lists (first space-separated column of each non-empty line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory list {path} does not exist")
    folders = [line.split(" ")[0] for line in path.read_text().splitlines() if line.strip()]
    if not folders:
        raise ValueError(f"trajectory list {path} lists no trajectory folder")
    return folders


def read_metadata(folder: Path) -> dict[str, Any]:
    """The first ``*.json`` of a trajectory folder (sorted by name)."""
    for file in sorted(folder.glob("*.json")):
        return json.loads(file.read_text())
    raise FileNotFoundError(f"{folder}: no metadata *.json file")


def normalize_clip(frames: np.ndarray, normalization: Normalization = IMAGENET_NORMALIZATION) -> Tensor:
    """uint8 RGB ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` scaled to ``[0, 1]`` and normalised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 255.0
    mean, std = (torch.tensor(v).view(3, 1, 1, 1) for v in normalization)
    return (x - mean) / std


class NoMasks(MaskCollator):
    """The collator of trajectory batches: ``(default_collate(samples), [], [])``, no masks. A
    :class:`jepa.masks.collate.MaskCollator`, so that the trainer's loaders, one process or several
    (:class:`jepa.runtime.distributed.RankShardCollator`), take it as they take the masked objectives' collators."""

    def sample_masks(self, batch_size: int, generator: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        return [], []


class TrajectoryDataset(RobustDataset):
    """Clips, actions, states and extrinsics of DROID-layout trajectories (see the module docstring).

    ``dataset[i]`` is ``(clip [3, T, S, S], actions [T - 1, 7], states [T, 7], extrinsics [T, 6], i)`` with float32
    tensors, ``S = crop_size``; random choices (window, camera view) use torch's global generator, which
    :class:`jepa.data.sampling.SeededDataset` seeds per sample.

    Args:
        data_paths: the trajectory CSVs (their folders are concatenated).
        frames_per_clip: ``T``.
        fps: target frame rate (None: every frame).
        crop_size: frames are resized to ``crop_size x crop_size``.
        camera_views: metadata keys of the recordings to draw from.
        decoder: ``auto`` | ``decord`` | ``pyav``.
    """

    def __init__(
        self,
        data_paths: Sequence[str | Path],
        *,
        frames_per_clip: int,
        fps: float | None,
        crop_size: int,
        camera_views: Sequence[str] = ("left_mp4_path",),
        decoder: str = "auto",
        normalization: Normalization = IMAGENET_NORMALIZATION,
        on_error: str = "random",
        max_bad_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(on_error=on_error, max_bad_fraction=max_bad_fraction, seed=seed)  # type: ignore[arg-type]
        if frames_per_clip < 2:
            raise ValueError(f"frames_per_clip must be >= 2 (an action needs two frames), got {frames_per_clip}")
        if not camera_views:
            raise ValueError("camera_views is empty: name at least one metadata key (e.g. left_mp4_path)")
        self.folders = [f for p in data_paths for f in read_trajectory_csv(p)]
        self.frames_per_clip = frames_per_clip
        self.fps = fps
        self.crop_size = crop_size
        self.camera_views = list(camera_views)
        self.decoder = make_decoder(decoder)
        self.normalization = normalization

    def __len__(self) -> int:
        return len(self.folders)

    def sample_path(self, index: int) -> str:
        return self.folders[index]

    def load(self, index: int) -> tuple[object, ...]:
        import h5py  # type: ignore[import-untyped]

        folder = Path(self.folders[index])
        meta = read_metadata(folder)
        view = self.camera_views[int(torch.randint(len(self.camera_views), ()))]
        if view not in meta:
            raise ValueError(f"{folder}: the metadata has no camera view {view!r} (it has {sorted(meta)})")
        mp4_name = str(meta[view]).split("recordings/MP4/")[-1]
        camera = mp4_name.split(".")[0]
        video = folder / "recordings" / "MP4" / mp4_name
        with h5py.File(folder / H5_NAME, "r") as f:
            robot = f["observation/robot_state"]
            states = np.concatenate(
                [np.asarray(robot["cartesian_position"]), np.asarray(robot["gripper_position"])[:, None]], axis=1
            )
            extrinsics = np.asarray(f[f"observation/camera_extrinsics/{camera}_left"])
        length = self.decoder.num_frames(video)
        step = 1 if self.fps is None else math.ceil(self.decoder.fps(video) / self.fps)
        span = self.frames_per_clip * step
        usable = min(length, len(states), len(extrinsics))
        if usable < span:
            raise ValueError(
                f"{folder}: {usable} frames with states, fewer than the {span} a clip of {self.frames_per_clip} "
                f"frames every {step} needs"
            )
        start = int(torch.randint(usable - span + 1, ()))
        indices = np.arange(start, start + span, step)
        frames = self.decoder.read(video, indices, size=(self.crop_size, self.crop_size))
        states = states[indices]
        actions = states_to_actions(states)
        clip = normalize_clip(frames, self.normalization)
        return (
            clip,
            torch.from_numpy(actions).float(),
            torch.from_numpy(states).float(),
            torch.from_numpy(extrinsics[indices]).float(),
        )
