"""FISOR: feasibility-guided safe offline RL (Zheng et al., ICLR 2024, arXiv 2401.10700).

Follows the authors' JAX code (``jaxrl5/agents/fisor/fisor.py``; baselines.md section 6).
Safety is a hard, state-wise constraint learned as a Hamilton-Jacobi reachability value:

* Constraint signal ``h = +cost_scale`` where the step costs, else ``-1``.
* Feasibility critics (reversed expectile: ``V_h`` is a *low* expectile of ``Q_h``)::

      L_Vh = mean w (u_h)^2,  u_h = max_k Q_h'(s, a) - V_h(s),  w = 0.9 if u_h < 0 else 0.1
      y_h  = (1 - gamma) h + gamma max(h, V_h(s'))    (y_h = h at terminals)
      L_Qh = mean_k,batch (Q_h,k(s, a) - y_h)^2

* Reward critics (IQL, expectile 0.9): ``L_V = mean |0.9 - 1[u < 0]| u^2`` with
  ``u = min_k Q'(s, a) - V(s)``; ``L_Q = mean (Q_k - (r + gamma mask V(s')))^2``.
* Weighted behaviour cloning by a DDPM (eps-prediction, ``T = 5`` VP steps)::

      w = clip(exp(cost_temp (V_h(s) - Q_h'(s, a))), 0, cost_ub)     where V_h(s) > 0
      w = clip(exp(reward_temp (Q'(s, a) - V(s))), 0, 100)           where V_h(s) <= 0, Q_h'(s, a) <= 0
      w = 0                                                          otherwise
      L_pi = mean w ||eps_theta(sqrt(ab_t) a + sqrt(1 - ab_t) eps, t, s) - eps||^2

  (``Q'``, ``Q_h'`` the target critics, ``V``, ``V_h`` the online ones, as the code does).
* Per update: the actor on each of ``actor_splits`` slices of the batch, then the critics on
  the first ``critic_batch_size`` rows (V, Q, Polyak; V_h, Q_h, Polyak). The actor uses AdamW
  with a cosine-decayed lr and an EMA copy (rate 0.001) that the evaluation uses.
* Acting: ``num_candidates`` DDPM samples of the EMA actor per state; the one with the least
  ``max_k Q_h'`` is taken (``minqc``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from corl.nn import EnsembleQ, ScoreNet, ValueFunction, expectile_loss, soft_update
from corl.nn.diffusion import DDPMSchedule, ddpm_sample


@dataclass
class FISORConfig:
    """The authors' ``configs/train_config.py`` and ``fisor.create`` defaults."""

    steps: int = 1_000_000
    batch_size: int = 2048
    actor_splits: int = 2  # the actor steps on each half of the batch
    critic_batch_size: int = 256  # the critics train on the first rows only
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    actor_lr_decay_steps: int = 3_000_000  # cosine decay over optimiser steps
    gamma: float = 0.99
    tau: float = 0.005
    actor_ema: float = 0.001
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # critic widths
    num_q: int = 2
    expectile: float = 0.9  # reward V
    feasibility_expectile: float = 0.9  # reversed: 0.9 below, 0.1 above
    reward_temperature: float = 3.0
    cost_temperature: float = 5.0
    reward_weight_cap: float = 100.0
    cost_ub: float = 150.0
    cost_scale: float = 25.0  # h = +cost_scale where c > 0, else -1
    normalize_returns: bool = True  # r * T / (R_max - R_min) with DSRL's reference returns
    diffusion_steps: int = 5
    beta_min: float = 0.1
    beta_max: float = 10.0
    width: int = 256
    blocks: int = 3
    time_dim: int = 128
    fourier_features: int = 32
    fourier_scale: float = 0.2
    dropout: float = 0.1
    num_candidates: int = 16
    cost_limit: float | None = None  # scoring only: the hard constraint ignores it in training

    def __post_init__(self) -> None:
        if self.batch_size % self.actor_splits or self.critic_batch_size > self.batch_size:
            raise ValueError("batch_size must split evenly into actor_splits and hold critic_batch_size")


def constraint_signal(cost: torch.Tensor, cost_scale: float) -> torch.Tensor:
    """``h = +cost_scale`` where the step costs, else ``-1`` (``critic_type='hj'``)."""
    return torch.where(cost > 0, torch.full_like(cost, cost_scale), torch.full_like(cost, -1.0))


def build_actor(obs_dim: int, act_dim: int, cfg: FISORConfig) -> ScoreNet:
    return ScoreNet(
        obs_dim,
        act_dim,
        cfg.width,
        cfg.blocks,
        cfg.time_dim,
        cfg.fourier_features,
        cfg.fourier_scale,
        dropout=cfg.dropout,
        fourier_learnable=True,
    )


class FISORPolicy(nn.Module):
    """Evaluation: DDPM candidates from the EMA actor, the one with the least ``max_k Q_h'``."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        actor: dict,
        critic_hidden: list[int],
        num_q: int = 2,
        diffusion: dict | None = None,
        num_candidates: int = 16,
        act_low=None,
        act_high=None,
    ) -> None:
        super().__init__()
        self.actor = ScoreNet(obs_dim, act_dim, **actor)
        self.feasibility = EnsembleQ(obs_dim, act_dim, num_q, critic_hidden)
        self.schedule_kwargs = diffusion or {}
        self.num_candidates = num_candidates
        low = torch.as_tensor(act_low if act_low is not None else [-1.0] * act_dim, dtype=torch.float32)
        high = torch.as_tensor(act_high if act_high is not None else [1.0] * act_dim, dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        schedule = DDPMSchedule(device=obs.device, **self.schedule_kwargs)
        n, k = obs.shape[0], self.num_candidates
        s_rep = obs.repeat_interleave(k, 0)
        cand = ddpm_sample(self.actor, schedule, s_rep)
        qh = self.feasibility(s_rep, cand).max(0).values.view(n, k)
        best = cand.view(n, k, -1)[torch.arange(n, device=obs.device), qh.argmin(1)]
        return best * self.action_scale + self.action_bias

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act(obs)


class FISORLearner:
    """One FISOR update (actor slices, then critics) per :meth:`update`."""

    def __init__(
        self,
        cfg: FISORConfig,
        obs_dim: int,
        act_dim: int,
        reward_factor: float = 1.0,
        act_low=None,
        act_high=None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg, self.device, self.reward_factor = cfg, torch.device(device), float(reward_factor)
        low = torch.as_tensor(act_low if act_low is not None else [-1.0] * act_dim, dtype=torch.float32)
        high = torch.as_tensor(act_high if act_high is not None else [1.0] * act_dim, dtype=torch.float32)
        self.act_scale, self.act_bias = ((high - low) / 2).to(self.device), ((high + low) / 2).to(self.device)
        self.schedule = DDPMSchedule(cfg.diffusion_steps, cfg.beta_min, cfg.beta_max, self.device)
        self.actor = build_actor(obs_dim, act_dim, cfg).to(self.device)
        self.actor_ema = copy.deepcopy(self.actor).requires_grad_(False)
        self.q = EnsembleQ(obs_dim, act_dim, cfg.num_q, cfg.hidden).to(self.device)
        self.qh = EnsembleQ(obs_dim, act_dim, cfg.num_q, cfg.hidden).to(self.device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.qh_target = copy.deepcopy(self.qh).requires_grad_(False)
        self.v = ValueFunction(obs_dim, cfg.hidden).to(self.device)
        self.vh = ValueFunction(obs_dim, cfg.hidden).to(self.device)
        self.actor_opt = torch.optim.AdamW(self.actor.parameters(), lr=cfg.actor_lr, weight_decay=0.0)
        self.actor_sched = torch.optim.lr_scheduler.LambdaLR(
            self.actor_opt,
            lambda k: 0.5 * (1 + math.cos(math.pi * min(k, cfg.actor_lr_decay_steps) / cfg.actor_lr_decay_steps)),
        )
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=cfg.critic_lr)
        self.qh_opt = torch.optim.Adam(self.qh.parameters(), lr=cfg.critic_lr)
        self.v_opt = torch.optim.Adam(self.v.parameters(), lr=cfg.value_lr)
        self.vh_opt = torch.optim.Adam(self.vh.parameters(), lr=cfg.value_lr)
        self.policy_kwargs = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "critic_hidden": list(cfg.hidden),
            "num_q": cfg.num_q,
            "actor": {
                "width": cfg.width,
                "blocks": cfg.blocks,
                "time_dim": cfg.time_dim,
                "fourier_features": cfg.fourier_features,
                "fourier_scale": cfg.fourier_scale,
                "dropout": cfg.dropout,
                "fourier_learnable": True,
            },
            "diffusion": {"steps": cfg.diffusion_steps, "beta_min": cfg.beta_min, "beta_max": cfg.beta_max},
            "num_candidates": cfg.num_candidates,
            "act_low": low.tolist(),
            "act_high": high.tolist(),
        }
        self.step = 0

    # ------------------------------------------------------------------ data
    def _prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        done = batch["terminals"] | batch["timeouts"]
        act = ((batch["actions"] - self.act_bias) / self.act_scale).clamp(-1 + 1e-5, 1 - 1e-5)
        return {
            "obs": batch["observations"],
            "next_obs": batch["next_observations"],
            "act": act,
            "reward": batch["rewards"] * self.reward_factor,
            "h": constraint_signal(batch["costs"], self.cfg.cost_scale),
            "mask": (~done).float(),
            "terminal": done.float(),
        }

    # ------------------------------------------------------------------ actor
    @torch.no_grad()
    def weights(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """The weighted-BC weights of (s, a): feasibility-first, reward advantage inside."""
        cfg = self.cfg
        q = self.q_target(obs, act).min(0).values
        qh = self.qh_target(obs, act).max(0).values
        v, vh = self.v(obs), self.vh(obs)
        unsafe = torch.exp(cfg.cost_temperature * (vh - qh)).clamp(0, cfg.cost_ub)
        safe = torch.exp(cfg.reward_temperature * (q - v)).clamp(0, cfg.reward_weight_cap)
        return torch.where(vh > 0, unsafe, torch.where(qh <= 0, safe, torch.zeros_like(safe)))

    def _actor_step(self, obs: torch.Tensor, act: torch.Tensor) -> float:
        w = self.weights(obs, act)
        index = torch.randint(0, self.schedule.steps, (obs.shape[0],), device=self.device)
        noise = torch.randn_like(act)
        pred = self.actor(self.schedule.perturb(act, index, noise), index.float(), obs)
        loss = (w * (pred - noise).pow(2).sum(-1)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        self.actor_sched.step()
        soft_update(self.actor_ema, self.actor, self.cfg.actor_ema)
        return float(loss.detach())

    # ------------------------------------------------------------------ critics
    def _value_step(self, b: dict[str, torch.Tensor]) -> tuple[float, float]:
        cfg = self.cfg
        with torch.no_grad():
            q = self.q_target(b["obs"], b["act"]).min(0).values
        v_loss = expectile_loss(q - self.v(b["obs"]), cfg.expectile)
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        with torch.no_grad():
            y = b["reward"] + cfg.gamma * b["mask"] * self.v(b["next_obs"])
        q_loss = (self.q(b["obs"], b["act"]) - y).pow(2).mean()
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        soft_update(self.q_target, self.q, cfg.tau)
        return float(v_loss.detach()), float(q_loss.detach())

    def _feasibility_step(self, b: dict[str, torch.Tensor]) -> tuple[float, float]:
        cfg = self.cfg
        with torch.no_grad():
            qh = self.qh_target(b["obs"], b["act"]).max(0).values
        # reversed expectile: weight tau_h below (u < 0), 1 - tau_h above
        vh_loss = expectile_loss(qh - self.vh(b["obs"]), 1.0 - cfg.feasibility_expectile)
        self.vh_opt.zero_grad(set_to_none=True)
        vh_loss.backward()
        self.vh_opt.step()
        with torch.no_grad():
            h = b["h"]
            backup = (1 - cfg.gamma) * h + cfg.gamma * torch.maximum(h, self.vh(b["next_obs"]))
            y = b["terminal"] * h + (1 - b["terminal"]) * backup
        qh_loss = (self.qh(b["obs"], b["act"]) - y).pow(2).mean()
        self.qh_opt.zero_grad(set_to_none=True)
        qh_loss.backward()
        self.qh_opt.step()
        soft_update(self.qh_target, self.qh, cfg.tau)
        return float(vh_loss.detach()), float(qh_loss.detach())

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg, b = self.cfg, self._prepare(batch)
        actor_losses = [
            self._actor_step(o, a) for o, a in zip(b["obs"].chunk(cfg.actor_splits), b["act"].chunk(cfg.actor_splits))
        ]
        mini = {k: v[: cfg.critic_batch_size] for k, v in b.items()}
        v_loss, q_loss = self._value_step(mini)
        vh_loss, qh_loss = self._feasibility_step(mini)
        self.step += 1
        return {
            "actor/loss": sum(actor_losses) / len(actor_losses),
            "v/loss": v_loss,
            "q/loss": q_loss,
            "vh/loss": vh_loss,
            "qh/loss": qh_loss,
        }

    def make_policy(self) -> FISORPolicy:
        policy = FISORPolicy(**self.policy_kwargs).to(self.device)
        policy.actor.load_state_dict(self.actor_ema.state_dict())
        policy.feasibility.load_state_dict(self.qh_target.state_dict())
        return policy

    _MODULES = (
        "actor",
        "actor_ema",
        "q",
        "qh",
        "q_target",
        "qh_target",
        "v",
        "vh",
        "actor_opt",
        "actor_sched",
        "q_opt",
        "qh_opt",
        "v_opt",
        "vh_opt",
    )

    def state_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name).state_dict() for name in self._MODULES}, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._MODULES:
            getattr(self, name).load_state_dict(state[name])
        self.step = int(state["step"])
