"""MICRO's policy learner (algorithms.md §2.4-2.6): SAC with a conservative Bellman target.

Reads in the paper's order:

1. :func:`real_transitions`, :func:`sample_mixed_batch` — the real data and the
   ``⌊B·real_ratio⌋`` real + rest model batch (rows flagged by ``is_model``).
2. :class:`MICROPolicyLearner` — the networks (a :class:`~corl.nn.policies.TanhGaussianPolicy`
   actor, an :class:`~corl.nn.critics.EnsembleQ` of twin critics with a Polyak target, a
   learnable ``log α``, optionally a cost critic and a
   :class:`~corl.nn.lagrange.LagrangeMultiplier`) and one public ``update(batch)`` made of
   ``_uncertainty_penalty`` (u), ``_conservative_target`` (y), ``_critic_loss`` (L_Q),
   ``_actor_loss`` (L_π), ``_temperature_loss`` (L_α); the equations are in
   :class:`~corl.algos.micro.config.MICROConfig`'s docstring.
3. :class:`MICROTrainer` — the training loop last: rollouts every ``rollout_freq`` updates
   into a FIFO model buffer, a mixed batch, one ``update``.

Randomness: data indices come from the ``generator`` passed in; policy sampling and model
noise use torch's global RNG (the shared policy samples with it), so a checkpoint that must
resume bit-exactly also saves ``torch.get_rng_state()``.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch

from corl.algos.micro.config import MICROConfig
from corl.algos.micro.dynamics import GaussianEnsembleDynamics
from corl.algos.micro.rollouts import model_rollout
from corl.algos.micro.termination import TerminationFn
from corl.data.dataset import TransitionDataset
from corl.data.replay import TensorReplayBuffer
from corl.nn.critics import EnsembleQ, soft_update
from corl.nn.lagrange import LagrangeMultiplier, stepwise_threshold
from corl.nn.policies import TanhGaussianPolicy

BATCH_KEYS = ("observations", "actions", "rewards", "costs", "next_observations", "terminals")


# ------------------------------------------------------------------------------ 1. data
def real_transitions(dataset: TransitionDataset, drop_timeouts: bool = False) -> TransitionDataset:
    """The real data; ``drop_timeouts`` removes time-out rows (D4RL ``qlearning_dataset``).

    corl datasets store each row's true ``next_observations``, so a time-out row is a valid
    transition that bootstraps; dropping it only reproduces D4RL's loader.
    """
    if not drop_timeouts:
        return dataset
    keep = ~(dataset.timeouts & ~dataset.terminals)
    fields = {
        k: getattr(dataset, k)[keep]
        for k in ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")
    }
    return TransitionDataset(**fields, metadata=dict(dataset.metadata))


def sample_mixed_batch(
    real: TransitionDataset,
    model: TensorReplayBuffer | None,
    batch_size: int,
    real_ratio: float,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``⌊batch_size·real_ratio⌋`` real rows then model rows, uniform with replacement.

    Terminals are float 0/1; ``is_model`` is 1.0 on model rows (an empty or missing model
    buffer gives an all-real batch).
    """
    n_real = int(batch_size * real_ratio)
    if model is None or len(model) == 0:
        n_real = batch_size
    r = real.sample(n_real, generator)
    parts = [{k: r[k].float() for k in BATCH_KEYS}]
    flags = [torch.zeros(n_real, device=real.device)]
    if n_real < batch_size:
        m = model.sample(batch_size - n_real, generator)
        parts.append({k: m[k].to(real.device).float() for k in BATCH_KEYS})
        flags.append(torch.ones(batch_size - n_real, device=real.device))
    batch = {k: torch.cat([p[k] for p in parts]) for k in BATCH_KEYS}
    batch["is_model"] = torch.cat(flags)
    return batch


# ------------------------------------------------------------------------------ 2. learner
class MICROPolicyLearner:
    """SAC on mixed batches with MICRO's conservative target (and optional cost-awareness)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: MICROConfig | None = None,
        dynamics: GaussianEnsembleDynamics | None = None,
        act_low: Sequence[float] | torch.Tensor | None = None,
        act_high: Sequence[float] | torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        cfg = self.config = config or MICROConfig()
        self.device = torch.device(device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.dynamics = dynamics  # only read (under no_grad); trained by DynamicsLearner
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, cfg.hidden, act_low=act_low, act_high=act_high).to(
            self.device
        )
        self.critic = EnsembleQ(obs_dim, act_dim, cfg.num_critics, cfg.hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.actor_scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optimizer, cfg.lr_schedule_epochs)
            if cfg.lr_schedule_epochs
            else None
        )
        self.log_alpha = torch.nn.Parameter(torch.tensor(float(cfg.initial_log_alpha), device=self.device))
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.target_entropy = float(cfg.target_entropy if cfg.target_entropy is not None else -act_dim)
        self.cost_aware = cfg.cost_limit is not None
        if self.cost_aware:
            self.cost_critic = EnsembleQ(obs_dim, act_dim, cfg.num_critics, cfg.hidden).to(self.device)
            self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
            self.cost_critic_optimizer = torch.optim.Adam(self.cost_critic.parameters(), lr=cfg.cost_critic_lr)
            self.cost_threshold = stepwise_threshold(cfg.cost_limit, cfg.gamma, cfg.episode_length)
            self.lagrange = LagrangeMultiplier(
                self.cost_threshold, cfg.lagrange_init, cfg.lagrange_lr, cfg.lagrange_upper_bound, device=self.device
            )
        self.total_steps = 0

    @property
    def alpha(self) -> torch.Tensor:
        """``clamp(exp log α, 0, 1)`` when auto-tuned, else the fixed α (a detached scalar)."""
        if self.config.auto_alpha:
            return self.log_alpha.detach().exp().clamp(0.0, 1.0)
        return torch.tensor(self.config.alpha, device=self.device)

    # -- (2.5) the uncertainty set and its penalty
    @torch.no_grad()
    def _uncertainty_penalty(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``u = mean_k v̄_k − min_k v̄_k`` over the elites' next-state samples (and ``u_c``).

        ``ŝ'_{k,n} = s + μ_k + σ_k ε`` for every elite ``k`` and ``n ≤ num_samples``; all
        ``N·K·B`` candidates go through the actor and the target critics in one call.
        """
        if self.dynamics is None:
            raise RuntimeError("the robust target needs the dynamics ensemble (dynamics=None)")
        elites = self.dynamics.elites
        mean, logvar = self.dynamics.predict(obs, act, members=elites)  # (K, B, D)
        mu = obs + mean[..., : self.obs_dim]
        std = torch.exp(0.5 * logvar[..., : self.obs_dim])
        n, k, b = self.config.num_samples, len(elites), obs.shape[0]
        candidates = mu + std * torch.randn(n, k, b, self.obs_dim, device=obs.device)
        flat = candidates.reshape(-1, self.obs_dim)
        cand_act, _ = self.actor.sample(flat)
        v_bar = self.critic_target.reduced(flat, cand_act, "min").view(n, k, b).mean(0)  # (K, B)
        u = v_bar.mean(0) - v_bar.min(0).values
        u_cost = None
        if self.cost_aware:
            vc_bar = self.cost_critic_target.reduced(flat, cand_act, "max").view(n, k, b).mean(0)
            u_cost = vc_bar.max(0).values - vc_bar.mean(0)
        return u, u_cost

    @torch.no_grad()
    def _next_value(self, critic: EnsembleQ, next_obs: torch.Tensor, reduction: str, entropy: bool) -> torch.Tensor:
        """``reduce_i Q̄_i(s', a') [− α log π(a'|s')]``, or ``min_i max_{a'_1..m} Q̄_i(s', a'_j)`` (max_q_backup)."""
        cfg = self.config
        if cfg.max_q_backup and reduction == "min":  # reward critic only; no entropy term (released)
            m = cfg.max_q_backup_samples
            rep = next_obs.repeat(m, 1)
            a, _ = self.actor.sample(rep)
            return critic(rep, a).view(critic.num_q, m, -1).max(1).values.min(0).values
        a, log_pi = self.actor.sample(next_obs)
        q = critic.reduced(next_obs, a, reduction)  # type: ignore[arg-type]
        if entropy and not cfg.deterministic_backup:
            q = q - self.alpha * log_pi
        return q

    @torch.no_grad()
    def _model_penalties(
        self, batch: Mapping[str, torch.Tensor], robust: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``u`` (and ``u_c`` when cost-aware) per row: computed on model rows, 0 on real rows."""
        cfg = self.config
        u = torch.zeros_like(batch["rewards"])
        u_c = torch.zeros_like(u) if self.cost_aware else None
        cost_coef = cfg.penalty_coef if cfg.cost_penalty_coef is None else cfg.cost_penalty_coef
        needed = cfg.penalty_coef != 0.0 or (self.cost_aware and cost_coef != 0.0)
        rows = torch.nonzero(batch["is_model"] > 0).flatten()
        if robust and needed and len(rows) > 0:
            u_rows, uc_rows = self._uncertainty_penalty(batch["observations"][rows], batch["actions"][rows])
            u[rows] = u_rows
            if u_c is not None:
                u_c[rows] = uc_rows
        return u, u_c

    def _reward_target(self, batch: Mapping[str, torch.Tensor], next_v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``y = clamp(r + γ(1−d)[next_v − λ u])``."""
        cfg = self.config
        y = batch["rewards"] + cfg.gamma * (1.0 - batch["terminals"]) * (next_v - cfg.penalty_coef * u)
        return y if cfg.target_clamp_min is None else y.clamp(min=cfg.target_clamp_min)

    @torch.no_grad()
    def conservative_target(
        self, batch: Mapping[str, torch.Tensor], robust: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, u)``: ``y = clamp(r + γ(1−d)[Q̄(s',a') − α log π(a'|s') − λ u])``, u on model rows.

        ``robust`` overrides ``config.robust_target`` (False: u ≡ 0, the plain target). The
        next action ``a'`` is drawn before the penalty's candidates, so with the same RNG state
        the robust and plain targets share ``a'`` and differ only by the penalty.
        """
        robust = self.config.robust_target if robust is None else robust
        next_v = self._next_value(self.critic_target, batch["next_observations"], "min", entropy=True)
        u, _ = self._model_penalties(batch, robust)
        return self._reward_target(batch, next_v, u), u

    @torch.no_grad()
    def _cost_target(self, batch: Mapping[str, torch.Tensor], u_c: torch.Tensor) -> torch.Tensor:
        """``c + γ(1−d)[max_i Q̄_c,i(s',a') + λ_c u_c]`` (pessimistic in cost, no entropy term)."""
        cfg = self.config
        next_v = self._next_value(self.cost_critic_target, batch["next_observations"], "max", entropy=False)
        coef = cfg.penalty_coef if cfg.cost_penalty_coef is None else cfg.cost_penalty_coef
        return batch["costs"] + cfg.gamma * (1.0 - batch["terminals"]) * (next_v + coef * u_c)

    # -- (2.6) the SAC losses
    @staticmethod
    def _critic_loss(
        critic: EnsembleQ, batch: Mapping[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_Q = mean_{i,batch} (Q_i(s,a) − y)²``; also the critics' mean Q."""
        q = critic(batch["observations"], batch["actions"])
        return (q - target.unsqueeze(0)).pow(2).mean(), q.detach().mean()

    def _actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``L_π = mean[α log π(a_θ|s) − min_i Q_i(s,a_θ) (+ λ_c max_i Q_c,i(s,a_θ))]``."""
        action, log_pi = self.actor.sample(obs)
        q = self.critic.reduced(obs, action, "min")
        loss = self.alpha * log_pi - q
        qc = None
        if self.cost_aware:
            qc = self.cost_critic.reduced(obs, action, "max")
            loss = loss + self.lagrange.value * qc
        return loss.mean(), log_pi.detach(), None if qc is None else qc.detach()

    def _temperature_loss(self, log_pi: torch.Tensor) -> torch.Tensor:
        """``L_α = −mean[log α · sg(log π + H_target)]``."""
        return -(self.log_alpha * (log_pi + self.target_entropy)).mean()

    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on a mixed batch (fields of :func:`sample_mixed_batch`)."""
        cfg = self.config
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if "is_model" not in batch:
            batch["is_model"] = torch.zeros_like(batch["rewards"])
        batch["terminals"] = batch["terminals"].float()
        metrics: dict[str, float] = {}

        with torch.no_grad():  # (2.5): a' first, then the uncertainty set, once for both critics
            next_v = self._next_value(self.critic_target, batch["next_observations"], "min", entropy=True)
            penalty, penalty_cost = self._model_penalties(batch, cfg.robust_target)
            target = self._reward_target(batch, next_v, penalty)
        critic_loss, q_mean = self._critic_loss(self.critic, batch, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        model_rows = batch["is_model"] > 0
        metrics.update(
            {
                "critic/loss": critic_loss.item(),
                "critic/q_mean": float(q_mean),
                "critic/target_mean": float(target.mean()),
                "micro/penalty_model": float(penalty[model_rows].mean()) if model_rows.any() else 0.0,
                "micro/penalty_real": float(penalty[~model_rows].mean()) if (~model_rows).any() else 0.0,
            }
        )

        if self.cost_aware:
            cost_loss, qc_mean = self._critic_loss(self.cost_critic, batch, self._cost_target(batch, penalty_cost))
            self.cost_critic_optimizer.zero_grad(set_to_none=True)
            cost_loss.backward()
            self.cost_critic_optimizer.step()
            metrics.update({"cost_critic/loss": cost_loss.item(), "cost_critic/q_mean": float(qc_mean)})

        actor_loss, log_pi, qc_pi = self._actor_loss(batch["observations"])
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        metrics.update(
            {
                "actor/loss": actor_loss.item(),
                "actor/entropy": float(-log_pi.mean()),
                "actor/lr": self.actor_optimizer.param_groups[0]["lr"],
            }
        )

        if cfg.auto_alpha:
            alpha_loss = self._temperature_loss(log_pi)
            self.alpha_optimizer.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optimizer.step()
            metrics["alpha/loss"] = alpha_loss.item()
        metrics["alpha/value"] = float(self.alpha)

        if self.cost_aware:
            metrics["lagrange/value"] = self.lagrange.update(qc_pi.mean())
            metrics["lagrange/cost_q_pi"] = float(qc_pi.mean())
            soft_update(self.cost_critic_target, self.cost_critic, cfg.tau)
        soft_update(self.critic_target, self.critic, cfg.tau)

        self.total_steps += 1
        if self.actor_scheduler is not None and self.total_steps % cfg.steps_per_epoch == 0:
            self.actor_scheduler.step()
        return metrics

    # -- exact resume (the dynamics model is its own artifact and is not included)
    def state_dict(self) -> dict:
        state = {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "actor_scheduler": None if self.actor_scheduler is None else self.actor_scheduler.state_dict(),
            "total_steps": self.total_steps,
        }
        if self.cost_aware:
            state.update(
                {
                    "cost_critic": self.cost_critic.state_dict(),
                    "cost_critic_target": self.cost_critic_target.state_dict(),
                    "cost_critic_optimizer": self.cost_critic_optimizer.state_dict(),
                    "lagrange": self.lagrange.state_dict(),
                }
            )
        return state

    def load_state_dict(self, state: Mapping) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        if self.actor_scheduler is not None and state["actor_scheduler"] is not None:
            self.actor_scheduler.load_state_dict(state["actor_scheduler"])
        self.total_steps = int(state["total_steps"])
        if self.cost_aware:
            self.cost_critic.load_state_dict(state["cost_critic"])
            self.cost_critic_target.load_state_dict(state["cost_critic_target"])
            self.cost_critic_optimizer.load_state_dict(state["cost_critic_optimizer"])
            self.lagrange.load_state_dict(state["lagrange"])


# ------------------------------------------------------------------------------ 3. the loop
class MICROTrainer:
    """Rollouts every ``rollout_freq`` updates into a FIFO model buffer, then one mixed update."""

    def __init__(
        self,
        config: MICROConfig,
        dataset: TransitionDataset,
        dynamics: GaussianEnsembleDynamics,
        termination: TerminationFn,
        act_low=None,
        act_high=None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.real = real_transitions(dataset, config.drop_timeout_transitions).to(self.device)
        self.dynamics = dynamics.to(self.device).eval()
        self.termination = termination
        self.learner = MICROPolicyLearner(
            dataset.obs_dim, dataset.act_dim, config, self.dynamics, act_low, act_high, self.device
        )
        self.buffer = TensorReplayBuffer.for_transitions(
            config.model_buffer_capacity, dataset.obs_dim, dataset.act_dim, self.device
        )

    def rollout(self, generator: torch.Generator | None = None) -> dict[str, float]:
        """Branch ``rollout_batch_size`` real start states for ``rollout_length`` model steps."""
        cfg = self.config
        start = self.real.sample(cfg.rollout_batch_size, generator)["observations"]
        transitions, stats = model_rollout(
            self.dynamics, self.learner.actor, start, cfg.rollout_length, self.termination, cfg.rollout_member_rows
        )
        self.buffer.add(transitions)
        return stats

    def step(self, generator: torch.Generator | None = None) -> dict[str, float]:
        """One training step: rollouts when due, a mixed batch, one learner update."""
        cfg = self.config
        metrics: dict[str, float] = {}
        if self.learner.total_steps % cfg.rollout_freq == 0:
            metrics.update(self.rollout(generator))
        batch = sample_mixed_batch(self.real, self.buffer, cfg.batch_size, cfg.real_ratio, generator)
        metrics.update(self.learner.update(batch))
        return metrics

    def state_dict(self) -> dict:
        return {"learner": self.learner.state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.learner.load_state_dict(state["learner"])
        self.buffer.load_state_dict(state["buffer"])
