"""Loss and math utilities shared by methods (pure functions over tensors).

* :func:`expectile_loss` ``|tau - 1{u < 0}| u^2`` (IQL value regression).
* :func:`inner_surrogate` ``<sg(v), a>``: its gradient w.r.t. the parameters of ``a`` is
  ``v^T da/dtheta`` (score distillation / deterministic policy gradients).
* :func:`pcgrad_merge` the PCGrad combination of two update vectors.
* :func:`stepwise_threshold` ``kappa (1 - gamma^T) / ((1 - gamma) T)``.
* :func:`flat_params` / :func:`set_flat_params_` for parameter-delta arithmetic.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """``mean |tau - 1{u < 0}| u^2`` with ``u = diff`` (asymmetric L2)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def inner_surrogate(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-sample ``<sg(v), a>`` over the last dim."""
    return (v.detach() * a).sum(-1)


def pcgrad_merge(delta_a: torch.Tensor, delta_b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Conflict-free average of two flat update vectors (PCGrad).

    If ``<a, b> < 0`` each vector is projected on the normal plane of the other and the
    projections are averaged::

        1/2 [(1 - <a,b>/||a||^2) a + (1 - <a,b>/||b||^2) b]
          = 1/2 [(a - <a,b>/||b||^2 b) + (b - <a,b>/||a||^2 a)]

    otherwise the plain average ``(a + b) / 2`` is returned.
    """
    dot = torch.dot(delta_a, delta_b)
    na = delta_a.pow(2).sum().clamp_min(eps)
    nb = delta_b.pow(2).sum().clamp_min(eps)
    projected = 0.5 * ((1.0 - dot / na) * delta_a + (1.0 - dot / nb) * delta_b)
    return torch.where(dot < 0, projected, 0.5 * (delta_a + delta_b))  # no host sync


def stepwise_threshold(cost_limit: float, gamma: float, horizon: int) -> float:
    """Per-step Q-cost threshold equivalent to an episodic budget: ``k (1-g^T) / ((1-g) T)``."""
    return cost_limit * (1.0 - gamma**horizon) / ((1.0 - gamma) * horizon)


def flat_params(params: Iterable[nn.Parameter]) -> torch.Tensor:
    """A detached flat copy of the parameters."""
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def set_flat_params_(params: Iterable[nn.Parameter], flat: torch.Tensor) -> None:
    """Copy ``flat`` into the parameters in place (optimizer references stay valid)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, parameters {offset}")
