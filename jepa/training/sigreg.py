"""SIGReg: Sketched Isotropic Gaussian Regularisation (Balestriero & LeCun, "LeJEPA", arXiv 2511.08544).

Embeddings ``z`` (``[N, D]``) are pushed towards an isotropic standard Gaussian by testing their 1-D projections:

1. ``K`` random unit directions ``a_k`` (columns of ``A``, ``[D, K]``), drawn from a generator seeded by the
   global step, so every rank draws the same directions at the same step and a resumed run draws what the
   uninterrupted one drew;
2. for each projection ``x_k = z a_k`` the empirical characteristic function on a grid of ``t`` in ``[0, t_max]``:
   ``ecf_k(t) = mean_n cos(t x_nk) + i mean_n sin(t x_nk)``, over the *global* batch;
3. the Epps-Pulley statistic ``T_k = N * integral |ecf_k(t) - phi(t)|^2 w(t) dt`` with ``phi(t) = exp(-t^2 / 2)``
   (the standard Gaussian's characteristic function) and the Gaussian window ``w(t) = exp(-t^2 / 2)``,
   integrated over the real line by the trapezoid rule on ``t >= 0`` (the integrand is even, so the weights are
   doubled);
4. the loss is the mean of ``T_k`` over directions.

Cost: ``O(N * D * K)`` for the projection and ``O(N * K * len(t))`` for the characteristic functions, linear in the
batch and the width. Distributed: each rank sums ``cos`` and ``sin`` over its samples, the sums and the sample
count are all-reduced (an autograd-aware all-reduce), and every rank computes the same statistic of the global
batch. With DDP averaging the parameters' gradients, the update is then the gradient of the global statistic (the
all-reduce's backward sums the identical upstream gradients of the ranks, and DDP divides by the world size).
"""

import torch
import torch.distributed as dist
from torch import Tensor, nn

# Offset of the direction seed, so the projections do not share a stream with any other seeded draw at the step.
_SEED_OFFSET = 0x5161_7265


def epps_pulley_grid(t_max: float = 3.0, num_points: int = 17) -> tuple[Tensor, Tensor, Tensor]:
    """``(t, phi(t), weights)`` for the trapezoid rule on ``[0, t_max]`` with the Gaussian window folded into the
    weights and doubled for the negative half of the real line."""
    if num_points < 2 or t_max <= 0:
        raise ValueError(f"need num_points >= 2 and t_max > 0, got {num_points} and {t_max}")
    t = torch.linspace(0.0, t_max, num_points, dtype=torch.float64)
    dt = t_max / (num_points - 1)
    trapezoid = torch.full((num_points,), dt, dtype=torch.float64)
    trapezoid[[0, -1]] = dt / 2
    phi = torch.exp(-0.5 * t * t)
    return t, phi, 2.0 * trapezoid * phi


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the ranks' upstream gradients (each rank's loss depends on every rank's
    input through the sum)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _all_reduce_sum(x: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _AllReduceSum.apply(x)
    return x


def epps_pulley(x: Tensor, t_max: float = 3.0, num_points: int = 17) -> Tensor:
    """The Epps-Pulley statistic of each column of ``x`` (``[N, K]``, projections) against N(0, 1), over the global
    batch (``[K]``). Computed in float32 at least."""
    t, phi, weights = (v.to(device=x.device, dtype=torch.float32) for v in epps_pulley_grid(t_max, num_points))
    x = x.float()
    xt = x.unsqueeze(-1) * t  # [N, K, P]
    sums = torch.stack([torch.cos(xt).sum(0), torch.sin(xt).sum(0)])  # [2, K, P]
    count = torch.tensor(float(x.shape[0]), device=x.device)
    sums, count = _all_reduce_sum(sums), _all_reduce_sum(count)
    real, imag = sums[0] / count, sums[1] / count
    err = (real - phi).square() + imag.square()  # [K, P]
    return count * (err @ weights)


def random_directions(dim: int, num_directions: int, step: int, seed: int = 0, device=None) -> Tensor:
    """``[dim, num_directions]`` unit columns, a pure function of ``(seed, step)`` (the same on every rank)."""
    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + step + _SEED_OFFSET) % (2**63))
    a = torch.randn(dim, num_directions, generator=g)
    return (a / a.norm(dim=0, keepdim=True)).to(device)


class SIGReg(nn.Module):
    """The sliced Epps-Pulley statistic of embeddings ``[..., D]`` (leading dims flattened into samples), averaged
    over ``num_directions`` random unit directions drawn from ``(seed, step)``.

    For samples of N(0, I) it is about 1 at any batch size (its expectation is the sampling noise
    ``integral (1 - phi^2) w dt = sqrt(2 pi) - sqrt(2 pi / 3) ~ 1.06``); for collapsed, shrunk or anisotropic
    embeddings it grows in proportion to the batch size.
    """

    def __init__(self, num_directions: int = 256, t_max: float = 3.0, num_points: int = 17, seed: int = 0) -> None:
        super().__init__()
        if num_directions < 1:
            raise ValueError(f"num_directions must be >= 1, got {num_directions}")
        epps_pulley_grid(t_max, num_points)  # validates
        self.num_directions, self.t_max, self.num_points, self.seed = num_directions, t_max, num_points, seed

    def forward(self, z: Tensor, step: int) -> Tensor:
        z = z.reshape(-1, z.shape[-1])
        a = random_directions(z.shape[-1], self.num_directions, step, self.seed, z.device)
        return epps_pulley(z.float() @ a, self.t_max, self.num_points).mean()

    def extra_repr(self) -> str:
        return f"num_directions={self.num_directions}, t_max={self.t_max}, num_points={self.num_points}"
