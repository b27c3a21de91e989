"""Regression: the SLSQP E-step reaches the dual optimum whatever the scale of ``Q`` (algorithms.md §3.5).

SciPy's SLSQP stops on an ABSOLUTE change of the objective (``ftol``). On the raw dual, with
small reward values (a parked policy: spread ~0.01) ``g(η) ≈ η ε`` has slope ~ε far from the
optimum, so a warm start at a large η (seen in training: η = 47819.75 for 7k updates, uniform
weights, no learning) was returned unchanged with ``g`` ~1e3 instead of ~2e-3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corl.algos.cvpo.learner import DUAL_MIN, estep_dual, solve_dual_slsqp


def _grid_optimum(q: torch.Tensor, c: torch.Tensor, eps: float, eps_c: float) -> float:
    """Brute force ``min g``: a log-grid over (η, λ) (λ = 0 included), then a finer grid around the best point."""
    q, c = q.double(), c.double()

    def best_on(etas: torch.Tensor, lams: torch.Tensor) -> tuple[float, float, float]:
        adv = q[None, None] - lams[None, :, None, None] * c[None, None]  # (1, L, K, N)
        e = etas[:, None, None, None]
        lse = torch.logsumexp(adv / e, dim=-1) - math.log(q.shape[-1])  # (E, L, K)
        vals = etas[:, None] * eps + lams[None, :] * eps_c + etas[:, None] * lse.mean(-1)
        i = int(torch.argmin(vals))
        ie, il = divmod(i, vals.shape[1])
        return float(vals[ie, il]), float(etas[ie]), float(lams[il])

    lams = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-4, 3, 36, dtype=torch.float64)])
    val, eta, lam = best_on(torch.logspace(-5, 5, 51, dtype=torch.float64), lams)
    fine_l = torch.linspace(0.0, lam * 1.4, 29, dtype=torch.float64) if lam > 0 else torch.zeros(1, dtype=torch.float64)
    fine_val, _, _ = best_on(eta * torch.logspace(-0.4, 0.4, 41, dtype=torch.float64), fine_l)
    return min(val, fine_val)


def _check(x: np.ndarray, g: float, q, c, eps, eps_c, dual_max=1e5):
    assert np.all(np.isfinite(x)) and np.all(x >= DUAL_MIN) and np.all(x <= dual_max)
    xt = torch.as_tensor(x, dtype=torch.float64)
    assert g == pytest.approx(float(estep_dual(xt[0], xt[1:], q.double(), c.double(), eps, eps_c)), rel=1e-9)


WARM_STARTS = ([0.1, 0.1], [47819.75, 1e-6], [1e5, 1e5], [1e-6, 1e-6])


@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e3])
def test_slsqp_feasible_constraint_any_scale_any_warm_start(scale):
    """Costs well under ε_c (λ* = 0): the probe of the stuck run, at three reward scales."""
    gen = torch.Generator().manual_seed(0)
    q = scale * torch.randn(128, 16, generator=gen)
    c = 0.05 * torch.rand(128, 16, generator=gen)
    eps, eps_c = 0.02, 1.11
    opt = _grid_optimum(q, c, eps, eps_c)
    for x0 in WARM_STARTS:
        x, g = solve_dual_slsqp(np.array(x0), q, c, eps, eps_c, 1e5, 10, 1e-3)
        _check(x, g, q, c, eps, eps_c)
        assert g == pytest.approx(opt, rel=1e-2), x0
        assert x[1] < 1e-3  # the constraint does not bind


def test_slsqp_active_constraint_small_rewards():
    """Costs near ε_c with reward and cost correlated: λ* > 0; small reward values."""
    gen = torch.Generator().manual_seed(1)
    q = 0.01 * torch.randn(64, 16, generator=gen)
    c = 1.0 + 0.5 * torch.rand(64, 16, generator=gen) + 20.0 * q  # rewarding actions cost more
    eps, eps_c = 0.05, 1.2  # uniform weights give mean cost 1.25; reachable inside the KL ball
    opt = _grid_optimum(q, c, eps, eps_c)
    for x0 in WARM_STARTS:
        x, g = solve_dual_slsqp(np.array(x0), q, c, eps, eps_c, 1e5, 10, 1e-3)
        _check(x, g, q, c, eps, eps_c)
        # g* is close to 0 here, so the tolerance is relative to the scale of the rewards (std 0.01)
        assert g == pytest.approx(opt, abs=2e-3 * float(q.std())), x0
        assert x[1] > 1e-3  # the constraint binds
        # the primal's cost constraint holds at the solution (up to the solver's tolerance)
        w = torch.softmax((q.double() - x[1] * c.double()) / x[0], -1)
        assert float((w * c.double()).sum(-1).mean()) <= eps_c + 1e-2


def test_slsqp_warm_started_sequence_stays_at_optimum():
    """Repeated warm-started solves (as in training) never drift away from the optimum."""
    gen = torch.Generator().manual_seed(2)
    q = 0.01 * torch.randn(128, 16, generator=gen)
    c = 0.05 * torch.rand(128, 16, generator=gen)
    opt = _grid_optimum(q, c, 0.02, 1.11)
    x = np.array([47819.75, 1e-6])
    for _ in range(3):
        x, g = solve_dual_slsqp(x, q, c, 0.02, 1.11, 1e5, 10, 1e-3)
        assert g == pytest.approx(opt, rel=1e-2)


def test_slsqp_lambda_max_bounds_only_the_cost_multiplier():
    """``lambda_max`` caps λ while η keeps its own bound: an unreachable ε_c puts λ at the cap, and
    η is then the optimum of the dual at that λ (a 1-D grid agrees), above the λ cap."""
    gen = torch.Generator().manual_seed(3)
    q = 10.0 * torch.randn(64, 16, generator=gen)
    c = 2.0 + torch.rand(64, 16, generator=gen)  # every action costs >= 2
    eps, eps_c = 0.05, 1.0  # unreachable: λ* would run to its bound
    x, g = solve_dual_slsqp(np.array([0.1, 0.1]), q, c, eps, eps_c, 1e5, 10, 1e-3, lambda_max=1.0)
    _check(x, g, q, c, eps, eps_c)
    assert x[1] == pytest.approx(1.0) and x[0] > 1.0
    etas = torch.logspace(-3, 4, 400, dtype=torch.float64)
    grid = min(
        float(estep_dual(e, torch.ones(1, dtype=torch.float64), q.double(), c.double(), eps, eps_c)) for e in etas
    )
    assert g <= grid + 2e-3 * float(q.std())  # SLSQP's tolerance is relative to the spread of Q
    x_both, _ = solve_dual_slsqp(np.array([0.1, 0.1]), q, c, eps, eps_c, 1.0, 10, 1e-3)
    assert x_both[0] <= 1.0  # slsqp_dual_max alone bounds η as well
