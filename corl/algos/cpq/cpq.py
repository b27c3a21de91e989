"""CPQ: constraints penalized Q-learning (Xu et al., AAAI 2022), as OSRL's ``cpq.py``.

baselines.md section 3. Out-of-distribution actions, those whose VAE latent KL is in the top
quarter of the policy's samples, are treated as unsafe: the cost critic is pushed up there by
a dual-weighted term. The reward critic bootstraps, and the actor climbs, only where the cost
critic says safe. Per training step, in this order:

1. (``vae_joint`` only) one VAE step.
2. Reward critic, ``a' ~ pi(s')``::

       y   = r + gamma (1 - d) 1[Q_c'(s', a') <= q_thres] Q'(s', a')
       L_Q = sum_members mean (Q_k(s, a) - y)^2

3. Cost critic, with OOD samples ``u_j ~ N(mu(s), sigma(s))`` (pre-tanh, ``j = 1..N``)::

       y_c    = c + gamma Q_c'(s', a')                          (OSRL: no (1 - d))
       ood_j  = 1[KL_j >= quantile_0.75(KL)]  Q_c(s, u_j)
       L_c    = sum_members mean (Q_c,k(s, a) - y_c)^2 - alpha (mean ood - 1.5 q_thres)
       log alpha <- clip(log alpha + alpha_lr alpha (1.5 q_thres - mean ood), -5, 5)

   OSRL evaluates ``ood`` with the *target* cost critic under ``no_grad``, so the penalty has
   no gradient and the cost critic learns the plain Bellman target (``osrl_compat = True``);
   ``osrl_compat = False`` uses the online cost critic with its gradient, the paper's intent.
4. Actor, ``a ~ pi(s)`` reparameterised, critics frozen:
   ``L_pi = - mean 1[Q_c(s, a) <= q_thres] Q(s, a)`` (no entropy term).
5. Polyak averaging of both critics.

``Q`` and ``Q_c`` are the min over their 2 members. ``q_thres`` is OSRL's threshold
``L (1 - gamma^T) / ((1 - gamma) T)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from corl.algos.baselines.common import BatchPrep, OfflineSafeConfig, bounds_kwargs, joint_vae_step
from corl.nn import VAE, EnsembleQ, TanhGaussianPolicy, soft_update


@dataclass
class CPQConfig(OfflineSafeConfig):
    """OSRL's ``CPQTrainConfig`` (CarCircle uses the base config)."""

    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-4
    vae_lr: float = 1e-3
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    num_samples: int = 10  # OOD samples per state
    ood_quantile: float = 0.75  # KL quantile above which a sample counts as OOD
    qc_scalar: float = 1.5  # the OOD dual's threshold is qc_scalar * q_thres
    num_q: int = 2
    num_qc: int = 2
    #: OSRL computes the OOD penalty from the target cost critic without gradient (no effect
    #: on the critic); False keeps the online critic's gradient (the paper's penalty)
    osrl_compat: bool = True
    #: OSRL's cost backup has no ``(1 - d)``; True masks it like the reward backup
    cost_done_mask: bool = False
    #: OSRL scores OOD samples in the policy's pre-tanh space ("pre_tanh"); "squashed" uses tanh(u)
    ood_space: str = "pre_tanh"
    vae_joint: bool = False
    vae_beta: float = 0.5
    log_std_min: float = -20.0  # OSRL's SquashedGaussianMLPActor clamp

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ood_space not in ("pre_tanh", "squashed"):
            raise ValueError(f"ood_space must be 'pre_tanh' or 'squashed', got {self.ood_space!r}")
        if not 0.0 < self.ood_quantile < 1.0:
            raise ValueError("ood_quantile must be in (0, 1)")


class CPQLearner:
    """One CPQ step per :meth:`update`; ``state_dict`` carries everything for resume."""

    def __init__(
        self,
        cfg: CPQConfig,
        obs_dim: int,
        act_dim: int,
        vae: VAE,
        q_thres: float,
        act_low=None,
        act_high=None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.q_thres, self.ood_thres = float(q_thres), cfg.qc_scalar * float(q_thres)
        self.prep = BatchPrep(cfg, act_low, act_high, act_dim, self.device)
        self.policy_kwargs = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "hidden": list(cfg.hidden),
            "log_std_min": cfg.log_std_min,
            **bounds_kwargs(act_low, act_high),
        }
        self.actor = TanhGaussianPolicy(**self.policy_kwargs).to(self.device)
        self.vae = vae.to(self.device).requires_grad_(cfg.vae_joint)
        self.critic = EnsembleQ(obs_dim, act_dim, cfg.num_q, cfg.hidden).to(self.device)
        self.cost_critic = EnsembleQ(obs_dim, act_dim, cfg.num_qc, cfg.hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.cost_opt = torch.optim.Adam(self.cost_critic.parameters(), lr=cfg.critic_lr)
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.vae_lr) if cfg.vae_joint else None
        self.step = 0

    def _policy_sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.distributions.Normal]:
        """(normalised action ``tanh(u)``, ``u ~ N(mu, sigma)`` reparameterised; the Normal)."""
        dist = self.actor.distribution(obs)
        return torch.tanh(dist.rsample()), dist

    # ------------------------------------------------------------------ losses
    def _critic_losses(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        with torch.no_grad():
            a_next, _ = self._policy_sample(b["next_obs"])
            q_next = self.critic_target.reduced(b["next_obs"], a_next, "min")
            qc_next = self.cost_critic_target.reduced(b["next_obs"], a_next, "min")
            safe = (qc_next <= self.q_thres).float()
            y = b["reward"] + cfg.gamma * b["not_done"] * safe * q_next
            cost_mask = b["not_done"] if cfg.cost_done_mask else 1.0
            yc = b["cost"] + cfg.gamma * cost_mask * qc_next
        q_loss = (self.critic(b["obs"], b["act"]) - y).pow(2).mean(1).sum()
        qc_loss = (self.cost_critic(b["obs"], b["act"]) - yc).pow(2).mean(1).sum()
        qc_ood = self._ood_cost(b["obs"])
        alpha = self.log_alpha.exp()
        penalty = -alpha * (qc_ood - self.ood_thres)
        return (
            q_loss,
            qc_loss + penalty,
            {
                "critic/q_loss": float(q_loss.detach()),
                "critic/qc_loss": float(qc_loss.detach()),
                "critic/qc_ood": float(qc_ood.detach()),
                "alpha": float(alpha),
            },
        )

    def _ood_cost(self, obs: torch.Tensor) -> torch.Tensor:
        """``mean_j 1[KL_j >= q_0.75] Q_c(s, u_j)`` over N policy samples per state."""
        n = self.cfg.num_samples
        with torch.no_grad():
            dist = self.actor.distribution(obs)
            u = dist.sample((n,)).transpose(0, 1).reshape(-1, dist.loc.shape[-1])
            if self.cfg.ood_space == "squashed":
                u = torch.tanh(u)
            s_rep = obs.repeat_interleave(n, 0)
            kl = self.vae.kl_per_sample(s_rep, u)
            ood = (kl >= torch.quantile(kl, self.cfg.ood_quantile)).float()
        critic = self.cost_critic_target if self.cfg.osrl_compat else self.cost_critic
        qc = critic.reduced(s_rep, u, "min")
        return (ood * qc).view(-1, n).mean(1).mean()

    def _actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        a, _ = self._policy_sample(obs)
        q = self.critic.reduced(obs, a, "min")
        qc = self.cost_critic.reduced(obs, a, "min")
        safe = (qc <= self.q_thres).float()
        return -(safe * q).mean(), {
            "actor/q": float(q.detach().mean()),
            "actor/qc": float(qc.detach().mean()),
            "actor/safe_frac": float(safe.mean()),
        }

    # ------------------------------------------------------------------ one step
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        b = self.prep(batch)
        logs: dict[str, float] = {}
        if self.vae_opt is not None:
            logs["vae/loss"] = joint_vae_step(self.vae, self.vae_opt, b["obs"], b["act"], self.cfg.vae_beta)

        q_loss, qc_loss, info = self._critic_losses(b)
        self.critic_opt.zero_grad(set_to_none=True)
        self.cost_opt.zero_grad(set_to_none=True)
        (q_loss + qc_loss).backward()  # disjoint parameters: the same gradients as two backward passes
        self.critic_opt.step()
        self.cost_opt.step()
        with torch.no_grad():  # dual ascent on log alpha, by hand as in OSRL
            alpha = self.log_alpha.exp()
            self.log_alpha.add_(self.cfg.alpha_lr * alpha * (self.ood_thres - info["critic/qc_ood"])).clamp_(-5.0, 5.0)

        self.critic.requires_grad_(False)
        self.cost_critic.requires_grad_(False)
        a_loss, a_info = self._actor_loss(b["obs"])
        self.actor_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)
        self.cost_critic.requires_grad_(True)

        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.cost_critic_target, self.cost_critic, self.cfg.tau)
        self.step += 1
        logs.update({**info, **a_info, "actor/loss": float(a_loss.detach())})
        return logs

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.act(obs, deterministic=True)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "vae": self.vae.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "cost_critic": self.cost_critic.state_dict(),
            "cost_critic_target": self.cost_critic_target.state_dict(),
            "log_alpha": self.log_alpha.clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "cost_opt": self.cost_opt.state_dict(),
            "vae_opt": self.vae_opt.state_dict() if self.vae_opt is not None else {},
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.vae.load_state_dict(state["vae"])
        for name in ("critic", "critic_target", "cost_critic", "cost_critic_target"):
            getattr(self, name).load_state_dict(state[name])
        self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.cost_opt.load_state_dict(state["cost_opt"])
        if self.vae_opt is not None:
            self.vae_opt.load_state_dict(state["vae_opt"])
        self.step = int(state["step"])
