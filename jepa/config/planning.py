"""Planning eval config (``eval_name: planning``, :mod:`evals.planning`), validated strictly.

The world model is an ``app: vjepa_droid`` checkpoint (``checkpoint``); the config it stores rebuilds the frozen
encoder, the predictor and the toy world it was trained on. Episodes start and end at positions drawn from
``seed`` (not the training trajectories' generator); each runs ``steps`` MPC steps and succeeds when the final
position lies within ``tolerance`` of the goal. The planner's keys are in ``cem`` (official defaults documented in
:mod:`jepa.planning`).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jepa.config.strict import ConfigError, apply_overrides, from_dict, read_yaml_sections, require

BASELINES = ("random", "oracle")


@dataclass(kw_only=True)
class CEMConfig:
    """Cross-entropy-method search (:func:`jepa.planning.cem`). ``low`` / ``high``: per-dimension action bounds
    (7 numbers: position, rotation, gripper); null: the toy world's ``[-max_step, max_step]`` on x and y and 0 on
    the other five. ``init_std``: per-dimension initial standard deviation (null: half the bounds' width)."""

    samples: int = 400
    iterations: int = 10
    topk: int = 10
    horizon: int = 2
    momentum_mean: float = 0.15
    momentum_std: float = 0.15
    low: list[float] | None = None
    high: list[float] | None = None
    init_std: list[float] | None = None

    def __post_init__(self) -> None:
        for name in ("samples", "iterations", "topk", "horizon"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "an int >= 1")
        require(self.topk <= self.samples, "topk", self.topk, f"at most samples ({self.samples})")
        for name in ("momentum_mean", "momentum_std"):
            require(0 <= getattr(self, name) < 1, name, getattr(self, name), "a momentum in [0, 1)")
        if (self.low is None) != (self.high is None):
            raise ConfigError("cem.low and cem.high: give both per-dimension bounds or neither")
        if self.low is not None and self.high is not None:
            require(len(self.low) == len(self.high) == 7 and all(lo <= hi for lo, hi in zip(self.low, self.high)),
                    "low / high", (self.low, self.high), "7 bounds each with low <= high")  # fmt: skip
        require(self.init_std is None or (len(self.init_std) == 7 and all(s >= 0 for s in self.init_std)),
                "init_std", self.init_std, "null or 7 standard deviations >= 0")  # fmt: skip


@dataclass(kw_only=True)
class PlanningConfig:
    """A planning run: the world model, the episodes, the planner, the baselines and the outputs."""

    eval_name: Literal["planning"] = "planning"
    tag: str | None = None
    checkpoint: str  # an app vjepa_droid checkpoint (ours: it stores the config that rebuilds model and world)
    folder: str | None = None  # outputs; default <checkpoint folder>/planning
    episodes: int = 50
    steps: int = 12  # MPC steps per episode
    tolerance: float = 0.1  # success: final distance to the goal below this (fraction of the canvas side)
    min_distance: float = 0.3  # start and goal at least this far apart
    seed: int = 1234  # draws the start / goal pairs (held out: not the training trajectories' generator)
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    strips: int = 10  # episodes with a PNG strip (the first ones; 0: none)
    cem: CEMConfig = field(default_factory=CEMConfig)
    # Nodes / tasks keys of the other evals' files, so the launchers read this config too.
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    mem_per_gpu: str | None = None

    def __post_init__(self) -> None:
        require(self.checkpoint != "", "checkpoint", self.checkpoint, "the path of an app vjepa_droid checkpoint")
        require(self.episodes >= 1, "episodes", self.episodes, "an int >= 1")
        require(self.steps >= 1, "steps", self.steps, "an int >= 1")
        require(self.tolerance > 0, "tolerance", self.tolerance, "> 0")
        require(0 <= self.min_distance < 1.4, "min_distance", self.min_distance, "in [0, 1.4) (the canvas is 1 x 1)")
        require(self.strips >= 0, "strips", self.strips, "an int >= 0")
        for i, name in enumerate(self.baselines):
            require(name in BASELINES, f"baselines[{i}]", name, f"one of {', '.join(BASELINES)}")

    @property
    def output_folder(self) -> Path:
        base = Path(self.folder) if self.folder else Path(self.checkpoint).parent / "planning"
        return base / self.tag if self.tag else base


def load_planning_config(path: str | Path, overrides: list[str] | None = None) -> PlanningConfig:
    """Read, override (``["cem.samples=200", ...]``) and validate a planning YAML file."""
    path = Path(path)
    raw = apply_overrides(read_yaml_sections(path), list(overrides or []))
    try:
        return from_dict(PlanningConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
