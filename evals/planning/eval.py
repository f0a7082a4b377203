"""``eval_name: planning``: model-predictive control with a trained ``app: vjepa_droid`` world model in the toy world.

Each episode starts at a held-out start position with a goal image of a held-out goal position (both drawn from the
config's ``seed``, at least ``min_distance`` apart). At each of ``steps`` steps the planner encodes the current frame,
searches an action sequence with CEM (:func:`jepa.planning.cem`) minimising the L1 distance between the predicted
tokens after the sequence and the goal's tokens, executes its first action in the world and observes again (MPC).
The same episodes are run with random actions (uniform within the action bounds) and with a greedy oracle that knows
the goal position and moves straight at it (as far as ``max_step`` allows).

Outputs in the output folder: ``results.json`` (per method: success rate, mean final distance; the planner's time
per step; every episode), and ``strip_<i>.png`` for the first ``strips`` episodes (start, the frames reached, goal;
below them the planner's predicted energy after each action against the actual distance of the reached frame's
tokens to the goal's).
"""

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jepa.config.planning import PlanningConfig
from jepa.planning import Episode, WorldModelEnergy, cem, timed
from jepa.training.builders import toy_world_of
from jepa.worldmodel.actions import STATE_DIM
from jepa.worldmodel.data import normalize_clip
from jepa.worldmodel.load import load_world_model
from jepa.worldmodel.toyworld import ToyWorld, toy_state

logger = logging.getLogger(__name__)


def start_goal_pairs(
    world: ToyWorld, count: int, min_distance: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (start, goal) positions at least ``min_distance`` apart, both free, drawn from ``seed``."""
    rng = np.random.default_rng([seed, 7])
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    while len(pairs) < count:
        start, goal = world.random_position(rng), world.random_position(rng)
        if np.hypot(*(start - goal)) >= min_distance:
            pairs.append((start, goal))
    return pairs


class ToyPlanner:
    """Encodes toy-world frames with the world model and plans with CEM (the config's ``cem`` section)."""

    def __init__(self, model: Any, world: ToyWorld, cfg: PlanningConfig, device: torch.device) -> None:
        self.model, self.world, self.cfg, self.device = model, world, cfg, device
        c = cfg.cem
        step = world.max_step
        default_low = [-step, -step] + [0.0] * (STATE_DIM - 2)
        default_high = [step, step] + [0.0] * (STATE_DIM - 2)
        self.low = torch.tensor(c.low if c.low is not None else default_low, device=device)
        self.high = torch.tensor(c.high if c.high is not None else default_high, device=device)
        self.init_std = None if c.init_std is None else torch.tensor(c.init_std, device=device)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)

    @torch.no_grad()
    def encode(self, pos: np.ndarray) -> Tensor:
        """The normalised tokens ``[1, n, D]`` of the frame at ``pos``."""
        clip = normalize_clip(self.world.render(pos)[None]).unsqueeze(0).to(self.device)
        return self.model.encode_frames(clip)

    def state(self, pos: np.ndarray) -> Tensor:
        return torch.from_numpy(toy_state(pos)).float().to(self.device)

    def plan(self, pos: np.ndarray, goal_tokens: Tensor) -> tuple[np.ndarray, float, float]:
        """The first action ``[7]`` of the plan from ``pos``, its predicted energy, and the planning time (s)."""
        energy = WorldModelEnergy(self.model, self.encode(pos), self.state(pos), goal_tokens)
        c = self.cfg.cem
        result, seconds = timed(lambda: cem(
            energy, horizon=c.horizon, low=self.low, high=self.high, samples=c.samples, iterations=c.iterations,
            topk=c.topk, momentum_mean=c.momentum_mean, momentum_std=c.momentum_std, init_std=self.init_std,
            generator=self.generator,
        ))  # fmt: skip
        first = result.actions[:1].unsqueeze(0)  # [1, 1, A]
        predicted = float(energy(first)[0])
        return result.actions[0].cpu().numpy(), predicted, seconds

    def actual_energy(self, pos: np.ndarray, goal_tokens: Tensor) -> float:
        return float((self.encode(pos) - goal_tokens).abs().mean())


def run_episode(planner: ToyPlanner, start: np.ndarray, goal: np.ndarray, steps: int, method: str,
                rng: np.random.Generator) -> Episode:  # fmt: skip
    """One episode of ``method`` (``planner`` | ``random`` | ``oracle``)."""
    world = planner.world
    goal_tokens = planner.encode(goal)
    pos = start.copy()
    ep = Episode(start.tolist(), goal.tolist(), [pos.tolist()], [], [], [], [])
    for _ in range(steps):
        if method == "planner":
            action, predicted, seconds = planner.plan(pos, goal_tokens)
            ep.predicted_energy.append(predicted)
            ep.plan_seconds.append(seconds)
        elif method == "random":
            lo, hi = planner.low.cpu().numpy(), planner.high.cpu().numpy()
            action = rng.uniform(lo, hi)
        else:
            action = np.zeros(STATE_DIM)
            action[:2] = world.clip_action(goal - pos)
        pos = world.step(pos, action)
        ep.actions.append([float(v) for v in action])
        ep.positions.append(pos.tolist())
        if method == "planner":
            ep.actual_energy.append(planner.actual_energy(pos, goal_tokens))
    return ep


def summarise(episodes: list[Episode], tolerance: float) -> dict[str, Any]:
    d = np.array([e.final_distance for e in episodes])
    out: dict[str, Any] = {"success_rate": float(100 * (d < tolerance).mean()), "mean_final_distance": float(d.mean()),
                           "median_final_distance": float(np.median(d))}  # fmt: skip
    times = [t for e in episodes for t in e.plan_seconds]
    if times:
        out["plan_ms_per_step"] = float(1000 * np.mean(times))
    return out


def write_strip(path: Path, world: ToyWorld, ep: Episode, tolerance: float) -> None:
    """Start, every frame reached, goal (scaled up), and predicted vs actual embedding distance per step."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the planning eval's episode strips need matplotlib (pip install 'jepa-toolkit[plot]'), or set strips: 0"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [world.render(np.array(p)) for p in ep.positions] + [world.render(np.array(ep.goal))]
    n = len(frames)
    fig = plt.figure(figsize=(max(6.0, 0.9 * n), 3.2))
    grid = fig.add_gridspec(2, n, height_ratios=[1, 1.2])
    for i, frame in enumerate(frames):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(frame, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("start" if i == 0 else "goal" if i == n - 1 else f"t={i}", fontsize=7)
    ax = fig.add_subplot(grid[1, :])
    steps = np.arange(1, len(ep.actual_energy) + 1)
    ax.plot(steps, ep.predicted_energy, "o-", label="predicted (planner)")
    ax.plot(steps, ep.actual_energy, "s-", label="actual (reached frame)")
    ax.set_xlabel("step")
    ax.set_ylabel("L1 to goal tokens")
    ok = "reached" if ep.final_distance < tolerance else "missed"
    ax.set_title(f"final distance {ep.final_distance:.3f} ({ok}, tolerance {tolerance})", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(cfg: PlanningConfig, device: torch.device | str, *, rank: int = 0, world_size: int = 1,
         resume: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run the episodes (on rank 0 only: planning is sequential); returns the summary written to results.json."""
    device = torch.device(device)
    if world_size > 1:
        raise ValueError("eval_name planning runs in one process (--devices cpu or one GPU)")
    model, train_cfg = load_world_model(cfg.checkpoint)
    if train_cfg.data.dataset_type.lower() != "toy_world":
        raise ValueError(f"{cfg.checkpoint} was trained on {train_cfg.data.dataset_type}; planning episodes run in "
                         "the toy world, so they need a toy_world world model")  # fmt: skip
    model.to(device)
    world = toy_world_of(train_cfg)
    planner = ToyPlanner(model, world, cfg, device)
    pairs = start_goal_pairs(world, cfg.episodes, cfg.min_distance, cfg.seed)
    folder = cfg.output_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg.seed, 11])
    results: dict[str, list[Episode]] = {m: [] for m in ["planner", *cfg.baselines]}
    for i, (start, goal) in enumerate(pairs):
        for method in results:
            results[method].append(run_episode(planner, start, goal, cfg.steps, method, rng))
        ep = results["planner"][-1]
        logger.info("episode %d/%d: planner final distance %.3f (%s), %s", i + 1, len(pairs), ep.final_distance,
                    "reached" if ep.final_distance < cfg.tolerance else "missed",
                    ", ".join(f"{m} {results[m][-1].final_distance:.3f}" for m in cfg.baselines))  # fmt: skip
        if i < cfg.strips:
            write_strip(folder / f"strip_{i:03d}.png", world, ep, cfg.tolerance)
    summary: dict[str, Any] = {
        "eval_name": "planning", "tag": cfg.tag, "checkpoint": cfg.checkpoint, "episodes": len(pairs),
        "steps": cfg.steps, "tolerance": cfg.tolerance,
        "methods": {m: summarise(eps, cfg.tolerance) for m, eps in results.items()},
        "strips": sorted(str(p) for p in folder.glob("strip_*.png")),
    }  # fmt: skip
    payload = {**summary, "config": asdict(cfg), "episodes_detail": {m: [asdict(e) for e in eps]
                                                                       for m, eps in results.items()}}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(payload, indent=1))
    logger.info("planning: %s", json.dumps(summary["methods"]))
    return summary
