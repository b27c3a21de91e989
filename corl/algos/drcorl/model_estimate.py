"""A model-based estimate of a deterministic policy's episodic cost and reward (a corl
extension of DRCORL, not in the paper; see the README's deviations table).

Why: the switch's critic estimate (``critic_episodic_cost``) cannot tell a safe policy from
an unsafe one at CPU sizes, and the online estimator needs the simulator. MICRO's dynamics
ensemble (:class:`corl.algos.micro.dynamics.GaussianEnsembleDynamics`, fitted by the shared
``dynamics`` stage) lets the policy be rolled out offline instead, with the members'
disagreement as a pessimism term (MICRO / MOPO style).

Two variants (``start_states``):

* ``dataset`` (short branched rollouts, MVE-style tail): from ``N`` dataset states ``s_0``, ``H``
  model steps under ``a = pi(s)``, then the critics bootstrap the rest::

      G_c(s_0) = sum_{h<H} gamma^h c~_h + gamma^H Qbar_c(s_H, pi(s_H))
      G_r(s_0) = sum_{h<H} gamma^h r~_h + gamma^H Qbar_r(s_H, pi(s_H)) / reward_scale
      C_ep = (1 - gamma) T mean_{s_0} G_c(s_0)      (as critic_episodic_cost over batch states)

* ``initial`` (whole episodes, no critic): from ``N`` episode-initial states, ``T`` model steps,
  ``C_ep = mean_{s_0} sum_{t<T} c~_t`` (and the same for the reward).

Per step, with the elites' predicted means ``mu_e(s, a)`` of ``(ds, r, c)``::

    c~ = max(0, mean_e mu_e^c + k std_e mu_e^c),   r~ = mean_e mu_e^r - k std_e mu_e^r

and the next state is drawn MICRO-style: one random elite per row, plus its Gaussian noise
when ``sample_noise``. All random draws come from one ``torch.Generator``, so the estimate is
a deterministic function of (model, policy, start states, seed). Everything is batched over
the ``N`` rows; the only Python loop is over the ``H`` (or ``T``) steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

from corl.algos.micro.dynamics import GaussianEnsembleDynamics

QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(obs, act) -> (members, B)`` values, e.g. a target :class:`corl.nn.critics.EnsembleQ`."""
Termination = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ModelEstimateConfig:
    """How the model estimate is computed (the ``model_*`` keys of the DRCORL policy stage)."""

    horizon: int = 10
    """H: model steps from dataset states before the critic tail (``start_states='dataset'``)."""
    start_states: Literal["dataset", "initial"] = "dataset"
    """'dataset': H-step branched rollouts plus the critics' tail; 'initial': whole episodes
    (the task's T steps) from the dataset's episode-initial states, no critic."""
    num_starts: int = 1000
    """N: start states per estimate (drawn with replacement when the pool is smaller)."""
    pessimism: float = 1.0
    """k: cost + k std, reward - k std over the elites' predicted means."""
    sample_noise: bool = True
    """Add each member's predicted Gaussian noise to the next state (False: its mean)."""
    clip_obs: bool = True
    """Clip model states to the dataset's observation range (keeps long rollouts finite)."""

    def __post_init__(self) -> None:
        if self.start_states not in ("dataset", "initial"):
            raise ValueError(f"model_start_states must be dataset or initial; got {self.start_states!r}")
        if self.horizon < 1 or self.num_starts < 1:
            raise ValueError("model_horizon and model_num_starts must be >= 1")
        if self.pessimism < 0:
            raise ValueError(f"model_pessimism must be >= 0; got {self.pessimism}")


@dataclass
class ModelEstimate:
    """Episodic (undiscounted-equivalent) numbers of one estimate, plus what they are made of."""

    cost: float  # episodic cost estimate (model part + critic tail)
    reward: float  # episodic reward estimate
    cost_model: float  # the model steps' share of ``cost``
    reward_model: float
    cost_disagreement: float  # mean std of the elites' cost means over all model steps
    reward_disagreement: float
    steps: int  # model steps rolled

    def as_dict(self, prefix: str = "model/") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in self.__dict__.items()}


def _member_stats(
    dynamics: GaussianEnsembleDynamics, obs: torch.Tensor, act: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The elites' ``(mu, logvar)``, each ``(E', B, target_dim)`` in raw units."""
    return dynamics.predict(obs, act, dynamics.elites)


@torch.no_grad()
def model_rollout_returns(
    dynamics: GaussianEnsembleDynamics,
    policy: nn.Module,
    starts: torch.Tensor,
    steps: int,
    gamma: float,
    pessimism: float,
    generator: torch.Generator,
    sample_noise: bool = True,
    obs_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    termination: Termination | None = None,
) -> dict[str, torch.Tensor]:
    """Roll ``policy`` through the ensemble from ``starts`` for ``steps`` steps (batched).

    Returns per-row tensors ``(B,)``: ``cost``, ``reward`` (sum of ``gamma^h`` times the
    pessimistic per-step values; ``gamma = 1`` gives plain sums), ``alive`` (1 where no
    termination happened), ``discount`` (``gamma^steps`` times ``alive``), ``final_obs`` (B, obs),
    and the scalars ``cost_std`` and ``reward_std`` (mean disagreement over all model steps).
    """
    if not dynamics.config.predict_cost:
        raise ValueError("the model estimate needs a dynamics model that predicts cost (predict_cost=true)")
    obs = starts
    n = obs.shape[0]
    rows = torch.arange(n, device=obs.device)
    od = dynamics.obs_dim
    cost = torch.zeros(n, device=obs.device)
    reward = torch.zeros(n, device=obs.device)
    alive = torch.ones(n, device=obs.device)
    cost_std = torch.zeros((), device=obs.device)
    reward_std = torch.zeros((), device=obs.device)
    weight = 1.0
    for _ in range(steps):
        act = policy(obs)
        mean, logvar = _member_stats(dynamics, obs, act)
        spread = mean[..., od:].std(0, unbiased=False) if mean.shape[0] > 1 else torch.zeros_like(mean[0, :, od:])
        centre = mean[..., od:].mean(0)
        r_t = centre[:, 0] - pessimism * spread[:, 0]
        c_t = (centre[:, 1] + pessimism * spread[:, 1]).clamp_min(0.0)
        reward += weight * alive * r_t
        cost += weight * alive * c_t
        reward_std += spread[:, 0].mean()
        cost_std += spread[:, 1].mean()
        member = torch.randint(0, mean.shape[0], (n,), device=obs.device, generator=generator)
        delta = mean[member, rows, :od]
        if sample_noise:
            noise = torch.randn(delta.shape, device=obs.device, generator=generator)
            delta = delta + noise * torch.exp(0.5 * logvar[member, rows, :od])
        next_obs = obs + delta
        if obs_bounds is not None:
            next_obs = torch.maximum(torch.minimum(next_obs, obs_bounds[1]), obs_bounds[0])
        if termination is not None:
            alive = alive * (~termination(obs, act, next_obs)).float()
        obs = next_obs
        weight *= gamma
    return {
        "cost": cost,
        "reward": reward,
        "alive": alive,
        "discount": alive * weight,
        "final_obs": obs,
        "cost_std": cost_std / max(steps, 1),
        "reward_std": reward_std / max(steps, 1),
    }


def draw_starts(pool: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` rows of ``pool``: all of them (in order) when the pool is no larger, else a
    uniform draw without replacement (deterministic given the generator)."""
    if pool.shape[0] <= num:
        return pool
    idx = torch.randperm(pool.shape[0], device=pool.device, generator=generator)[:num]
    return pool[idx]


@torch.no_grad()
def model_episodic_estimate(
    dynamics: GaussianEnsembleDynamics,
    policy: nn.Module,
    starts: torch.Tensor,
    config: ModelEstimateConfig,
    gamma: float,
    episode_len: int,
    generator: torch.Generator,
    q_c: QFunction | None = None,
    q_r: QFunction | None = None,
    reward_scale: float = 1.0,
    obs_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    termination: Termination | None = None,
) -> ModelEstimate:
    """The episodic cost and reward of ``policy`` (see the module docstring).

    ``starts``: the pool of start states (dataset observations for ``'dataset'``, episode-
    initial observations for ``'initial'``); ``config.num_starts`` of them are used. ``q_c`` /
    ``q_r`` (member-stacked, e.g. DRCORL's target critics; ``q_r`` in IQL-scaled units, hence
    ``reward_scale``) give the tail of the ``'dataset'`` variant; without them the tail is 0.
    """
    was_training = policy.training
    policy.eval()
    try:
        s0 = draw_starts(starts, config.num_starts, generator)
        if config.start_states == "initial":
            out = model_rollout_returns(
                dynamics,
                policy,
                s0,
                episode_len,
                1.0,
                config.pessimism,
                generator,
                config.sample_noise,
                obs_bounds,
                termination,
            )
            cost_model, reward_model = out["cost"].mean(), out["reward"].mean()
            cost, reward, steps = cost_model, reward_model, episode_len
        else:
            out = model_rollout_returns(
                dynamics,
                policy,
                s0,
                config.horizon,
                gamma,
                config.pessimism,
                generator,
                config.sample_noise,
                obs_bounds,
                termination,
            )
            scale = (1.0 - gamma) * episode_len
            g_c, g_r = out["cost"], out["reward"]
            cost_model, reward_model = scale * g_c.mean(), scale * g_r.mean()
            s_h = out["final_obs"]
            if q_c is not None or q_r is not None:
                a_h = policy(s_h)
            if q_c is not None:
                g_c = g_c + out["discount"] * q_c(s_h, a_h).mean(0).reshape(-1)
            if q_r is not None:
                g_r = g_r + out["discount"] * q_r(s_h, a_h).mean(0).reshape(-1) / reward_scale
            cost, reward, steps = scale * g_c.mean(), scale * g_r.mean(), config.horizon
    finally:
        policy.train(was_training)
    return ModelEstimate(
        cost=float(cost),
        reward=float(reward),
        cost_model=float(cost_model),
        reward_model=float(reward_model),
        cost_disagreement=float(out["cost_std"]),
        reward_disagreement=float(out["reward_std"]),
        steps=int(steps),
    )


def observation_bounds(observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's per-dimension observation range (for ``clip_obs``)."""
    return observations.min(0).values, observations.max(0).values


class PolicyModelEstimator:
    """The estimate bound to one run's model, critics and dataset (what the policy stage wires
    into ``PolicyLearner`` as its ``cost_estimator`` for ``switch_estimator='model'`` and uses
    to label iterates).

    Every call draws from a fresh generator seeded with ``seed``: the same start states and
    model noise for every iterate (common random numbers), so two iterates' estimates differ
    only through the policies, which is what ranking and switching compare.
    """

    def __init__(
        self,
        dynamics: GaussianEnsembleDynamics,
        config: ModelEstimateConfig,
        gamma: float,
        episode_len: int,
        dataset_obs: torch.Tensor,
        initial_obs: torch.Tensor | None = None,
        critics: object | None = None,
        seed: int = 0,
        termination: Termination | None = None,
    ) -> None:
        self.dynamics = dynamics.eval().requires_grad_(False)
        self.config, self.gamma, self.episode_len = config, float(gamma), int(episode_len)
        if config.start_states == "initial":
            if initial_obs is None or initial_obs.shape[0] == 0:
                raise ValueError("model_start_states='initial' needs the dataset's episode-initial states")
            self.pool = initial_obs
        else:
            self.pool = dataset_obs
        self.bounds = observation_bounds(dataset_obs) if config.clip_obs else None
        self.critics = critics  # a CriticLearner (read at call time: its targets are TD fine-tuned)
        self.seed = int(seed)
        self.termination = termination

    def _generator(self) -> torch.Generator:
        gen = torch.Generator(device=self.pool.device)
        gen.manual_seed(self.seed)
        return gen

    def estimate(self, policy: nn.Module) -> ModelEstimate:
        critics = self.critics
        q_c = getattr(critics, "q_c_target", None)
        q_r = getattr(critics, "q_r_target", None)
        scale = float(getattr(critics, "reward_scale", 1.0))
        return model_episodic_estimate(
            self.dynamics,
            policy,
            self.pool,
            self.config,
            self.gamma,
            self.episode_len,
            self._generator(),
            q_c,
            q_r,
            scale,
            self.bounds,
            self.termination,
        )

    def __call__(self, policy: nn.Module, n_episodes: int = 0) -> float:  # noqa: ARG002 - CostEstimator API
        """``(policy, n_episodes) -> episodic cost``: the learner's ``CostEstimator`` interface."""
        return self.estimate(policy).cost
