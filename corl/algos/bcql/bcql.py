"""BCQ-Lag: batch-constrained Q-learning with a cost critic and a PID Lagrangian (OSRL).

Fujimoto et al. 2019 (BCQ) as OSRL's ``bcql.py`` makes it safe (baselines.md section 1).
Candidate actions come from the behaviour VAE ``G(s)``; a perturbation model moves them by at
most ``phi`` (in the normalised box). Per training step, in this order:

1. (``vae_joint`` only) one VAE step, ``MSE(dec(s, z), a) + beta KL``.
2. Reward critic, ``N`` candidates ``a'_j = xi_old(s', G(s'))`` per next state::

       y   = r + gamma (1 - d) max_j [ l min(Q1', Q2') + (1 - l) max(Q1', Q2') ](s', a'_j)
       L_Q = sum_members mean (Q_k(s, a) - y)^2

   ``Q1'`` and ``Q2'`` are each the min over their group of ``num_q`` target critics.
3. Cost critic, the same construction on ``c``; OSRL omits ``(1 - d)`` in the cost backup
   (``cost_done_mask = False``).
4. Actor, with ``a = xi(s, G(s))`` (one VAE sample), critics frozen::

       lambda  = PID( mean Q_c(s, a) - qc_thres )      (detached)
       L_pi    = - mean Q(s, a) + mean (Q_c(s, a) - qc_thres) lambda

   ``Q`` and ``Q_c`` are the min over all members of the reward and cost critics.
5. Polyak averaging (``tau``) of the critics and the actor.

corl keeps the reward and cost critics as one :class:`~corl.nn.EnsembleQ` of
``4 num_q`` members (one batched op for the target, the loss and the actor's query) with
one Adam over both: OSRL uses two Adams with the same learning rate, and Adam is
element-wise, so the updates are the same.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from corl.algos.baselines.common import BatchPrep, OfflineSafeConfig, bounds_kwargs, joint_vae_step, reward_cost_targets
from corl.nn import VAE, EnsembleQ, PerturbationActor, group_min, soft_update
from corl.nn.lagrange import PIDLagrangeMultiplier
from corl.nn.policies import _BoundedPolicy


@dataclass
class BCQLConfig(OfflineSafeConfig):
    """OSRL's ``BCQLTrainConfig`` (CarCircle uses the base config)."""

    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    phi: float = 0.05  # perturbation range, in the normalised action box
    lmbda: float = 0.75  # soft clipped double-Q weight of the target
    num_samples: int = 10  # candidate next actions per next state
    num_q: int = 2  # critics per group (two groups per critic: 4 reward + 4 cost networks)
    pid: list[float] = field(default_factory=lambda: [0.1, 0.003, 0.001])  # KP, KI, KD
    #: OSRL's cost backup has no ``(1 - d)``; True masks it like the reward backup.
    cost_done_mask: bool = False
    #: keep training the (pre-fitted) VAE jointly, once per step, as OSRL does
    vae_joint: bool = False
    vae_beta: float = 0.5
    #: OSRL's ``act``: one VAE sample with z ~ clip(N(0, I), +-0.5) ("sample"); "zero" uses z = 0
    eval_latent: str = "sample"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_latent not in ("sample", "zero"):
            raise ValueError(f"eval_latent must be 'sample' or 'zero', got {self.eval_latent!r}")
        if len(self.pid) != 3:
            raise ValueError(f"pid must be [KP, KI, KD], got {self.pid}")
        if self.num_samples < 1 or self.num_q < 1:
            raise ValueError("num_samples and num_q must be >= 1")


class BCQPolicy(_BoundedPolicy):
    """The evaluation policy ``xi(s, G(s))`` mapped to the env's box."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        vae_hidden: Sequence[int],
        latent_dim: int,
        hidden: Sequence[int],
        phi: float,
        act_low=None,
        act_high=None,
        latent: str = "sample",
    ) -> None:
        super().__init__(act_low, act_high, act_dim)
        self.vae = VAE(obs_dim, act_dim, vae_hidden, latent_dim)
        self.actor = PerturbationActor(obs_dim, act_dim, hidden, "tanh", phi)
        self.latent = latent

    def normalised(self, obs: torch.Tensor) -> torch.Tensor:
        z = None
        if self.latent == "zero":
            z = torch.zeros(*obs.shape[:-1], self.vae.latent_dim, device=obs.device)
        return self.actor(obs, self.vae.decode(obs, z))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.to_env(self.normalised(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self(obs)


class BCQLLearner:
    """One BCQ-Lag step per :meth:`update`; ``state_dict`` carries everything for resume."""

    def __init__(
        self,
        cfg: BCQLConfig,
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
            "vae_hidden": list(_hidden_of(vae)),
            "latent_dim": vae.latent_dim,
            "hidden": list(cfg.hidden),
            "phi": cfg.phi,
            "latent": cfg.eval_latent,
            **bounds_kwargs(act_low, act_high),
        }
        self.policy = BCQPolicy(**self.policy_kwargs).to(self.device)
        self.policy.vae.load_state_dict(vae.state_dict())
        self.vae, self.actor = self.policy.vae, self.policy.actor
        self.vae.requires_grad_(cfg.vae_joint)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        # members [0, 2 num_q): reward critic (groups Q1, Q2); [2 num_q, 4 num_q): cost critic
        self.critic = EnsembleQ(obs_dim, act_dim, 4 * cfg.num_q, cfg.hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=cfg.vae_lr) if cfg.vae_joint else None
        kp, ki, kd = cfg.pid
        self.pid = PIDLagrangeMultiplier(self.qc_thres, kp=kp, ki=ki, kd=kd, form="osrl")
        self.step = 0

    # ------------------------------------------------------------------ losses
    @torch.no_grad()
    def _targets(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(4 num_q, B)`` regression targets: ``y`` for the reward members, ``y_c`` for the cost ones."""
        cfg, n = self.cfg, self.cfg.num_samples
        s_rep = b["next_obs"].repeat_interleave(n, 0)
        a_next = self.actor_target(s_rep, self.vae.decode(s_rep))
        return reward_cost_targets(
            self.critic_target, s_rep, a_next, b, n, cfg.num_q, cfg.gamma, cfg.lmbda, cfg.cost_done_mask
        )

    def _critic_loss(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum_members mean (Q_k - y_k)^2`` over reward and cost members."""
        return (self.critic(b["obs"], b["act"]) - self._targets(b)).pow(2).mean(1).sum()

    def _actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        a = self.actor(obs, self.vae.decode(obs).detach())
        q, qc = group_min(self.critic(obs, a), 2)
        lam = self.pid.update(qc.detach().mean())
        loss = -q.mean() + ((qc - self.qc_thres) * lam).mean()
        return loss, {"q": float(q.detach().mean()), "qc": float(qc.detach().mean()), "lambda": lam}

    # ------------------------------------------------------------------ one step
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        b = self.prep(batch)
        logs: dict[str, float] = {}
        if self.vae_opt is not None:
            logs["vae/loss"] = joint_vae_step(self.vae, self.vae_opt, b["obs"], b["act"], self.cfg.vae_beta)

        c_loss = self._critic_loss(b)
        self.critic_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        self.critic_opt.step()

        self.critic.requires_grad_(False)
        a_loss, info = self._actor_loss(b["obs"])
        self.actor_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)

        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.actor_target, self.actor, self.cfg.tau)
        self.step += 1
        logs.update(
            {
                "critic/loss": float(c_loss.detach()),
                "actor/loss": float(a_loss.detach()),
                **{f"actor/{k}": v for k, v in info.items()},
            }
        )
        return logs

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(obs)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "vae_opt": self.vae_opt.state_dict() if self.vae_opt is not None else {},
            "pid": self.pid.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        if self.vae_opt is not None:
            self.vae_opt.load_state_dict(state["vae_opt"])
        self.pid.load_state_dict(state["pid"])
        self.step = int(state["step"])


def _hidden_of(vae: VAE) -> list[int]:
    """The hidden widths of a VAE's encoder (its constructor's ``hidden``)."""
    return [m.out_features for m in vae.encoder.net if isinstance(m, torch.nn.Linear)][:-1]
