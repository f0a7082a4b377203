"""SIGReg (jepa.training.sigreg): the Epps-Pulley statistic against a direct float64 evaluation, its behaviour on
Gaussian and collapsed samples, determinism of the directions, and invariance to the number of ranks."""

import math

import numpy as np
import pytest
import torch

from jepa.runtime import distributed as jd
from jepa.training.sigreg import SIGReg, epps_pulley, epps_pulley_grid, random_directions


def reference_statistic(x: np.ndarray, t_max: float = 3.0, num_points: int = 17) -> float:
    """``N * integral_R |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt`` by the trapezoid rule on [0, t_max], doubled
    (the integrand is even), with the empirical characteristic function as a complex mean."""
    n, ts = x.shape[0], np.linspace(0.0, t_max, num_points)
    dt = t_max / (num_points - 1)
    total = 0.0
    for j, t in enumerate(ts):
        ecf = np.mean(np.exp(1j * t * x.astype(np.float64)))
        trap = dt * (0.5 if j in (0, num_points - 1) else 1.0)
        total += 2.0 * trap * math.exp(-t * t / 2) * abs(ecf - math.exp(-t * t / 2)) ** 2
    return n * total


@pytest.mark.parametrize("t_max,num_points", [(3.0, 17), (5.0, 21)])
def test_statistic_matches_a_direct_evaluation(t_max, num_points):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(200, 2)), rng.uniform(-2, 2, size=(200, 1))], axis=1)
    ours = epps_pulley(torch.tensor(x, dtype=torch.float32), t_max, num_points)
    expected = [reference_statistic(x[:, k], t_max, num_points) for k in range(x.shape[1])]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_grid_weights_integrate_the_gaussian_window():
    # integral_R exp(-t^2) dt = sqrt(pi); the weights hold w(t) = exp(-t^2/2) times the trapezoid rule.
    t, phi, weights = epps_pulley_grid(6.0, 121)
    assert float((weights * phi).sum()) == pytest.approx(math.sqrt(math.pi), rel=1e-6)


def test_near_zero_for_gaussian_samples_and_large_for_collapsed_ones():
    g = torch.Generator().manual_seed(0)
    reg = SIGReg(num_directions=64)
    gaussian = torch.randn(2048, 32, generator=g)
    collapsed = torch.randn(2048, 1, generator=g) @ torch.randn(1, 32, generator=g)  # rank one
    constant = torch.zeros(2048, 32)
    shrunk = 0.1 * torch.randn(2048, 32, generator=g)  # isotropic but far from unit variance
    s_gauss = float(reg(gaussian, step=0))
    # For N(0, 1) samples E[T] = integral (1 - phi^2) w dt = sqrt(2 pi) - sqrt(2 pi / 3) ~ 1.06 at any N.
    assert 0.5 < s_gauss < 2.0
    for bad in (collapsed, constant, shrunk):
        assert float(reg(bad, step=0)) > 100 * s_gauss


def test_directions_are_unit_and_a_function_of_seed_and_step():
    a = random_directions(16, 8, step=3, seed=1)
    assert torch.allclose(a.norm(dim=0), torch.ones(8))
    assert torch.equal(a, random_directions(16, 8, step=3, seed=1))
    assert not torch.equal(a, random_directions(16, 8, step=4, seed=1))
    assert not torch.equal(a, random_directions(16, 8, step=3, seed=2))


def test_gradient_pushes_collapsed_embeddings_apart():
    z = (0.01 * torch.randn(256, 8, generator=torch.Generator().manual_seed(1))).requires_grad_()
    reg = SIGReg(num_directions=32)
    opt = torch.optim.SGD([z], lr=0.5)
    first = reg(z.detach(), step=0).item()
    for step in range(30):
        opt.zero_grad()
        loss = reg(z, step=step)
        loss.backward()
        opt.step()
    assert reg(z.detach(), step=0).item() < 0.2 * first
    assert z.detach().std().item() > 0.1


def test_leading_dimensions_are_samples():
    z = torch.randn(4, 16, 8, generator=torch.Generator().manual_seed(2))
    reg = SIGReg(num_directions=8)
    assert torch.equal(reg(z, step=5), reg(z.reshape(64, 8), step=5))


def _rank_sigreg(rank: int, world_size: int, device, z: torch.Tensor):
    """One rank's half of the batch: the global statistic and the gradient on its rows."""
    rows = z.chunk(world_size)[rank].clone().requires_grad_()
    loss = SIGReg(num_directions=16)(rows, step=7)
    loss.backward()
    return loss.item(), rows.grad


def test_two_ranks_give_the_statistic_and_gradient_of_one_process(monkeypatch):
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(3)) * 0.5
    whole = z.clone().requires_grad_()
    loss = SIGReg(num_directions=16)(whole, step=7)
    loss.backward()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    results = jd.spawn(_rank_sigreg, ["cpu", "cpu"], z)
    for rank, (value, grad) in enumerate(results):
        assert value == pytest.approx(loss.item(), rel=1e-5)
        # Each rank's gradient is world_size times its rows' share (the all-reduce's backward sums the ranks'
        # identical upstream gradients); DDP's averaging of parameter gradients divides it back.
        torch.testing.assert_close(grad / 2, whole.grad.chunk(2)[rank], rtol=1e-4, atol=1e-6)
