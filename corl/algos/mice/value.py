"""MICE's extrinsic–intrinsic cost value with bias correction (algorithms.md §4.4), per slice.

A *slice* is one env's run of steps closed at a true termination (bootstrap 0), a time-out
(bootstrap ``V(final_observation)``) or the epoch boundary (bootstrap ``V(s_current)``).
With ``V_c`` the cost critic's values on the slice and ``V_c(s_T)`` the bootstrap::

    δ⁰_t  = c_t + β c^I_t + γ V_c(s_{t+1}) − V_c(s_t)
    β_t   = β − η_β δ⁰_t / c^I_t   if |c^I_t| > guard, else β
    δ_t   = c_t + β_t c^I_t + γ V_c(s_{t+1}) − V_c(s_t)
    A^C_t = Σ_l (γ λ_c)^l δ_{t+l},      V^targ_c,t = A^C_t + V_c(s_t)
    Ĵ^I   = Σ_t γ^t β_t c^I_t           (one number per slice, broadcast to its steps)
    β     ← (1 − ema) β + ema · mean_t β_t

``γ`` here is the **cost** discount (the released buffer uses the reward γ; both are 0.99 by
default, and ``MICEConfig.correction_uses_reward_gamma`` reproduces it). The reward side is
plain GAE (:func:`gae`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.signal import lfilter


def discounted_cumsum(x: torch.Tensor, discount: float) -> torch.Tensor:
    """``y_t = Σ_l discount^l x_{t+l}`` (reverse scan, float64 accumulation).

    One call to SciPy's IIR filter ``y_t = x_t + discount · y_{t+1}`` on the reversed slice: the
    same float64 recursion as a Python loop over ``t`` (bit-identical), without per-step Python.
    """
    xs = x.detach().double().cpu().numpy()[::-1]
    ys = lfilter([1.0], [1.0, -float(discount)], xs)[::-1]
    return torch.from_numpy(ys.copy()).to(device=x.device, dtype=x.dtype)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, last_value: float, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation on one slice: ``(advantages, value targets)``."""
    next_values = torch.cat([values[1:], values.new_tensor([float(last_value)])])
    deltas = rewards + gamma * next_values - values
    adv = discounted_cumsum(deltas, gamma * lam)
    return adv, adv + values


@dataclass
class CorrectedCostValue:
    advantages: torch.Tensor  # A^C_t
    targets: torch.Tensor  # V^targ_c,t
    beta_t: torch.Tensor  # per-step corrected weights
    intrinsic_return: float  # Ĵ^I of the slice
    beta: float  # the updated slice-level β


def bias_corrected_cost_value(
    costs: torch.Tensor,
    intrinsic: torch.Tensor,
    values: torch.Tensor,
    last_value: float,
    beta: float,
    gamma: float,
    lam: float,
    beta_lr: float,
    beta_ema: float = 0.1,
    guard: float = 1e-8,
) -> CorrectedCostValue:
    """The §4.4 recursion on one slice (see the module docstring)."""
    next_values = torch.cat([values[1:], values.new_tensor([float(last_value)])])
    td = gamma * next_values - values
    delta0 = costs + beta * intrinsic + td
    active = intrinsic.abs() > guard
    safe_ci = torch.where(active, intrinsic, torch.ones_like(intrinsic))
    beta_t = torch.where(active, beta - beta_lr * delta0 / safe_ci, torch.full_like(intrinsic, beta))
    delta = costs + beta_t * intrinsic + td
    adv = discounted_cumsum(delta, gamma * lam)
    discounts = gamma ** torch.arange(costs.shape[0], dtype=torch.float64)
    j_intrinsic = float((discounts * (beta_t * intrinsic).double()).sum())
    new_beta = (1.0 - beta_ema) * beta + beta_ema * float(beta_t.mean())
    return CorrectedCostValue(adv, adv + values, beta_t, j_intrinsic, new_beta)
