"""Learning-rate, weight-decay and EMA-momentum schedules as pure functions of the global step.

Being pure, they need no state in checkpoints: a resumed run recomputes them from the step counter.

Step conventions follow the official code, where the LR/WD schedulers are stepped *before* each update and the
momentum generator yields its first value at the first update: the update with 0-based global index ``i`` uses
``lr(i + 1)``, ``wd(i + 1)`` and ``momentum(i)``. All three span ``T = int(ipe_scale * epochs * ipe)`` steps
(``ipe``: iterations per epoch), so with ``ipe_scale > 1`` training ends before they reach their final values.

An anneal run (V-JEPA 2's cooldown, ``optimization.is_anneal``) replaces the warmup-cosine LR by the official
linear decay from ``lr`` to ``final_lr`` over the same ``T`` steps, with no warmup (``start_lr`` and ``warmup`` are
not read, and gradient clipping, which waits for the end of the warmup, applies from the first update). The
weight-decay cosine and the EMA ramp are the same functions as in pretraining; all three count from the anneal
run's own step 0, so the cooldown starts at ``lr``, ``weight_decay`` and ``ema[0]``.
"""

import math
from dataclasses import dataclass


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, start: float, peak: float, final: float) -> float:
    """Linear warmup from ``start`` to ``peak`` over ``warmup_steps``, then cosine decay to ``final`` at
    ``total_steps`` (held at ``final`` after)."""
    if step < warmup_steps:
        return start + (step / max(1, warmup_steps)) * (peak - start)
    if step >= total_steps:
        return final
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(final, final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine(step: int, total_steps: int, start: float, final: float) -> float:
    """Cosine from ``start`` to ``final`` over ``total_steps``, held at ``final`` after."""
    if step >= total_steps:
        return final
    value = final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return max(final, value) if final <= start else min(final, value)


def linear_decay(step: int, total_steps: int, start: float, final: float) -> float:
    """The official anneal LR: ``start + (step / T) * (final - start)`` (in that order, so the values are the
    official ones to the bit), clamped at ``final`` after ``T``. The official scheduler does not clamp, but an anneal
    run's ``T = ipe_scale * epochs * ipe`` with ``ipe_scale >= 1`` never passes its end."""
    return start + (min(step, total_steps) / max(1, total_steps)) * (final - start)


def linear(step: int, total_steps: int, start: float, final: float) -> float:
    """Straight line from ``start`` to ``final`` over ``total_steps``, clamped at ``final`` after."""
    return start + min(step, total_steps) * (final - start) / total_steps


@dataclass(frozen=True)
class Schedules:
    """Per-update hyper-parameters for a run of ``epochs`` epochs of ``ipe`` iterations."""

    ipe: int
    epochs: int
    ipe_scale: float
    warmup_epochs: float
    start_lr: float
    lr: float
    final_lr: float
    weight_decay: float
    final_weight_decay: float
    ema: tuple[float, float]
    anneal: bool = False  # the cooldown's linear-decay LR without warmup (see the module docstring)

    @property
    def total_steps(self) -> int:
        return max(1, int(self.ipe_scale * self.epochs * self.ipe))

    @property
    def warmup_steps(self) -> int:
        return 0 if self.anneal else int(self.warmup_epochs * self.ipe)

    def lr_at(self, i: int) -> float:
        if self.anneal:
            return linear_decay(i + 1, self.total_steps, self.lr, self.final_lr)
        return warmup_cosine(i + 1, self.warmup_steps, self.total_steps, self.start_lr, self.lr, self.final_lr)

    def wd_at(self, i: int) -> float:
        return cosine(i + 1, self.total_steps, self.weight_decay, self.final_weight_decay)

    def momentum_at(self, i: int) -> float:
        return linear(i, self.total_steps, self.ema[0], self.ema[1])
