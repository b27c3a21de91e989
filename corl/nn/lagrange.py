"""Lagrange multipliers for constrained RL: one component every constrained method reuses.

* :class:`LagrangeMultiplier` — gradient ascent on the dual: minimise ``-λ·(J_c - d)`` with
  Adam, then project ``λ`` onto ``[0, upper_bound]``. ``λ`` grows while the cost estimate
  ``J_c`` exceeds the limit ``d`` and shrinks (to 0) while it is below.
* :class:`PIDLagrangeMultiplier` — the PID Lagrangian (Stooke et al. 2020):
  ``e = J_c - d``; ``I ← max(0, I + ki·e)``; ``λ = max(0, kp·e + I + kd·max(0, J_c - J_c^prev))``,
  with an optional exponential moving average of ``J_c`` for the P and D terms.

Both expose ``value`` (a float, the current λ), ``update(cost_estimate) -> float`` and
``state_dict()/load_state_dict()`` for exact resume.

:func:`corl.nn.losses.stepwise_threshold` (re-exported here) turns an episodic cost limit
into the per-step limit a discounted cost critic is compared against.
"""

from __future__ import annotations

from typing import Mapping

import torch

from corl.nn.losses import stepwise_threshold

__all__ = ["LagrangeMultiplier", "PIDLagrangeMultiplier", "stepwise_threshold"]


class LagrangeMultiplier:
    """``λ ≥ 0`` learned by Adam on ``L(λ) = -λ·(J_c - d)``, projected after each step."""

    def __init__(
        self,
        cost_limit: float,
        init_value: float = 0.0,
        lr: float = 3e-4,
        upper_bound: float | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cost_limit = float(cost_limit)
        self.upper_bound = upper_bound
        self.lagrangian = torch.nn.Parameter(torch.tensor(float(init_value), device=device))
        self.optimizer = torch.optim.Adam([self.lagrangian], lr=lr)

    @property
    def value(self) -> float:
        return float(self.lagrangian.detach())

    def loss(self, cost_estimate: torch.Tensor | float) -> torch.Tensor:
        """``-λ·(J_c - d)`` with ``J_c`` treated as a constant."""
        j_c = torch.as_tensor(cost_estimate, dtype=torch.float32, device=self.lagrangian.device).detach()
        return -self.lagrangian * (j_c.mean() - self.cost_limit)

    def update(self, cost_estimate: torch.Tensor | float) -> float:
        """One dual ascent step; returns the new λ."""
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(cost_estimate).backward()
        self.optimizer.step()
        with torch.no_grad():
            self.lagrangian.clamp_(min=0.0, max=self.upper_bound)
        return self.value

    def state_dict(self) -> dict:
        return {"lagrangian": self.lagrangian.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        with torch.no_grad():
            self.lagrangian.copy_(state["lagrangian"])
        self.optimizer.load_state_dict(state["optimizer"])


class PIDLagrangeMultiplier:
    """PID-controlled ``λ`` (ReLU'd integral and derivative terms, optional EMA on ``J_c``).

    ``form="osrl"`` is OSRL's ``LagrangianPIDController`` exactly: the proportional term is
    ``kp·relu(e)`` (an over-satisfied constraint does not pull ``λ`` below the integral) and
    the previous error starts at 0, so the first derivative term is ``kd·relu(e)``. The
    integral ``I ← max(0, I + ki·e)`` is OSRL's ``ki·relu(I' + e)`` written in λ units.

    ``form="drcorl"`` is DRCORL's update on its cost critic, as the authors compute it (all
    three terms ReLU'd, the integral in error units, no EMA)::

        e_k = J_c - d,   I_k = max(0, I_{k-1} + e_k),   D_k = max(0, e_k - e_{k-1}),  e_0 = 0
        λ = max(0, kp·max(0, e_k) + ki·I_k + kd·D_k)

    The same λ as "osrl" in exact arithmetic, but its own order of floating-point operations,
    so a DRCORL run's numbers are the authors' bit for bit.
    """

    def __init__(
        self,
        cost_limit: float,
        kp: float = 0.05,
        ki: float = 5e-4,
        kd: float = 0.1,
        init_value: float = 0.0,
        ema_alpha: float = 0.0,
        upper_bound: float | None = None,
        form: str = "corl",
    ) -> None:
        if form not in ("corl", "osrl", "drcorl"):
            raise ValueError(f"form must be 'corl', 'osrl' or 'drcorl', got {form!r}")
        self.form = form
        self.cost_limit = float(cost_limit)
        self.kp, self.ki, self.kd = kp, ki, kd
        self.ema_alpha = ema_alpha  # 0: no smoothing
        self.upper_bound = upper_bound
        self.integral = float(init_value)
        self.smoothed: float | None = None
        # the previous J_c ("osrl": starts at the limit) or, for "drcorl", the previous error
        self.previous: float | None = {"osrl": self.cost_limit, "drcorl": 0.0}.get(form)
        self._value = float(init_value)

    @property
    def value(self) -> float:
        return self._value

    def update(self, cost_estimate: torch.Tensor | float) -> float:
        j_c = float(torch.as_tensor(cost_estimate, dtype=torch.float32).mean())
        error = j_c - self.cost_limit
        if self.form == "drcorl":
            return self._drcorl_update(error)
        self.integral = max(0.0, self.integral + self.ki * error)
        self.smoothed = j_c if self.smoothed is None else (self.ema_alpha * self.smoothed + (1 - self.ema_alpha) * j_c)
        derivative = 0.0 if self.previous is None else max(0.0, self.smoothed - self.previous)
        self.previous = self.smoothed
        proportional = self.smoothed - self.cost_limit
        if self.form == "osrl":
            proportional = max(0.0, proportional)
        value = max(0.0, self.kp * proportional + self.integral + self.kd * derivative)
        if self.upper_bound is not None:
            value = min(value, self.upper_bound)
        self._value = value
        return value

    def _drcorl_update(self, error: float) -> float:
        self.integral = max(0.0, self.integral + error)
        derivative = max(0.0, error - float(self.previous or 0.0))
        self.previous = error
        self._value = max(0.0, self.kp * max(0.0, error) + self.ki * self.integral + self.kd * derivative)
        return self._value

    def state_dict(self) -> dict:
        return {"integral": self.integral, "smoothed": self.smoothed, "previous": self.previous, "value": self._value}

    def load_state_dict(self, state: Mapping) -> None:
        self.integral = float(state["integral"])
        # DRCORL checkpoints written before its PID moved here name the previous error prev_error
        self.smoothed = state.get("smoothed")
        self.previous = state["previous"] if "previous" in state else state["prev_error"]
        self._value = float(state["value"])
