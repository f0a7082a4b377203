"""Planning with an action-conditioned world model: cross-entropy-method search and model-predictive control.

The energy of an action sequence ``a_0 .. a_{H-1}`` from the current frame is the L1 distance (mean over tokens and
channels) between the world model's prediction of the frame after the last action, rolled out autoregressively
(:class:`WorldModelEnergy`), and the goal image's tokens. :func:`cem` minimises it over sequences sampled from a
diagonal Gaussian refitted to the best ``topk`` samples at each iteration; MPC executes the first action of the
plan, observes the new frame and plans again.

Official defaults (V-JEPA 2's ``notebooks/utils/world_model_wrapper.py`` around ``mpc_utils.cem``): horizon
(``rollout``) 2, 400 samples, top-k 10, 10 iterations, momentum 0.15 for the mean and for the standard deviation, an
initial standard deviation and a bound of 0.05 (m) on the position deltas, rotations held at 0; the gripper is a
dimension of its own (initial std 1, bounds +-0.75). Here every dimension has its own bounds (``low``, ``high``;
``low == high`` holds a dimension fixed) and initial standard deviation, the momenta apply to all dimensions.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Energy = Callable[[Tensor], Tensor]  # action sequences [S, H, A] -> energies [S]


@dataclass(frozen=True)
class CEMResult:
    """The plan ``[H, A]`` (the final mean), the energy of the best sample of the last iteration and the mean
    energy of the last iteration's top-k."""

    actions: Tensor
    best_energy: float
    topk_energy: float


def cem(
    energy: Energy,
    *,
    horizon: int,
    low: Tensor,
    high: Tensor,
    samples: int = 400,
    iterations: int = 10,
    topk: int = 10,
    momentum_mean: float = 0.15,
    momentum_std: float = 0.15,
    init_mean: Tensor | None = None,
    init_std: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> CEMResult:
    """Cross-entropy-method minimisation of ``energy`` over action sequences ``[horizon, A]``.

    Each iteration draws ``samples`` sequences from ``N(mean, std^2)`` (per step and dimension), clips them to
    ``[low, high]`` (``[A]`` each), keeps the ``topk`` of lowest energy and moves the distribution towards them:
    ``mean <- (1 - momentum_mean) * mean_topk + momentum_mean * mean`` and the same for ``std`` with
    ``momentum_std`` (the top-k's unbiased standard deviation), as the official ``cem``.

    Args:
        energy: maps ``[S, horizon, A]`` to ``[S]`` (lower is better); called once per iteration.
        init_mean: ``[horizon, A]`` or ``[A]`` (default: the middle of the bounds, clipped: 0 for symmetric bounds).
        init_std: ``[horizon, A]`` or ``[A]`` (default: half the width of the bounds).
    """
    low, high = low.float(), high.float()
    if low.shape != high.shape or low.dim() != 1 or bool((low > high).any()):
        raise ValueError(f"low {low.tolist()} and high {high.tolist()} must be [A] bounds with low <= high")
    if not 1 <= topk <= samples:
        raise ValueError(f"topk must be in [1, samples={samples}], got {topk}")
    if horizon < 1 or iterations < 1:
        raise ValueError(f"horizon and iterations must be >= 1, got {horizon} and {iterations}")
    for name, m in (("momentum_mean", momentum_mean), ("momentum_std", momentum_std)):
        if not 0.0 <= m < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {m}")
    A = low.shape[0]
    mean = ((low + high) / 2 if init_mean is None else init_mean.float()).expand(horizon, A).clone()
    std = ((high - low) / 2 if init_std is None else init_std.float()).expand(horizon, A).clone()
    best = topk_mean = float("inf")
    for _ in range(iterations):
        noise = torch.randn(samples, horizon, A, generator=generator, device=low.device)
        actions = torch.maximum(torch.minimum(mean + std * noise, high), low)
        values = energy(actions)
        order = values.topk(topk, largest=False).indices
        elite = actions[order]
        mean = (1 - momentum_mean) * elite.mean(dim=0) + momentum_mean * mean
        std = (1 - momentum_std) * (elite.std(dim=0) if topk > 1 else torch.zeros_like(std)) + momentum_std * std
        best, topk_mean = float(values[order[0]]), float(values[order].mean())
    return CEMResult(torch.maximum(torch.minimum(mean, high), low), best, topk_mean)


class WorldModelEnergy:
    """The planning energy of a :class:`jepa.worldmodel.model.WorldModel` from one observed frame.

    Args:
        model: the world model (its ``step`` predicts the next frame's normalised tokens).
        context: the current frame's tokens ``[1, n, D]`` (``model.encode_frames``).
        state: the current state ``[A]``.
        goal: the goal frame's tokens ``[1, n, D]``.
        next_state: how a state moves under an action (``[S, A], [S, A] -> [S, A]``; default: addition, the toy
            world's and DROID's position deltas).
    """

    def __init__(
        self, model: torch.nn.Module, context: Tensor, state: Tensor, goal: Tensor,
        next_state: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:  # fmt: skip
        self.model = model
        self.step: Callable[[Tensor, Tensor, Tensor], Tensor] = model.step  # type: ignore[assignment]
        self.context, self.state, self.goal = context, state, goal
        self.next_state = next_state or (lambda s, a: s + a)

    @torch.no_grad()
    def rollout(self, actions: Tensor) -> Tensor:
        """Predicted tokens ``[S, n, D]`` of the frame after the last of ``actions`` ``[S, H, A]``."""
        S, H, _ = actions.shape
        n = self.context.shape[1]
        z = self.context.expand(S, -1, -1)
        states = [self.state.expand(S, -1)]
        for h in range(H):
            nxt = self.step(z, actions[:, : h + 1], torch.stack(states, dim=1))[:, -n:]
            z = torch.cat([z, nxt], dim=1)
            states.append(self.next_state(states[-1], actions[:, h]))
        return z[:, -n:]

    def __call__(self, actions: Tensor) -> Tensor:
        pred = self.rollout(actions)
        return (pred - self.goal).abs().flatten(1).mean(dim=1)


@dataclass
class Episode:
    """One MPC episode: positions reached (``[steps + 1, 2]``, the start first), the executed actions, the
    planner's predicted energy after each action and the actual energy (L1 between the encoded reached frame and the
    goal), and the planning time per step."""

    start: list[float]
    goal: list[float]
    positions: list[list[float]]
    actions: list[list[float]]
    predicted_energy: list[float]
    actual_energy: list[float]
    plan_seconds: list[float]

    @property
    def final_distance(self) -> float:
        p, g = self.positions[-1], self.goal
        return float(((p[0] - g[0]) ** 2 + (p[1] - g[1]) ** 2) ** 0.5)


def timed(fn: Callable[[], CEMResult]) -> tuple[CEMResult, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
