"""MICE on a CPO base (algorithms.md §4.5-4.6), as the released code does.

Reads in the paper's order:

1. Trust-region math (pure functions): :func:`flat_grad`, :func:`conjugate_gradient`,
   :func:`cpo_step_direction` (the feasible/infeasible case analysis).
2. :class:`MICELearner` — actor (diagonal Gaussian, state-independent ``log σ``), reward and
   cost value critics; one public ``update(batch)`` made of ``_normalise_advantages``,
   ``_policy_gradients`` (g, b), ``_cpo_step`` (CG + case analysis + ``_line_search``) and
   ``_update_critics``. ``config.base = "ppo_lag"`` swaps the CPO step for a PPO-Lagrangian
   step (**an extension, not in the released MICE code**) that uses the same
   intrinsic-augmented ``A^C`` and ``Ĵ_C + mean Ĵ^I`` in its multiplier update.
3. :class:`RunningNormalizer` — OmniSafe-style running observation statistics.
4. :class:`MICETrainer` — the online side as an
   :class:`~corl.algos.online.collector.OnlineAgent`: per env step the intrinsic cost
   (:class:`~corl.algos.mice.intrinsic.IntrinsicCostModule`), per closed slice the
   bias-corrected cost value (:func:`~corl.algos.mice.value.bias_corrected_cost_value`), per
   epoch one ``update`` and the decay ``γ_c^{epoch}``.
"""

from __future__ import annotations

import collections
import math
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from corl.algos.mice.config import MICEConfig
from corl.algos.mice.intrinsic import IntrinsicCostModule
from corl.algos.mice.rollout import EpochRollout
from corl.algos.mice.value import bias_corrected_cost_value, gae
from corl.nn.critics import ValueFunction
from corl.nn.lagrange import LagrangeMultiplier
from corl.nn.losses import flat_params, set_flat_params_
from corl.nn.policies import DiagGaussianPolicy

__all__ = ["flat_grad", "conjugate_gradient", "cpo_step_direction", "MICELearner", "RunningNormalizer", "MICETrainer"]


# ------------------------------------------------------------------------------ 1. trust-region math
def flat_grad(output: torch.Tensor, params: list[nn.Parameter], create_graph: bool = False) -> torch.Tensor:
    grads = torch.autograd.grad(output, params, create_graph=create_graph, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def conjugate_gradient(
    avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 15, residual_tol: float = 1e-10
) -> torch.Tensor:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``v ↦ A v``.

    Branch-free: once ``rᵀr < residual_tol`` the step size is masked to 0 (``x``, ``r`` and
    ``p`` stay put) instead of breaking out of the loop, so the loop never reads a value back
    to Python (no device sync per iteration). Until then every operation is the textbook
    recursion, so the result is bit-identical to the early-exit form.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        ap = avp(p)
        active = rr >= residual_tol
        alpha = torch.where(active, rr / (torch.dot(p, ap) + 1e-8), torch.zeros_like(rr))
        x += alpha * p
        r -= alpha * ap
        rr_new = torch.dot(r, r)
        p = torch.where(active, r + (rr_new / rr) * p, p)
        rr = rr_new
    return x


def cpo_step_direction(
    x: torch.Tensor,
    p: torch.Tensor,
    q: float,
    r: float,
    s: float,
    c: float,
    b_norm_sq: float,
    target_kl: float,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, int, float, float]:
    """The CPO dual solution: ``(step, case, λ*, ν*)``.

    ``x = H⁻¹g``, ``p = H⁻¹b``, ``q = gᵀx``, ``r = gᵀp``, ``s = bᵀp``, ``c`` the constraint value
    (positive = violated). Cases: 4 (``‖b‖² ≤ 1e-6``, ``c < 0``: no usable cost gradient),
    3 (``c<0, B<0``: the trust region lies inside the feasible set), 2 (``c<0≤B``),
    1 (``c≥0, B≥0``), 0 (infeasible: recovery step that only lowers the cost).
    """
    delta2 = 2.0 * target_kl
    if b_norm_sq <= 1e-6 and c < 0:
        case, big_a, big_b = 4, 0.0, 0.0
    else:
        big_a = q - r * r / (s + eps)
        big_b = delta2 - c * c / (s + eps)
        if c < 0 and big_b < 0:
            case = 3
        elif c < 0 <= big_b:
            case = 2
        elif c >= 0 and big_b >= 0:
            case = 1
        else:
            case = 0
    if case in (3, 4):
        lam = math.sqrt(q / delta2)
        return x / (lam + eps), case, lam, 0.0
    if case in (1, 2):
        lam_a = math.sqrt(max(big_a, 0.0) / (big_b + eps))
        lam_b = math.sqrt(q / delta2)
        ratio = r / (c + eps)
        if c < 0:
            lam_a_star = min(max(lam_a, 0.0), max(ratio, 0.0))
            lam_b_star = max(lam_b, ratio)
        else:
            lam_a_star = max(lam_a, ratio)
            lam_b_star = min(max(lam_b, 0.0), max(ratio, 0.0))
        f_a = -0.5 * (big_a / (lam_a_star + eps) + big_b * lam_a_star) - r * c / (s + eps)
        f_b = -0.5 * (q / (lam_b_star + eps) + delta2 * lam_b_star)
        lam = lam_a_star if f_a >= f_b else lam_b_star
        nu = max(0.0, lam * c - r) / (s + eps)
        return (x - nu * p) / (lam + eps), case, lam, nu
    nu = math.sqrt(delta2 / (s + eps))
    return -nu * p, case, 0.0, nu


# ------------------------------------------------------------------------------ 2. learner
class MICELearner:
    """Actor + ``V_r`` + ``V_c``; ``update(batch)`` is one epoch's policy step and critic regression.

    ``batch`` (one epoch, flat): ``observations`` (normalised), ``actions``, ``log_probs`` (old),
    ``adv_r``, ``adv_c``, ``target_r``, ``target_c`` and two scalars: ``ep_cost`` (``Ĵ_C``) and
    ``intrinsic_return`` (``mean Ĵ^I``).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, config: MICEConfig | None = None, device: torch.device | str = "cpu"
    ) -> None:
        self.config = cfg = config or MICEConfig()
        self.device = torch.device(device)
        self.actor = DiagGaussianPolicy(
            obs_dim,
            act_dim,
            cfg.hidden,
            cfg.activation,
            state_dependent_std=False,
            bounded_mean=False,
            log_std_init=cfg.log_std_init,
        ).to(self.device)
        self.reward_critic = ValueFunction(obs_dim, cfg.hidden, cfg.activation).to(self.device)
        self.cost_critic = ValueFunction(obs_dim, cfg.hidden, cfg.activation).to(self.device)
        # foreach: one op per Adam stage over a critic's tensors (bit-identical to the per-tensor loop)
        self.reward_optimizer = torch.optim.Adam(self.reward_critic.parameters(), lr=cfg.critic_lr, foreach=True)
        self.cost_optimizer = torch.optim.Adam(self.cost_critic.parameters(), lr=cfg.critic_lr, foreach=True)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.ppo_actor_lr)  # ppo_lag only
        self.lagrange = LagrangeMultiplier(cfg.cost_limit, cfg.lagrange_init, cfg.lagrange_lr, device=self.device)
        self.total_steps = 0  # epochs (one update per epoch)
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)  # critic minibatch order

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = obs.to(self.device)
        action, logp = self.actor.sample(obs, deterministic)
        return action, {"log_probs": logp, "values_r": self.reward_critic(obs), "values_c": self.cost_critic(obs)}

    # ------------------------------------------------------------------ policy step
    @staticmethod
    def _normalise_advantages(adv_r: torch.Tensor, adv_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward advantages standardised, cost advantages only centred (§4.4)."""
        return (adv_r - adv_r.mean()) / (adv_r.std() + 1e-8), adv_c - adv_c.mean()

    def _surrogates(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.distributions.Distribution]:
        """``(E[ρ_θ A^R], E[ρ_θ A^C], π_θ)``."""
        dist = self.actor.distribution(batch["observations"])
        ratio = torch.exp(dist.log_prob(batch["actions"]) - batch["log_probs"])
        return (ratio * batch["adv_r"]).mean(), (ratio * batch["adv_c"]).mean(), dist

    def _kl(self, obs: torch.Tensor, old_mean: torch.Tensor, old_std: torch.Tensor) -> torch.Tensor:
        """Mean ``KL(π_old ‖ π_θ)`` over the batch."""
        old = self.actor.make_distribution(old_mean, old_std)
        return torch.distributions.kl_divergence(old, self.actor.distribution(obs)).mean()

    def _policy_gradients(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """``g = ∇E[ρ A^R]`` and ``b = ∇E[ρ A^C]`` at ``θ_old``, plus the two surrogate values."""
        params = list(self.actor.parameters())
        sur_r, sur_c, _ = self._surrogates(batch)
        return flat_grad(sur_r, params), flat_grad(sur_c, params), float(sur_r.detach()), float(sur_c.detach())

    def _cpo_step(self, batch: Mapping[str, torch.Tensor], constraint: float) -> dict[str, float]:
        cfg = self.config
        params = list(self.actor.parameters())
        obs = batch["observations"]
        with torch.no_grad():
            old_mean, old_std = self.actor.params(obs)
        g, b, sur_r, sur_c = self._policy_gradients(batch)

        # ∇KL is built once with its graph; every Fisher-vector product (both CG solves) is one
        # backward pass through that graph (the parameters do not move during CG, so this is the
        # same product as rebuilding KL and ∇KL per call, at a third of the cost)
        grad_kl = flat_grad(self._kl(obs, old_mean, old_std), params, create_graph=True)

        def fvp(v: torch.Tensor) -> torch.Tensor:
            return flat_grad(torch.dot(grad_kl, v), params) + cfg.cg_damping * v

        x = conjugate_gradient(fvp, g, cfg.cg_iters)
        p = conjugate_gradient(fvp, b, cfg.cg_iters)
        q, r, s = float(torch.dot(g, x)), float(torch.dot(g, p)), float(torch.dot(b, p))
        step, case, lam, nu = cpo_step_direction(x, p, q, r, s, constraint, float(torch.dot(b, b)), cfg.target_kl)
        accepted, kl, frac = self._line_search(batch, step, case, constraint, sur_r, sur_c, old_mean, old_std)
        return {
            "cpo_case": float(case),
            "cpo_lambda": lam,
            "cpo_nu": nu,
            "cpo_q": q,
            "cpo_r": r,
            "cpo_s": s,
            "line_search_accepted": float(accepted),
            "line_search_fraction": frac,
            "kl": kl,
            "surrogate_r": sur_r,
            "surrogate_c": sur_c,
        }

    @torch.no_grad()
    def _line_search(
        self, batch, step, case, constraint, sur_r_old, sur_c_old, old_mean, old_std
    ) -> tuple[bool, float, float]:
        """Backtrack ``θ_old + 0.8^j Δ``; accept the first admissible one, else keep ``θ_old``."""
        cfg = self.config
        params = list(self.actor.parameters())
        theta_old = flat_params(params)
        frac = 1.0
        for _ in range(cfg.line_search_steps):
            set_flat_params_(params, theta_old + frac * step)
            sur_r, sur_c, _ = self._surrogates(batch)
            kl = float(self._kl(batch["observations"], old_mean, old_std))
            ok = math.isfinite(float(sur_r)) and math.isfinite(kl)
            if ok and case > 1 and float(sur_r) - sur_r_old < 0:
                ok = False
            elif ok and float(sur_c) - sur_c_old > max(-constraint, 0.0):
                ok = False
            elif ok and kl > cfg.target_kl:
                ok = False
            if ok:
                return True, kl, frac
            frac *= cfg.line_search_decay
        set_flat_params_(params, theta_old)
        return False, 0.0, 0.0

    def _ppo_lag_step(self, batch: Mapping[str, torch.Tensor], cost_estimate: float) -> dict[str, float]:
        """EXTENSION (not in the released MICE): PPO-Lag with ``(A^R − λA^C)/(1+λ)``, clip, λ by Adam."""
        cfg = self.config
        lam = self.lagrange.update(cost_estimate)
        adv = (batch["adv_r"] - lam * batch["adv_c"]) / (1.0 + lam)
        n = batch["observations"].shape[0]
        loss = torch.zeros(())
        for _ in range(cfg.update_iters):
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n, cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                logp = self.actor.log_prob(batch["observations"][idx], batch["actions"][idx])
                ratio = torch.exp(logp - batch["log_probs"][idx])
                clipped = ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip)
                loss = -torch.minimum(ratio * adv[idx], clipped * adv[idx]).mean()
                self.actor_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
                self.actor_optimizer.step()
        return {"lagrange": lam, "loss_pi": float(loss.detach())}

    # ------------------------------------------------------------------ critics
    def _update_critics(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """``update_iters`` passes of minibatch MSE + ``critic_l2 Σ‖w‖²``, grad-norm clip.

        Both critics see the same minibatch; their two MSE losses go through one backward call
        (the graphs are disjoint, so each critic's gradient is exactly its own loss's). The L2
        term's gradient ``(2 critic_l2) w`` is added to the gradients directly, as autograd would
        (the product rounded once, then summed with the MSE gradient), instead of building
        ``Σ‖w‖²`` into the graph of every minibatch; the logged loss includes it.
        """
        cfg = self.config
        n = batch["observations"].shape[0]
        critics = (
            (self.reward_critic, self.reward_optimizer, batch["target_r"]),
            (self.cost_critic, self.cost_optimizer, batch["target_c"]),
        )
        params = [list(critic.parameters()) for critic, _, _ in critics]
        logged = [torch.zeros(()), torch.zeros(())]
        mse: list[torch.Tensor] = [torch.zeros(()), torch.zeros(())]
        l2_coef = 2.0 * cfg.critic_l2
        last = (cfg.update_iters - 1, max(range(0, n, cfg.batch_size), default=0))
        for it in range(cfg.update_iters):
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n, cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                obs = batch["observations"][idx]
                for i, (critic, _, target) in enumerate(critics):
                    mse[i] = (critic(obs) - target[idx]).pow(2).mean()
                for _, opt, _ in critics:
                    opt.zero_grad(set_to_none=True)
                torch.autograd.backward(mse)
                with torch.no_grad():
                    if (it, start) == last:  # the logged loss, at the weights it was computed with
                        for i, ps in enumerate(params):
                            logged[i] = mse[i] + cfg.critic_l2 * sum(w.pow(2).sum() for w in ps)
                    if cfg.critic_l2:
                        for ps in params:
                            torch._foreach_add_([w.grad for w in ps], torch._foreach_mul(ps, l2_coef))
                for (_, opt, _), ps in zip(critics, params):
                    nn.utils.clip_grad_norm_(ps, cfg.max_grad_norm)
                    opt.step()
        return {"loss_v_r": float(logged[0].detach()), "loss_v_c": float(logged[1].detach())}

    # ------------------------------------------------------------------ one update
    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """One epoch: constraint value ``c = (Ĵ_C − d) + mean Ĵ^I``, policy step, critic regression."""
        cfg = self.config
        batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        adv_r, adv_c = self._normalise_advantages(batch["adv_r"], batch["adv_c"])
        batch = dict(batch, adv_r=adv_r, adv_c=adv_c)
        ep_cost, j_int = float(batch["ep_cost"]), float(batch["intrinsic_return"])
        constraint = (ep_cost - cfg.cost_limit) + j_int
        if cfg.base == "cpo":
            logs = self._cpo_step(batch, constraint)
        elif cfg.base == "ppo_lag":
            logs = self._ppo_lag_step(batch, ep_cost + j_int)
        else:
            raise ValueError(f"base must be 'cpo' or 'ppo_lag', got {cfg.base!r}")
        logs.update(self._update_critics(batch))
        logs.update(
            {
                "constraint": constraint,
                "ep_cost_estimate": ep_cost,
                "intrinsic_return": j_int,
                "std": float(self.actor.log_std.detach().exp().mean()),
            }
        )
        self.total_steps += 1
        return logs

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "reward_critic": self.reward_critic.state_dict(),
            "cost_critic": self.cost_critic.state_dict(),
            "reward_optimizer": self.reward_optimizer.state_dict(),
            "cost_optimizer": self.cost_optimizer.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "lagrange": self.lagrange.state_dict(),
            "total_steps": self.total_steps,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        for name in (
            "actor",
            "reward_critic",
            "cost_critic",
            "reward_optimizer",
            "cost_optimizer",
            "actor_optimizer",
            "lagrange",
        ):
            getattr(self, name).load_state_dict(state[name])
        self.total_steps = int(state["total_steps"])
        self.generator.set_state(state["generator"])


# ------------------------------------------------------------------------------ 3. normaliser
class RunningNormalizer:
    """Running mean/variance (parallel-update formula) and ``(x − μ)/sqrt(σ² + eps)``."""

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.var = torch.ones(dim, dtype=torch.float64)
        self.count = 0
        self.eps = eps

    def update(self, x: torch.Tensor) -> None:
        x = x.double().reshape(-1, self.mean.shape[0])
        n = x.shape[0]
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + b_var * n + delta.pow(2) * self.count * n / total) / total
        self.count = total

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / torch.sqrt(self.var + self.eps)).float()

    def state_dict(self) -> dict:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count}

    def load_state_dict(self, state: Mapping) -> None:
        self.mean, self.var, self.count = state["mean"].clone(), state["var"].clone(), int(state["count"])


# ------------------------------------------------------------------------------ 4. online side
class MICETrainer:
    """MICE's epoch loop (§4.6) as an :class:`~corl.algos.online.collector.OnlineAgent`.

    Per vector step: normalise observations (statistics updated first, as OmniSafe's wrapper
    does), act, then in ``observe`` insert unsafe states into memory and compute ``c^I`` for all
    envs in one tensor op, and write the step into the epoch's preallocated
    :class:`~corl.algos.mice.rollout.EpochRollout` (one write per field for all envs); per
    closed slice the reward GAE and the bias-corrected cost value; every ``steps_per_epoch``
    env steps one ``learner.update`` and the epoch counter (which drives the intrinsic decay
    ``γ_c^{epoch}``) advances.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        num_envs: int,
        config: MICEConfig | None = None,
        horizon: int = 1000,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = cfg = config or MICEConfig()
        self.device = torch.device(device)
        self.num_envs = int(num_envs)
        self.horizon = int(cfg.horizon or horizon)
        self.learner = MICELearner(obs_dim, act_dim, cfg, device)
        # rows per env in an epoch (capped: a huge steps_per_epoch grows the storage as it fills)
        rows = min(-(-cfg.steps_per_epoch // self.num_envs), 1 << 14)
        self.rollout = EpochRollout(self.num_envs, obs_dim, act_dim, rows)
        self.intrinsic = IntrinsicCostModule(
            obs_dim,
            num_envs,
            cfg.emb_dim,
            cfg.memory_capacity,
            cfg.k_knn,
            cfg.kernel_xi,
            cfg.kernel_eps,
            cfg.intrinsic_factor,
            cfg.intrinsic_decay,
            device,
        )
        self.normalizer = RunningNormalizer(obs_dim) if cfg.obs_normalize else None
        self.beta = [cfg.beta_init] * self.num_envs
        self.episode_costs: collections.deque = collections.deque(maxlen=cfg.cost_window)
        self.epoch = 0
        self.env_steps = 0
        self._reset_rollout()

    @classmethod
    def for_task(
        cls, task, num_envs: int, config: MICEConfig | None = None, device: torch.device | str = "cpu"
    ) -> "MICETrainer":
        from corl.tasks import get_task

        spec = get_task(task) if isinstance(task, str) else task
        return cls(spec.obs_dim, spec.act_dim, num_envs, config, spec.max_episode_steps, device)

    @property
    def training_step(self) -> int:
        return self.learner.total_steps

    def _reset_rollout(self) -> None:
        self.rollout.reset()

    @property
    def epoch_steps(self) -> int:
        return self.rollout.epoch_steps

    def _normalise(self, obs: torch.Tensor, update: bool) -> torch.Tensor:
        if self.normalizer is None:
            return obs.float()
        if update:
            self.normalizer.update(obs)
        return self.normalizer(obs)

    # ------------------------------------------------------------------ agent protocol
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs_n = self._normalise(obs, update=True)
        action, extras = self.learner.act(obs_n)
        extras["obs_norm"] = obs_n
        return action.cpu(), {k: v.cpu() for k, v in extras.items()}

    def observe(self, step) -> dict[str, float] | None:
        cfg = self.config
        roll = self.rollout
        obs_n = torch.as_tensor(step.extras["obs_norm"])
        costs = torch.as_tensor(step.costs, dtype=torch.float32)
        c_int = self.intrinsic.step(obs_n.to(self.device), costs.to(self.device), self.epoch).cpu()
        roll.append(
            obs_n,
            torch.as_tensor(step.actions),
            log_probs=torch.as_tensor(step.extras["log_probs"]),
            rewards=torch.as_tensor(step.rewards),
            costs=costs,
            intrinsic=c_int,
            values_r=torch.as_tensor(step.extras["values_r"]),
            values_c=torch.as_tensor(step.extras["values_c"]),
        )
        self.env_steps += self.num_envs
        roll.epoch_steps += self.num_envs
        roll.epoch_cost += float(costs.sum())
        for ep in step.finished:
            self.episode_costs.append(ep.cost)
        for j in np.flatnonzero(step.dones):
            if step.terminals[j]:
                self._finish_slice(j, 0.0, 0.0)
            else:
                self._finish_slice(j, *self._bootstrap(step.next_observations[j]))
        if roll.epoch_steps >= cfg.steps_per_epoch:
            for j in range(self.num_envs):
                if roll.has_open_slice(j):
                    self._finish_slice(j, *self._bootstrap(step.next_observations[j]))
            return self._end_epoch()
        return None

    @torch.no_grad()
    def _bootstrap(self, next_obs: np.ndarray) -> tuple[float, float]:
        obs_n = self._normalise(torch.as_tensor(next_obs, dtype=torch.float32)[None], update=False).to(self.device)
        return float(self.learner.reward_critic(obs_n)), float(self.learner.cost_critic(obs_n))

    def _finish_slice(self, j: int, last_v_r: float, last_v_c: float) -> None:
        """Reward GAE and the bias-corrected cost value on env ``j``'s open slice (§4.4)."""
        cfg = self.config
        sl = self.rollout.open_slice(j)
        adv_r, target_r = gae(sl["rewards"], sl["values_r"], last_v_r, cfg.gamma, cfg.lam)
        gamma_c = cfg.gamma if cfg.correction_uses_reward_gamma else cfg.cost_gamma
        corrected = bias_corrected_cost_value(
            sl["costs"],
            sl["intrinsic"],
            sl["values_c"],
            last_v_c,
            self.beta[j],
            gamma_c,
            cfg.lam_c,
            cfg.beta_lr,
            cfg.beta_ema,
            cfg.beta_guard,
        )
        self.beta[j] = corrected.beta
        results = {"adv_r": adv_r, "target_r": target_r, "adv_c": corrected.advantages, "target_c": corrected.targets}
        self.rollout.close_slice(j, results, corrected.intrinsic_return)

    def episodic_cost_estimate(self) -> float:
        """``Ĵ_C``: mean cost of the last ``cost_window`` finished episodes (guarded when empty)."""
        if self.episode_costs:
            return float(np.mean(self.episode_costs))
        if self.config.empty_cost_window == "epoch_rate":
            return self.rollout.epoch_cost / max(self.rollout.epoch_steps, 1) * self.horizon
        return 0.0

    def _end_epoch(self) -> dict[str, float]:
        batch: dict[str, torch.Tensor | float] = dict(self.rollout.batch())
        batch["ep_cost"] = self.episodic_cost_estimate()
        batch["intrinsic_return"] = self.rollout.intrinsic_return_mean()
        intrinsic_mean = self.rollout.intrinsic_mean()
        logs = self.learner.update(batch)
        logs.update(
            {
                "epoch": float(self.epoch),
                "intrinsic_cost_mean": intrinsic_mean,
                "intrinsic_scale": self.intrinsic.scale(self.epoch),
                "beta_mean": float(np.mean(self.beta)),
                "memory_size": float(len(self.intrinsic.memory)),
            }
        )
        self.epoch += 1
        self._reset_rollout()
        return logs

    @torch.no_grad()
    def cost_value_diagnostic(self, task, seed: int = 0, deterministic: bool = False) -> dict[str, float]:
        """§4.8's underestimation check: one Monte-Carlo discounted cost from a reset state
        (``true_value_c``, cost γ) against ``V_c`` there (``estimate_value_c``).

        Observations go through the trainer's normaliser (statistics frozen), the fix of
        §4.10-4 (the released code feeds raw observations to networks trained on normalised
        ones). Uses a fresh env; the policy samples with torch's global RNG.
        """
        from corl.envs.factory import make_env

        env = make_env(task)
        low, high = env.action_space.low, env.action_space.high
        obs, _ = env.reset(seed=seed)
        s0 = self._normalise(torch.as_tensor(obs, dtype=torch.float32)[None], update=False).to(self.device)
        estimate = float(self.learner.cost_critic(s0))
        true_value, discount, done = 0.0, 1.0, False
        while not done:
            o = self._normalise(torch.as_tensor(obs, dtype=torch.float32)[None], update=False).to(self.device)
            action = self.learner.actor.sample(o, deterministic)[0][0].cpu().numpy()
            obs, _, terminated, truncated, info = env.step(np.clip(action, low, high))
            true_value += discount * float(info["cost"])
            discount *= self.config.cost_gamma
            done = terminated or truncated
        env.close()
        return {"true_value_c": true_value, "estimate_value_c": estimate}

    # ------------------------------------------------------------------ checkpoint
    def cut_episodes(self, open_envs: np.ndarray, last_obs: np.ndarray) -> None:
        """The open episodes will not continue (a resume restarts them): close each open slice
        as a time-out at its last observation, as an epoch end does."""
        for j in np.flatnonzero(open_envs):
            if self.rollout.has_open_slice(int(j)):
                self._finish_slice(int(j), *self._bootstrap(last_obs[j]))

    def state_dict(self) -> dict:
        """Everything for an exact resume, including the open epoch's rollout and the torch RNG.

        Tensors share storage with the live objects (as ``nn.Module.state_dict``): save or
        deep-copy it before training on. The envs themselves are not part of it.
        """
        return {
            "learner": self.learner.state_dict(),
            "intrinsic": self.intrinsic.state_dict(),
            "normalizer": self.normalizer.state_dict() if self.normalizer else None,
            "beta": list(self.beta),
            "episode_costs": list(self.episode_costs),
            "epoch": self.epoch,
            "env_steps": self.env_steps,
            "rollout": self.rollout.state_dict(),  # version 2 (copies); version 1 loads too
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.learner.load_state_dict(state["learner"])
        self.intrinsic.load_state_dict(state["intrinsic"])
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        self.beta = list(state["beta"])
        self.episode_costs = collections.deque(state["episode_costs"], maxlen=self.config.cost_window)
        self.epoch, self.env_steps = int(state["epoch"]), int(state["env_steps"])
        self.rollout.load_state_dict(state["rollout"])
        torch.set_rng_state(state["torch_rng"])
