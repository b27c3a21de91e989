"""BEAR-Lag: bootstrapping error reduction with a cost critic and a PID Lagrangian (OSRL).

Kumar et al. 2019 (BEAR) as OSRL's ``bearl.py`` makes it safe (baselines.md section 2). The
actor is kept on the data's support by an MMD constraint between its samples and the
behaviour VAE's, with a dual weight ``alpha``. Per training step, in this order:

1. (``vae_joint`` only) one VAE step.
2. Reward critic, ``N`` samples ``a'_j ~ pi_old(s')`` per next state::

       y   = r + gamma (1 - d) max_j [ l min(Q1', Q2') + (1 - l) max(Q1', Q2') ](s', a'_j)
       L_Q = sum_members mean (Q_k(s, a) - y)^2

3. Cost critic, the same on ``c``; OSRL omits ``(1 - d)`` (``cost_done_mask = False``).
4. Actor: ``n`` VAE samples and ``n`` actor samples per state, compared in the pre-tanh
   space by ``MMD(s) = sqrt(mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y) + 1e-6)`` with
   ``k(x, y) = exp(-||x - y||^2 / (2 sigma))`` (``laplacian``: the L1 norm); ``Q`` and
   ``Q_c`` on the first actor sample::

       lambda  = PID( mean Q_c(s, a) - qc_thres )
       L_pi    = mean( -Q(s, a) + alpha (MMD - eps) ) + mean (Q_c(s, a) - qc_thres) lambda
       log alpha <- clip(log alpha + alpha_lr alpha mean(MMD - eps), -5, 5)

   Before ``start_update_policy_step`` the ``-Q`` term is left out (OSRL's config: 0).
5. Polyak averaging of the critics and the actor.

As in BCQ-Lag, the reward and cost critics are one :class:`~corl.nn.EnsembleQ` of
``4 num_q`` members with one Adam (OSRL: two Adams with the same lr; Adam is element-wise).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from corl.algos.baselines.common import BatchPrep, OfflineSafeConfig, bounds_kwargs, joint_vae_step, reward_cost_targets
from corl.nn import VAE, EnsembleQ, TanhGaussianPolicy, group_min, soft_update
from corl.nn.lagrange import PIDLagrangeMultiplier


@dataclass
class BEARLConfig(OfflineSafeConfig):
    """OSRL's ``BEARLTrainConfig`` (CarCircle uses the base config)."""

    steps: int = 300_000
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    alpha_lr: float = 1e-3  # OSRL's trainer default (the config has none)
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    lmbda: float = 0.75
    num_samples: int = 10  # candidate next actions per next state
    mmd_samples: int = 10  # samples per state on each side of the MMD
    mmd_sigma: float = 50.0
    mmd_kernel: str = "gaussian"  # or "laplacian"
    target_mmd_thresh: float = 0.05
    start_update_policy_step: int = 0
    num_q: int = 2
    pid: list[float] = field(default_factory=lambda: [0.1, 0.003, 0.001])
    cost_done_mask: bool = False
    vae_joint: bool = False
    vae_beta: float = 0.5
    log_std_min: float = -20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mmd_kernel not in ("gaussian", "laplacian"):
            raise ValueError(f"mmd_kernel must be 'gaussian' or 'laplacian', got {self.mmd_kernel!r}")
        if len(self.pid) != 3 or self.mmd_sigma <= 0:
            raise ValueError("pid must be [KP, KI, KD] and mmd_sigma > 0")


def mmd(x: torch.Tensor, y: torch.Tensor, sigma: float, kernel: str = "gaussian") -> torch.Tensor:
    """Per-row MMD between sample sets ``x, y`` of shape ``(B, n, A)`` (BEAR's estimator)."""

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a.unsqueeze(2) - b.unsqueeze(1)  # (B, n, n, A)
        dist = diff.pow(2).sum(-1) if kernel == "gaussian" else diff.abs().sum(-1)
        return torch.exp(-dist / (2.0 * sigma)).mean((1, 2))

    return torch.sqrt(k(x, x) + k(y, y) - 2.0 * k(x, y) + 1e-6)


class BEARLLearner:
    """One BEAR-Lag step per :meth:`update`; ``state_dict`` carries everything for resume."""

    def __init__(
        self,
        cfg: BEARLConfig,
        obs_dim: int,
        act_dim: int,
        vae: VAE,
        qc_thres: float,
        act_low=None,
        act_high=None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg, self.device, self.qc_thres = cfg, torch.device(device), float(qc_thres)
        self.prep = BatchPrep(cfg, act_low, act_high, act_dim, self.device)
        self.policy_kwargs = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "hidden": list(cfg.hidden),
            "log_std_min": cfg.log_std_min,
            **bounds_kwargs(act_low, act_high),
        }
        self.actor = TanhGaussianPolicy(**self.policy_kwargs).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.vae = vae.to(self.device).requires_grad_(cfg.vae_joint)
        self.critic = EnsembleQ(obs_dim, act_dim, 4 * cfg.num_q, cfg.hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.vae_lr) if cfg.vae_joint else None
        kp, ki, kd = cfg.pid
        self.pid = PIDLagrangeMultiplier(self.qc_thres, kp=kp, ki=ki, kd=kd, form="osrl")
        self.step = 0

    @torch.no_grad()
    def _targets(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg, n = self.cfg, self.cfg.num_samples
        s_rep = b["next_obs"].repeat_interleave(n, 0)
        a_next = torch.tanh(self.actor_target.distribution(s_rep).sample())
        return reward_cost_targets(
            self.critic_target, s_rep, a_next, b, n, cfg.num_q, cfg.gamma, cfg.lmbda, cfg.cost_done_mask
        )

    def _actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        cfg, n = self.cfg, self.cfg.mmd_samples
        s_rep = obs.repeat_interleave(n, 0)
        with torch.no_grad():
            behaviour = self.vae.decode_raw(s_rep).view(obs.shape[0], n, -1)
        u = self.actor.distribution(s_rep).rsample()
        gap = mmd(behaviour, u.view(obs.shape[0], n, -1), cfg.mmd_sigma, cfg.mmd_kernel) - cfg.target_mmd_thresh
        a_first = torch.tanh(u.view(obs.shape[0], n, -1)[:, 0])
        q, qc = group_min(self.critic(obs, a_first), 2)
        lam = self.pid.update(qc.detach().mean())
        alpha = self.log_alpha.exp()
        support = alpha * gap
        if self.step >= cfg.start_update_policy_step:
            support = support - q
        loss = support.mean() + ((qc - self.qc_thres) * lam).mean()
        return (
            loss,
            gap.detach(),
            {"q": float(q.detach().mean()), "qc": float(qc.detach().mean()), "lambda": lam, "alpha": float(alpha)},
        )

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        b = self.prep(batch)
        logs: dict[str, float] = {}
        if self.vae_opt is not None:
            logs["vae/loss"] = joint_vae_step(self.vae, self.vae_opt, b["obs"], b["act"], self.cfg.vae_beta)

        c_loss = (self.critic(b["obs"], b["act"]) - self._targets(b)).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        self.critic_opt.step()

        self.critic.requires_grad_(False)
        a_loss, gap, info = self._actor_loss(b["obs"])
        self.actor_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)
        with torch.no_grad():  # dual ascent on log alpha, by hand as in OSRL
            self.log_alpha.add_(self.cfg.alpha_lr * self.log_alpha.exp() * gap.mean()).clamp_(-5.0, 5.0)

        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.actor_target, self.actor, self.cfg.tau)
        self.step += 1
        logs.update(
            {
                "critic/loss": float(c_loss.detach()),
                "actor/loss": float(a_loss.detach()),
                "actor/mmd": float(gap.mean()) + self.cfg.target_mmd_thresh,
                **{f"actor/{k}": v for k, v in info.items()},
            }
        )
        return logs

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.act(obs, deterministic=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "vae": self.vae.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "vae_opt": self.vae_opt.state_dict() if self.vae_opt is not None else {},
            "pid": self.pid.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "actor_target", "vae", "critic", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        if self.vae_opt is not None:
            self.vae_opt.load_state_dict(state["vae_opt"])
        self.pid.load_state_dict(state["pid"])
        self.step = int(state["step"])
