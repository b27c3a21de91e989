"""DRCORL stage 2: reward and cost critics (``algorithms.md`` 1.4).

IQL pre-training on dataset actions, the same rule for reward (``y = r~``) and cost (``y = c``)::

    L_V(psi) = E |tau - 1{u<0}| u^2,          u = sg(min_j Qbar_j(s, a)) - V_psi(s),  tau = 0.7
    L_Q      = mean_j E (Q_j(s, a) - (y + gamma (1 - d) sg V_psi(s')))^2

then Polyak ``Qbar <- (1 - 0.005) Qbar + 0.005 Q``. Rewards are scaled as in IQL locomotion,
``r~ = r 1000 / (R_max - R_min)`` (episodes cut at terminals or every 1000 steps); costs are not.

TD fine-tuning during policy learning (:meth:`CriticLearner.td_update`): each member bootstraps
from its own target at the current policy (SARSA-style policy evaluation)::

    y_j = y + gamma (1 - d) Qbar_j(s', pi(s')),     L_Q = mean_j E (Q_j(s, a) - y_j)^2

and V keeps its expectile update (unused afterwards).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from corl.algos.drcorl.config import CriticConfig
from corl.data.dataset import TransitionDataset
from corl.nn.critics import EnsembleQ, ValueFunction, soft_update
from corl.nn.losses import expectile_loss
from corl.nn.mlp import EnsembleLinear


# ----------------------------------------------------------------------------- reward scale
def iql_reward_scale(dataset: TransitionDataset, episode_steps: int = 1000) -> float:
    """``1000 / (R_max - R_min)`` over episodes cut at terminals or every ``episode_steps`` rows.

    As the IQL locomotion convention the authors use (pitfall 7: time-outs are ignored, so the
    scale depends on the task's episode length). A trailing unfinished segment is dropped.
    """
    rewards = dataset.rewards.detach().cpu().double().numpy()
    terminals = dataset.terminals.detach().cpu().numpy().astype(bool)
    n = len(rewards)
    if n == 0:
        return 1.0
    seg_start = np.zeros(n, dtype=bool)
    seg_start[0] = True
    seg_start[1:] = terminals[:-1]
    seg_id = np.cumsum(seg_start) - 1
    first_row = np.flatnonzero(seg_start)
    pos = np.arange(n) - first_row[seg_id]
    ends = terminals | (pos % episode_steps == episode_steps - 1)
    ep_start = np.zeros(n, dtype=bool)
    ep_start[0] = True
    ep_start[1:] = ends[:-1]
    ep_id = np.cumsum(ep_start) - 1
    returns = np.bincount(ep_id, weights=rewards)
    finished = np.zeros(len(returns), dtype=bool)
    finished[ep_id[ends]] = True
    returns = returns[finished] if finished.any() else returns
    spread = float(returns.max() - returns.min())
    return 1000.0 / spread if spread > 0 else 1.0


def kaiming_uniform_ensemble_(q: EnsembleQ) -> None:
    """Kaiming-uniform weights (ReLU gain, per member fan-in) and zero biases."""
    for m in q.modules():
        if isinstance(m, EnsembleLinear):
            bound = math.sqrt(6.0 / m.in_dim)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- losses
def value_loss(
    v: ValueFunction, q_target: EnsembleQ, obs: torch.Tensor, act: torch.Tensor, expectile: float
) -> torch.Tensor:
    """``L_V = E |tau - 1{u<0}| u^2``, ``u = sg(min_j Qbar_j(s, a)) - V(s)``."""
    with torch.no_grad():
        target = q_target.reduced(obs, act, "min")
    return expectile_loss(target - v(obs), expectile)


def iql_q_loss(
    q: EnsembleQ,
    v: ValueFunction,
    obs: torch.Tensor,
    act: torch.Tensor,
    y: torch.Tensor,
    next_obs: torch.Tensor,
    not_done: torch.Tensor,
    gamma: float,
    broadcast_bug: bool = False,
) -> torch.Tensor:
    """``mean_j E (Q_j(s, a) - (y + gamma (1-d) sg V(s')))^2``.

    ``broadcast_bug`` reproduces the authors' cost path: a ``(B,)`` target against ``(B, 1)``
    bootstraps -> a ``(B, B)`` target, ``mean_{i,k} (Q_j(s_i) - y_k - gamma (1-d_i) V(s'_i))^2``.
    """
    with torch.no_grad():
        boot = gamma * not_done * v(next_obs)
    qs = q(obs, act)  # (E, B)
    if broadcast_bug:
        target = y.reshape(1, -1) + boot.reshape(-1, 1)  # (B, B): [i, k] = y_k + boot_i
        return ((qs.unsqueeze(-1) - target.unsqueeze(0)) ** 2).mean()
    return ((qs - (y + boot)) ** 2).mean()


def td_q_loss(
    q: EnsembleQ,
    q_target: EnsembleQ,
    obs: torch.Tensor,
    act: torch.Tensor,
    y: torch.Tensor,
    next_obs: torch.Tensor,
    next_act: torch.Tensor,
    not_done: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """``mean_j E (Q_j(s, a) - (y + gamma (1-d) Qbar_j(s', pi(s'))))^2`` (per-member targets)."""
    with torch.no_grad():
        target = y + gamma * not_done * q_target(next_obs, next_act)  # (E, B)
    return ((q(obs, act) - target) ** 2).mean()


# ----------------------------------------------------------------------------- learner
class CriticLearner:
    """Twin reward critic ``Q_r`` and twin (or 6-ensemble) cost critic ``Q_c`` with ``V_r, V_c``.

    ``update(batch)``: one IQL pre-training step of both channels.
    ``td_update(batch, policy)``: one policy-evaluation step (used by the policy learner).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: CriticConfig | None = None,
        reward_scale: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = cfg = config or CriticConfig()
        self.device = torch.device(device)
        self.reward_scale = float(reward_scale)
        hidden = tuple(cfg.hidden)
        self.q_r = EnsembleQ(obs_dim, act_dim, 2, hidden).to(self.device)
        n_c = cfg.ensemble_size if cfg.qc_mode == "ensemble" else 2
        self.q_c = EnsembleQ(obs_dim, act_dim, n_c, hidden).to(self.device)
        if cfg.qc_mode == "ensemble":
            kaiming_uniform_ensemble_(self.q_c)
        self.q_r_target = copy.deepcopy(self.q_r).requires_grad_(False)
        self.q_c_target = copy.deepcopy(self.q_c).requires_grad_(False)
        self.v_r = ValueFunction(obs_dim, hidden).to(self.device)
        self.v_c = ValueFunction(obs_dim, hidden).to(self.device)
        self.reset_optimizers()
        self._value_loss = torch.compile(value_loss) if cfg.compile else value_loss
        self._iql_q_loss = torch.compile(iql_q_loss) if cfg.compile else iql_q_loss
        self._td_q_loss = torch.compile(td_q_loss) if cfg.compile else td_q_loss
        self.step = 0  # IQL pre-training steps
        self.td_step = 0  # TD fine-tuning steps

    def reset_optimizers(self) -> None:
        """Fresh Adam optimizers (one for both Q's, one for both V's: independent losses)."""
        cfg = self.config
        self.q_optimizer = torch.optim.Adam([*self.q_r.parameters(), *self.q_c.parameters()], lr=cfg.q_lr, foreach=True)
        self.v_optimizer = torch.optim.Adam([*self.v_r.parameters(), *self.v_c.parameters()], lr=cfg.v_lr, foreach=True)

    # ------------------------------------------------------------------ IQL pre-training
    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        obs, act, next_obs = batch["observations"], batch["actions"], batch["next_observations"]
        reward = batch["rewards"].reshape(-1) * self.reward_scale
        cost = batch["costs"].reshape(-1)
        not_done = 1.0 - batch["terminals"].reshape(-1).float()
        v_r_loss, v_c_loss = self._update_values(obs, act)
        cfg = self.config
        q_r_loss = self._iql_q_loss(self.q_r, self.v_r, obs, act, reward, next_obs, not_done, cfg.gamma)
        q_c_loss = self._iql_q_loss(
            self.q_c, self.v_c, obs, act, cost, next_obs, not_done, cfg.gamma, broadcast_bug=not cfg.fix_cost_broadcast
        )
        self._step_q(q_r_loss, q_c_loss)
        self._polyak()
        self.step += 1
        return _floats("critic/", v_r_loss=v_r_loss, v_c_loss=v_c_loss, q_r_loss=q_r_loss, q_c_loss=q_c_loss)

    def _update_values(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expectile regression of ``V_r`` and ``V_c`` on ``min_j Qbar_j`` (one Adam step)."""
        tau = self.config.expectile
        tau_c = tau if self.config.cost_expectile is None else self.config.cost_expectile
        v_r_loss = self._value_loss(self.v_r, self.q_r_target, obs, act, tau)
        v_c_loss = self._value_loss(self.v_c, self.q_c_target, obs, act, tau_c)
        self.v_optimizer.zero_grad(set_to_none=True)
        (v_r_loss + v_c_loss).backward()
        self.v_optimizer.step()
        return v_r_loss.detach(), v_c_loss.detach()

    def _step_q(self, q_r_loss: torch.Tensor, q_c_loss: torch.Tensor) -> None:
        self.q_optimizer.zero_grad(set_to_none=True)
        (q_r_loss + q_c_loss).backward()
        self.q_optimizer.step()

    def _polyak(self) -> None:
        soft_update(self.q_r_target, self.q_r, self.config.tau)
        soft_update(self.q_c_target, self.q_c, self.config.tau)

    # ------------------------------------------------------------------ TD fine-tuning
    def td_update(
        self, batch: Mapping[str, torch.Tensor], policy: Callable[[torch.Tensor], torch.Tensor]
    ) -> dict[str, float]:
        """Policy evaluation of ``pi`` with per-member targets (V still expectile-updated)."""
        obs, act, next_obs = batch["observations"], batch["actions"], batch["next_observations"]
        reward = batch["rewards"].reshape(-1) * self.reward_scale
        cost = batch["costs"].reshape(-1)
        not_done = 1.0 - batch["terminals"].reshape(-1).float()
        v_r_loss, v_c_loss = self._update_values(obs, act)
        with torch.no_grad():
            next_act = policy(next_obs)
        g = self.config.gamma
        q_r_loss = self._td_q_loss(self.q_r, self.q_r_target, obs, act, reward, next_obs, next_act, not_done, g)
        q_c_loss = self._td_q_loss(self.q_c, self.q_c_target, obs, act, cost, next_obs, next_act, not_done, g)
        self._step_q(q_r_loss, q_c_loss)
        self._polyak()
        self.td_step += 1
        return _floats("critic/", v_r_loss=v_r_loss, v_c_loss=v_c_loss, td_q_r_loss=q_r_loss, td_q_c_loss=q_c_loss)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "q_r": self.q_r.state_dict(),
            "q_c": self.q_c.state_dict(),
            "q_r_target": self.q_r_target.state_dict(),
            "q_c_target": self.q_c_target.state_dict(),
            "v_r": self.v_r.state_dict(),
            "v_c": self.v_c.state_dict(),
            "q_optimizer": self.q_optimizer.state_dict(),
            "v_optimizer": self.v_optimizer.state_dict(),
            "reward_scale": self.reward_scale,
            "step": self.step,
            "td_step": self.td_step,
        }

    def load_state_dict(self, state: Mapping[str, Any], optimizers: bool = True) -> None:
        for name in ("q_r", "q_c", "q_r_target", "q_c_target", "v_r", "v_c"):
            getattr(self, name).load_state_dict(state[name])
        if optimizers:
            self.q_optimizer.load_state_dict(state["q_optimizer"])
            self.v_optimizer.load_state_dict(state["v_optimizer"])
        self.reward_scale = float(state["reward_scale"])
        self.step = int(state["step"])
        self.td_step = int(state["td_step"])


def _floats(prefix: str, **values: torch.Tensor) -> dict[str, float]:
    """Detached scalars -> floats with one device sync."""
    numbers = torch.stack([v.detach().float() for v in values.values()]).tolist()
    return {prefix + k: x for k, x in zip(values, numbers)}
