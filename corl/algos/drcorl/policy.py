"""DRCORL stage 3: diffusion-regularised policy extraction with the safety switch
(``algorithms.md`` 1.5-1.7).

A deterministic tanh policy ``pi_theta(s)`` is trained with SRPO's score-distillation
surrogate: for ``a = pi_theta(s)``, ``t ~ U(0.02, 0.98)``, ``z ~ N(0, I)``::

    eps_hat = sg(eps_phi(alpha_t a + sigma_t z, t, s)),   w(t) = sigma_t^2 (VDS)
    g_r = sg(grad_a mean_j Qbar_r,j(s, a)),   g_c = sg(grad_a mean_j Qbar_c,j(s, a))
    L_bc   = E w <eps_hat, a>                                (3a: warm start, beta = 0)
    L_rew  = E w <eps_hat, a> - beta <g_r, a>                (reward branch)
    L_cost = E w <eps_hat, a> + beta <g_c, a>                (cost branch)
    L_lag  = E w <eps_hat, a> - beta <g_r - lambda g_c, a>   (optional Lagrangian)

with ``beta_k = 0.01 sqrt(k)`` in the safe phase. Each safe iteration ``k``:

1. ``C_hat`` <- normalised cost estimate (cost critic [offline], or a caller's rollout);
2. TD-update ``Q_r, Q_c`` on the batch (policy-evaluation targets);
3. the switching rule (:func:`switch_branch`): ``k <= 500`` or ``C_hat <= l - h`` -> reward;
   ``l - h < C_hat <= l + h`` -> PCGrad merge of the parameter deltas of one reward and one
   cost step taken from the same ``theta_0``; ``C_hat > l + h`` -> cost (or Lagrangian) step.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from corl.algos.drcorl.config import PolicyConfig
from corl.algos.drcorl.critics import CriticLearner
from corl.data.dataset import TransitionDataset
from corl.nn.critics import EnsembleQ
from corl.nn.diffusion import ScoreNet, VPSchedule, sample_diffusion_time
from corl.nn.lagrange import PIDLagrangeMultiplier
from corl.nn.losses import flat_params, inner_surrogate, pcgrad_merge, set_flat_params_, stepwise_threshold
from corl.nn.policies import DeterministicPolicy

CostEstimator = Callable[[nn.Module, int], float]
"""``(policy, n_episodes) -> mean undiscounted episodic cost`` of the policy (e.g. rollouts)."""

WARM_START, REWARD, MERGE, COST = "warm_start", "reward", "merge", "cost"
BRANCH_CODES = {WARM_START: 0.0, REWARD: 1.0, MERGE: 2.0, COST: 3.0}


# ----------------------------------------------------------------------------- the switch (1.6)
def switch_branch(
    cost_estimate: float,
    cost_limit: float,
    slack_bound: float,
    iteration: int,
    warmup_iters: int = 500,
    rule: str = "estimate",
) -> str:
    """The safety switching rule.

    ``iteration <= warmup_iters`` or ``C <= l - h`` -> ``'reward'``;
    ``l - h < C <= l + h`` -> ``'merge'``; ``C > l + h`` -> ``'cost'``.
    ``rule='always_merge'`` (a corl option): ``'merge'`` after the warm-up, whatever ``C``.
    """
    if iteration <= warmup_iters:
        return REWARD
    if rule == "always_merge":
        return MERGE
    if cost_estimate <= cost_limit - slack_bound:
        return REWARD
    if cost_estimate <= cost_limit + slack_bound:
        return MERGE
    return COST


def normalised_cost(cost: float, threshold: float, dsrl_rule: bool = True) -> float:
    """DSRL: ``(C + eps) / (kappa + eps)``, ``eps = 1`` iff ``kappa = 0``; code: ``C / (kappa + 0.1)``."""
    if dsrl_rule:
        eps = 1.0 if threshold == 0 else 0.0
        return (cost + eps) / (threshold + eps)
    return cost / (threshold + 0.1)


def member_value(q: EnsembleQ, obs: torch.Tensor, act: torch.Tensor, pessimism: float = 0.0) -> torch.Tensor:
    """``mean_j Q_j(s, a) + k std_j Q_j(s, a)`` per sample (``k = pessimism``; 0: the mean, as
    the paper; for a twin ``k = 1`` is the larger of the two)."""
    values = q(obs, act)
    if pessimism == 0.0:
        return values.mean(0)
    return values.mean(0) + pessimism * values.std(0, unbiased=False)


@torch.no_grad()
def critic_episodic_cost(
    q_c_target: EnsembleQ,
    policy: nn.Module,
    obs: torch.Tensor,
    gamma: float,
    horizon: int,
    initial_states: bool = False,
    pessimism: float = 0.0,
) -> torch.Tensor:
    """Offline episodic-cost estimate from the cost critic at ``a = pi(s)`` (mean of members,
    plus ``pessimism`` member std).

    batch states: ``(1 - gamma) T mean_s Qbar_c(s, pi(s))`` (the repo's unused estimator);
    initial states: ``mean_s0 Qbar_c(s0, pi(s0)) (1 - gamma) T / (1 - gamma^T)``.
    """
    q = member_value(q_c_target, obs, policy(obs), pessimism).mean()
    if initial_states:
        return q * (1.0 - gamma) * horizon / (1.0 - gamma**horizon)
    return q * (1.0 - gamma) * horizon


def discounted_to_go(values: torch.Tensor, dataset: TransitionDataset, gamma: float) -> torch.Tensor:
    """``G(s_t) = sum_{k>=0} gamma^k x_{t+k}`` of a per-row quantity ``values`` (rewards, costs)
    within each episode of the dataset.

    A time-out truncates the sum (the data does not say what came after), so the value is a
    slight under-estimate near the end of truncated episodes.
    """
    from scipy.signal import lfilter

    x = values.detach().cpu().double().numpy()
    out = np.zeros_like(x)
    starts, stops = dataset.episode_bounds()
    for a, b in zip(starts, stops):
        out[a:b] = lfilter([1.0], [1.0, -gamma], x[a:b][::-1])[::-1]
    return torch.as_tensor(out, dtype=torch.float32, device=dataset.device)


def discounted_cost_to_go(dataset: TransitionDataset, gamma: float) -> torch.Tensor:
    """``G_c(s_t) = sum_{k>=0} gamma^k c_{t+k}`` within each episode (see :func:`discounted_to_go`)."""
    return discounted_to_go(dataset.costs, dataset, gamma)


def calibration_rows(dataset: TransitionDataset, gamma: float, n: int, seed: int) -> dict[str, torch.Tensor]:
    """A fixed random set of ``n`` dataset rows with their discounted cost-to-go (for
    ``critic_calibration``).

    Only rows whose return is not cut short are eligible: episodes that ended in a terminal, or
    rows at least ``log(0.1) / log(gamma)`` steps before a time-out (the neglected tail is then
    under 10% of a constant cost's value); all rows when none qualify.
    """
    starts, stops = dataset.episode_bounds()
    terminal_end = dataset.terminals.detach().cpu().numpy().astype(bool)[stops - 1]
    horizon = int(math.ceil(math.log(0.1) / math.log(gamma))) if 0 < gamma < 1 else 0
    eligible = (
        np.concatenate(
            [
                np.arange(a, b) if t else np.arange(a, max(a, b - horizon))
                for a, b, t in zip(starts, stops, terminal_end)
            ]
        )
        if len(starts)
        else np.arange(0)
    )
    pool = torch.as_tensor(eligible if len(eligible) else np.arange(len(dataset)), dtype=torch.long)
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = pool[torch.randint(len(pool), (min(n, len(pool)),), generator=g)].to(dataset.device)
    return {
        "observations": dataset.observations[idx],
        "actions": dataset.actions[idx],
        "cost_to_go": discounted_cost_to_go(dataset, gamma)[idx],
    }


def initial_observations(dataset: TransitionDataset) -> torch.Tensor:
    """The first observation of every episode in the dataset."""
    starts, _ = dataset.episode_bounds()
    return dataset.observations[torch.as_tensor(starts, device=dataset.device)]


# ----------------------------------------------------------------------------- Lagrangian variant
# lambda_mode="pid": corl.nn.lagrange.PIDLagrangeMultiplier(form="drcorl"), the authors' update
# on the cost critic (all three terms ReLU'd, the integral in error units).
class FixedLagrangian:
    """A constant multiplier (``lambda_mode='fixed'``, 0.1 in the code)."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def update(self, estimate: float) -> float:  # noqa: ARG002 - same interface as the PID
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.value = float(state["value"])


# ----------------------------------------------------------------------------- loss pieces (1.5)
def diffusion_weight(alpha: torch.Tensor, sigma: torch.Tensor, weighting: str) -> torch.Tensor:
    """``w(t)``: VDS ``sigma^2``, stable ``1``, score ``alpha / sigma``."""
    if weighting == "VDS":
        return sigma**2
    if weighting == "stable":
        return torch.ones_like(sigma)
    if weighting == "score":
        return alpha / sigma
    raise ValueError(f"unknown weighting {weighting!r}; expected VDS, stable or score")


def critic_guidance(
    critics: Sequence[tuple[EnsembleQ, float, float]],
    obs: torch.Tensor,
    act: torch.Tensor,
    regq: bool = False,
    norm: str = "sample",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``sg(grad_a sum_i coef_i (mean_j Q_i,j(s, a) + k_i std_j Q_i,j(s, a)))`` and each
    critic's value (detached); an entry is ``(q, coef, k)``.

    ``regq`` divides the guidance by its RMS over action dims, per sample (``norm='sample'``)
    or over the whole batch (``norm='batch'``).
    """
    a = act.detach().requires_grad_(True)
    with torch.enable_grad():
        values = [member_value(q, obs, a, k) for q, _, k in critics]
        total = sum(coef * v.sum() for (_, coef, _), v in zip(critics, values))
        (g,) = torch.autograd.grad(total, a)
    if regq and norm == "batch":
        g = g / g.pow(2).mean().sqrt().clamp_min(1e-8)
    elif regq:
        g = g / g.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-8)
    return g.detach(), [v.detach().mean() for v in values]


def score_regularised_loss(
    eps_hat: torch.Tensor, weight: torch.Tensor, act: torch.Tensor, guidance: torch.Tensor | None, beta: float
) -> torch.Tensor:
    """``E[w(t) <sg(eps_hat), a> - beta <sg(g), a>]`` (``L_bc`` when ``guidance`` is None)."""
    loss = (weight.reshape(-1) * inner_surrogate(eps_hat, act)).mean()
    if guidance is not None:
        loss = loss - beta * inner_surrogate(guidance, act).mean()
    return loss


def beta_at(k: int, cfg: PolicyConfig) -> float:
    """``beta_k = beta_coef sqrt(k)`` (the code's safe-phase schedule) or a constant."""
    if cfg.beta_schedule == "sqrt":
        return cfg.beta_coef * math.sqrt(k)
    if cfg.beta_schedule == "const":
        return cfg.beta
    raise ValueError(f"unknown beta_schedule {cfg.beta_schedule!r}; expected sqrt or const")


# ----------------------------------------------------------------------------- learner
class PolicyLearner:
    """Behaviour-mode warm start then the safe phase; ``update(batch)`` is one iteration.

    The first ``pretrain_epochs x steps_per_pretrain_epoch`` calls are ``L_bc`` steps, the next ``train_epochs``
    are safe iterations (the counter decides, so a resumed learner continues in the right
    phase). ``behavior`` is frozen (eval mode: no dropout); ``critics`` are TD fine-tuned in
    the safe phase when ``td_finetune``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        behavior: ScoreNet,
        critics: CriticLearner,
        config: PolicyConfig | None = None,
        act_low=None,
        act_high=None,
        schedule: VPSchedule | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        cost_estimator: CostEstimator | None = None,
        initial_observations: torch.Tensor | None = None,
        calibration: Mapping[str, torch.Tensor] | None = None,
        reference_cost: float | None = None,
    ) -> None:
        self.config = cfg = config or PolicyConfig()
        self.device = torch.device(device)
        self.schedule = schedule or VPSchedule()
        self.behavior = behavior.to(self.device).eval().requires_grad_(False)
        self.critics = critics
        if cfg.td_finetune and cfg.td_reset_critic_optimizers:
            critics.reset_optimizers()
        self.policy = DeterministicPolicy(obs_dim, act_dim, tuple(cfg.hidden), "relu", act_low, act_high).to(
            self.device
        )
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, foreach=True)
        # pretrain_lr (a corl option): the warm start has its own optimizer; the safe phase's
        # starts fresh at ``lr`` (None: one optimizer for both phases, as the authors' code).
        self.pretrain_optimizer = (
            None
            if cfg.pretrain_lr is None
            else torch.optim.Adam(self.policy.parameters(), lr=cfg.pretrain_lr, foreach=True)
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.n_policy_epochs * 10_000)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        if cfg.switch_estimator in ("online", "model") and cost_estimator is None:
            raise ValueError(
                f"switch_estimator={cfg.switch_estimator!r} needs a cost_estimator(policy, n_episodes) callable"
            )
        self.cost_estimator = cost_estimator
        self.initial_obs = None if initial_observations is None else initial_observations.to(self.device)
        if cfg.critic_calibration and calibration is None:
            raise ValueError("critic_calibration needs calibration rows (see calibration_rows)")
        self.calibration = None if calibration is None else {k: v.to(self.device) for k, v in calibration.items()}
        self.calibration_factor = 1.0
        self.calibration_measured = False
        if cfg.estimate_anchor != "none" and reference_cost is None:
            raise ValueError(
                f"estimate_anchor={cfg.estimate_anchor!r} needs reference_cost (the warm start's episodes' mean cost)"
            )
        self.reference_cost = float(reference_cost or 0.0)
        self.anchor_raw: float | None = None  # the raw estimate of the warm-start policy
        self.start_policy: nn.Module | None = None  # pi_0 for proximal_coef
        if cfg.lambda_mode == "pid":
            kp, ki, kd = cfg.pid
            thr = stepwise_threshold(cfg.cost_threshold, cfg.gamma, cfg.episode_len) if cfg.fix_pid_threshold else 0.0
            self.lagrangian: PIDLagrangeMultiplier | FixedLagrangian = PIDLagrangeMultiplier(
                thr, kp, ki, kd, form="drcorl"
            )
        else:
            self.lagrangian = FixedLagrangian(cfg.lambda_fixed)
        self._loss_fn = torch.compile(score_regularised_loss) if cfg.compile else score_regularised_loss
        self._last_q: dict[str, float | torch.Tensor] = {"q_r": 0.0, "q_c": 0.0}  # latest values, for logs
        self.step = 0
        self.cost_estimate = 0.0  # last normalised C_hat
        self.pretrain_steps = cfg.pretrain_epochs * cfg.steps_per_pretrain_epoch
        self.total_steps = self.pretrain_steps + cfg.train_epochs

    # ------------------------------------------------------------------ public
    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        if self.step < self.pretrain_steps:
            metrics = self._warm_start_step(batch)
        else:
            metrics = self._safe_iteration(batch, self.step - self.pretrain_steps)
        self.step += 1
        return metrics

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(obs)

    # ------------------------------------------------------------------ 3a: warm start (L_bc)
    def _warm_start_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        optimizer = self.pretrain_optimizer or self.optimizer
        if self.config.warm_start == "bc":
            loss = self._bc_step(batch["observations"], batch["actions"], optimizer)
        else:
            loss = self._policy_step(batch["observations"], guidance_critics=None, beta=0.0, optimizer=optimizer)
        return {
            "policy/loss_bc": float(loss),
            "policy/branch": BRANCH_CODES[WARM_START],
            "policy/lr": optimizer.param_groups[0]["lr"],
        }

    # ------------------------------------------------------------------ 3b: safe iteration
    def _safe_iteration(self, batch: Mapping[str, torch.Tensor], k: int) -> dict[str, float]:
        cfg = self.config
        obs = batch["observations"]
        beta = beta_at(k, cfg)
        c_hat = self._estimate_cost(obs, k)
        metrics: dict[str, float] = {}
        if cfg.td_finetune:
            metrics.update(self.critics.td_update(batch, self.policy))
        branch = switch_branch(c_hat, cfg.cost_limit, cfg.slack_bound, k, cfg.warmup_iters, cfg.switch_rule)
        if branch == REWARD:
            loss = self._policy_step(obs, self._reward_direction(), beta)
        elif branch == COST:
            loss = self._policy_step(obs, self._cost_direction(obs), beta)
        else:
            loss = self._merged_step(obs, beta)
        metrics.update(
            {
                "policy/loss": float(loss),
                "policy/beta": beta,
                "policy/cost_estimate": c_hat,
                "policy/branch": BRANCH_CODES[branch],
                "policy/lambda": self.lagrangian.value,
                "policy/lr": self.optimizer.param_groups[0]["lr"],
            }
        )
        if cfg.critic_calibration:
            metrics["policy/calibration"] = self.calibration_factor
        metrics.update({f"policy/{k_}": float(v) for k_, v in self._last_q.items()})
        return metrics

    def _estimate_cost(self, obs: torch.Tensor, k: int) -> float:
        """Normalised ``C_hat`` (re-estimated every ``estimate_every`` safe iterations)."""
        cfg = self.config
        if k % cfg.estimate_every != 0:
            return self.cost_estimate
        anchored = cfg.estimate_anchor != "none" and cfg.switch_estimator != "online"
        if cfg.critic_calibration and cfg.switch_estimator == "critic":
            self._calibration()  # measured once, before this iteration's estimate
        if anchored and self.calibration is not None:
            obs = self.calibration["observations"]  # one fixed state set: anchor and iterates alike
        episodic = self._raw_estimate(self.policy, obs)
        if anchored and cfg.estimate_anchor == "paired":
            episodic = self.reference_cost + (episodic - self._raw_estimate(self._start_policy(), obs))
        elif anchored:
            if self.anchor_raw is None:  # the first safe iteration: the warm-start policy
                self.anchor_raw = episodic
            episodic = self.reference_cost + (episodic - self.anchor_raw)
        self.cost_estimate = normalised_cost(episodic, cfg.cost_threshold, cfg.fix_cost_normalisation)
        return self.cost_estimate

    def _raw_estimate(self, policy: nn.Module, obs: torch.Tensor) -> float:
        """The switch estimator's episodic cost of ``policy`` (unnormalised, before any anchor):
        rollouts (``online``, ``model``) or the cost critic over ``obs`` (or the initial states)."""
        cfg = self.config
        if cfg.switch_estimator in ("online", "model"):  # model: n_episodes is ignored
            episodes = cfg.estimate_episodes if cfg.fix_single_episode_eval else 1
            return float(self.cost_estimator(policy, episodes))
        use_initial = cfg.critic_states == "initial" and self.initial_obs is not None
        episodic = critic_episodic_cost(
            self.critics.q_c_target,
            policy,
            self.initial_obs if use_initial else obs,
            cfg.gamma,
            cfg.episode_len,
            initial_states=use_initial,
            pessimism=cfg.cost_pessimism,
        )
        return float(episodic) * self.calibration_factor

    @torch.no_grad()
    def _calibration(self) -> float:
        """``mean G_c / mean Qbar_c(s, a)`` on the fixed calibration rows (1 when undefined).

        Measured once, at the first safe iteration, before any TD fine-tuning: the pre-trained
        (IQL) critic values the data's own continuation, so the ratio compares like with like;
        after TD fine-tuning ``Qbar_c(s, a)`` continues with pi, not with the data.
        """
        if self.calibration_measured:
            return self.calibration_factor
        self.calibration_measured = True
        rows = self.calibration
        q = float(self.critics.q_c_target(rows["observations"], rows["actions"]).mean())
        mc = float(rows["cost_to_go"].mean())
        self.calibration_factor = mc / q if q > 1e-6 and mc > 0 else 1.0
        return self.calibration_factor

    def _reward_direction(self) -> list[tuple[EnsembleQ, float, float]]:
        return [(self.critics.q_r_target, 1.0, 0.0)]

    def _cost_direction(self, obs: torch.Tensor) -> list[tuple[EnsembleQ, float, float]]:
        """``-g_c`` for L_cost, or ``g_r - lambda g_c`` for L_lag (lambda updated first); the
        cost critic's value carries ``cost_pessimism`` member std."""
        k = self.config.cost_pessimism
        if not self.config.use_lagrangian:
            return [(self.critics.q_c_target, -1.0, k)]
        if isinstance(self.lagrangian, PIDLagrangeMultiplier):
            with torch.no_grad():
                q_c = member_value(self.critics.q_c_target, obs, self.policy(obs), k).mean()
            self.lagrangian.update(float(q_c))
        return [(self.critics.q_r_target, 1.0, 0.0), (self.critics.q_c_target, -self.lagrangian.value, k)]

    def _merged_step(self, obs: torch.Tensor, beta: float) -> torch.Tensor:
        """PCGrad on the parameter deltas of a reward step and a cost step from the same theta_0."""
        params = list(self.policy.parameters())
        theta0 = flat_params(params)
        loss_r = self._policy_step(obs, self._reward_direction(), beta)
        delta_r = flat_params(params) - theta0
        set_flat_params_(params, theta0)
        loss_c = self._policy_step(obs, self._cost_direction(obs), beta)
        delta_c = flat_params(params) - theta0
        set_flat_params_(params, theta0 + pcgrad_merge(delta_r, delta_c))
        return 0.5 * (loss_r + loss_c)

    def _bc_step(self, obs: torch.Tensor, act: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One Adam step on ``E ||pi(s) - clip(a)||^2`` (``warm_start = "bc"``); the dataset's
        actions are clipped into the policy's box, which its tanh output cannot leave."""
        pi = self.policy
        target = torch.clamp(act, pi.action_bias - pi.action_scale, pi.action_bias + pi.action_scale)
        return self._descend((pi(obs) - target).pow(2).sum(-1).mean(), optimizer)

    def _descend(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One Adam step on ``loss``; the cosine schedule follows the safe phase's optimizer only."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if optimizer is self.optimizer:
            self.scheduler.step()
        return loss.detach()

    # ------------------------------------------------------------------ one Adam step on a surrogate
    def _policy_step(
        self,
        obs: torch.Tensor,
        guidance_critics: list[tuple[EnsembleQ, float, float]] | None,
        beta: float,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> torch.Tensor:
        """One Adam step on ``E[w <eps_hat, a> - beta <g, a>]`` (and a scheduler step unless a
        separate warm-start ``optimizer`` is given)."""
        cfg = self.config
        b = obs.shape[0]
        act = self.policy(obs)
        t = sample_diffusion_time(b, cfg.t_min, cfg.t_max, self.device, self.generator)
        noise = torch.randn(act.shape, device=self.device, generator=self.generator)
        with torch.no_grad():
            eps_hat = self.behavior(self.schedule.perturb(act.detach(), t, noise), t, obs)
            alpha, sigma = self.schedule.alpha_sigma(t)
            weight = diffusion_weight(alpha, sigma, cfg.weighting)
        guidance = None
        if guidance_critics is not None:
            guidance, values = critic_guidance(guidance_critics, obs, act, cfg.regq, cfg.guidance_norm)
            for (q, *_), v in zip(guidance_critics, values):
                self._last_q["q_r" if q is self.critics.q_r_target else "q_c"] = v
        loss = self._loss_fn(eps_hat, weight, act, guidance, beta)
        if guidance_critics is not None and cfg.proximal_coef > 0:
            loss = loss + cfg.proximal_coef * (act - self._start_policy()(obs)).pow(2).sum(-1).mean()
        return self._descend(loss, optimizer or self.optimizer)

    def _start_policy(self) -> nn.Module:
        """The warm-start policy ``pi_0`` (frozen copy, taken at the first safe iteration)."""
        if self.start_policy is None:
            self.start_policy = copy.deepcopy(self.policy).requires_grad_(False)
        return self.start_policy

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
            "cost_estimate": self.cost_estimate,
            "calibration_factor": self.calibration_factor,
            "calibration_measured": self.calibration_measured,
            **({} if self.anchor_raw is None else {"anchor_raw": self.anchor_raw}),
            **({} if self.start_policy is None else {"start_policy": self.start_policy.state_dict()}),
            "lagrangian": self.lagrangian.state_dict(),
            "critics": self.critics.state_dict(),
            "last_q": {k: float(v) for k, v in self._last_q.items()},
            "behavior": self.behavior.state_dict(),
            **({} if self.pretrain_optimizer is None else {"pretrain_optimizer": self.pretrain_optimizer.state_dict()}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        self.step = int(state["step"])
        self.cost_estimate = float(state["cost_estimate"])
        self.calibration_factor = float(state.get("calibration_factor", 1.0))
        self.calibration_measured = bool(state.get("calibration_measured", False))
        self.anchor_raw = float(state["anchor_raw"]) if "anchor_raw" in state else None
        self.start_policy = None
        if "start_policy" in state:
            self._start_policy().load_state_dict(state["start_policy"])
        self.lagrangian.load_state_dict(state["lagrangian"])
        self._last_q = dict(state["last_q"])
        self.critics.load_state_dict(state["critics"])
        self.behavior.load_state_dict(state["behavior"])
        if self.pretrain_optimizer is not None:
            self.pretrain_optimizer.load_state_dict(state["pretrain_optimizer"])
