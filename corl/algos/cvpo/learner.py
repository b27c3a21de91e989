"""CVPO (algorithms.md §3): critics → E-step (convex dual) → M-step (decoupled KL trust regions).

Reads in the paper's order:

1. :func:`stepwise_threshold` (re-exported from :mod:`corl.nn.losses`) — ``ε_c`` from κ (§3.4).
2. E-step pure functions: :func:`estep_dual` ``g(η, λ)``, :func:`solve_dual_adam`,
   :func:`solve_dual_slsqp`, :func:`estep_weights` ``q_ij`` (§3.5).
3. M-step pure functions: :func:`decoupled_kl` ``(KL_μ, KL_Σ)``, :func:`weighted_mle_loss` (§3.6).
4. :class:`CVPOLearner` — networks, optimisers, duals; one public ``update(batch)`` made of
   ``_update_critics`` (§3.3), ``_e_step``, ``_m_step``, then Polyak updates; ``begin_round()``
   is FSRL's ``pre_update_fn`` (behaviour snapshot, M-step duals reset).
5. :class:`CVPOTrainer` — the online schedule last: fixed-length episodes collected into a
   FIFO replay buffer, ``episodes_per_round`` episodes per round, then
   ``update_per_step × steps`` (or the original ``rerun × steps // batch``) updates.
   It implements :class:`~corl.algos.online.collector.OnlineAgent`, so
   :func:`~corl.algos.online.collector.train_online` runs it.

Randomness: E-step samples and next-action samples use torch's global RNG; the trainer's
``state_dict`` stores the torch RNG state and its numpy generator so a resume is exact.
"""

from __future__ import annotations

import collections
import copy
import math
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from corl.algos.cvpo.config import CVPOConfig
from corl.data.replay import TensorReplayBuffer
from corl.nn.critics import EnsembleQ, soft_update
from corl.nn.losses import stepwise_threshold
from corl.nn.policies import CholeskyGaussianPolicy, DiagGaussianPolicy

__all__ = [
    "stepwise_threshold",
    "estep_dual",
    "solve_dual_adam",
    "solve_dual_slsqp",
    "estep_weights",
    "decoupled_kl",
    "weighted_mle_loss",
    "CVPOLearner",
    "CVPOTrainer",
]

DUAL_MIN = 1e-6


# ------------------------------------------------------------------------------ 2. E-step
def _as_constraints(c: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost values as ``(m, K, N)`` and λ as ``(m,)`` (one constraint when ``c`` is ``(K, N)``)."""
    if c.dim() == 2:
        c = c.unsqueeze(0)
    return c, lam.reshape(-1)


def estep_dual(
    eta: torch.Tensor, lam: torch.Tensor, q: torch.Tensor, c: torch.Tensor, eps: float, eps_c: float | torch.Tensor
) -> torch.Tensor:
    """``g(η, λ) = η ε + λ·ε_c + η mean_j [logsumexp_i((Q_ij − λ·C_ij)/η) − log N]``.

    ``q``: ``(K, N)`` reward values; ``c``: ``(K, N)`` or ``(m, K, N)`` cost values; ``λ``: scalar
    or ``(m,)``; ``ε_c`` scalar or ``(m,)``. Logsumexp is the max-stabilised form of §3.5.
    """
    c, lam = _as_constraints(c, lam)
    eps_c = torch.as_tensor(eps_c, dtype=q.dtype, device=q.device).reshape(-1)
    adv = q - (lam[:, None, None] * c).sum(0)
    n = q.shape[-1]
    lse = torch.logsumexp(adv / eta, dim=-1) - math.log(n)
    return eta * eps + (lam * eps_c).sum() + eta * lse.mean()


def solve_dual_adam(
    duals: nn.Parameter,
    optimizer: torch.optim.Optimizer,
    q: torch.Tensor,
    c: torch.Tensor,
    eps: float,
    eps_c: float | torch.Tensor,
    iters: int = 1,
    dual_max: float = 20.0,
) -> float:
    """FSRL's solver: ``iters`` Adam steps on ``g`` over ``duals = [η, λ_1..λ_m]``, then clamp.

    Returns the last dual value ``g``. ``q``/``c`` are treated as constants.
    """
    q, c = q.detach(), c.detach()
    value = float("nan")
    for _ in range(iters):
        loss = estep_dual(duals[0], duals[1:], q, c, eps, eps_c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            duals.clamp_(DUAL_MIN, dual_max)
        value = float(loss.detach())
    return value


def solve_dual_slsqp(
    x0: np.ndarray,
    q: torch.Tensor,
    c: torch.Tensor,
    eps: float,
    eps_c: float | torch.Tensor,
    dual_max: float = 1e5,
    maxiter: int = 10,
    tol: float = 1e-3,
    lambda_max: float | None = None,
) -> tuple[np.ndarray, float]:
    """The original solver: SciPy SLSQP on ``g`` (float64, exact gradient), bounds ``[1e-6, dual_max]``
    (``lambda_max``, when given, bounds the cost multipliers instead).

    ``x0 = [η, λ_1..λ_m]`` is the warm start (the previous solution). Returns ``(x*, g(x*))``.

    SLSQP's ``ftol`` is absolute in both the objective and (through its unit initial Hessian)
    the variables, so on the raw problem its progress depends on the scale of ``Q``: with
    small reward values ``g(η) ≈ η ε`` is nearly flat far from the optimum and SLSQP declares
    convergence at the warm start. The solver therefore works on an equivalent normalised
    problem with the same minimiser:

    * per-state centring ``Q_ij − mean_i Q_ij`` shifts ``g`` by a constant; centring the costs
      ``C_ij − d_j`` is exact once ``ε_c`` becomes ``ε_c − mean_j d_j``;
    * dividing ``Q`` by its spread ``s_q`` and each cost row by ``s_c`` gives
      ``g(η, λ) = s_q g'(η/s_q, λ s_c/s_q)`` with ``Q' = Q/s_q``, ``C' = C/s_c``, ``ε_c' = (ε_c − mean_j d_j)/s_c``;
    * ``η'`` is optimised as ``log η'`` (the optimum spans decades; λ' stays linear so its
      bound at 0 is reachable);
    * the warm start is kept unless a point of a coarse log-grid over ``η'`` (at the warm-start
      λ' and at λ' = its lower bound) has a lower dual value; SLSQP then starts from that point.

    ``tol`` is then relative to the spread of ``Q`` (``g'`` is ``O(1)``).
    """
    from scipy.optimize import minimize

    q64 = q.detach().double().cpu()
    c64, _ = _as_constraints(c.detach().double().cpu(), torch.zeros(1))
    m = c64.shape[0]
    eps_c64 = torch.as_tensor(eps_c, dtype=torch.float64).reshape(-1).expand(m)
    upper = np.full(1 + m, float(dual_max))
    if lambda_max is not None:
        upper[1:] = float(lambda_max)
    x0 = np.clip(np.asarray(x0, dtype=np.float64).reshape(-1), DUAL_MIN, upper)

    def raw(x: np.ndarray) -> float:
        xt = torch.as_tensor(x, dtype=torch.float64)
        return float(estep_dual(xt[0], xt[1:], q64, c64, eps, eps_c64))

    # ---- normalised problem
    qn = q64 - q64.mean(-1, keepdim=True)
    s_q = float(qn.std()) if qn.numel() > 1 else 0.0
    s_q = s_q if s_q > 1e-12 else 1.0
    d = c64.mean(-1, keepdim=True)  # (m, K, 1)
    cn = c64 - d
    s_c = cn.reshape(m, -1).std(-1) if cn[0].numel() > 1 else torch.zeros(m, dtype=torch.float64)
    s_c = torch.where(s_c > 1e-6 * s_q, s_c, torch.full_like(s_c, s_q))
    qn = qn / s_q
    cn = cn / s_c[:, None, None]
    eps_cn = (eps_c64 - d.reshape(m, -1).mean(-1)) / s_c
    lam_scale = (s_c / s_q).numpy()  # λ' = λ s_c / s_q
    lo = np.concatenate([[math.log(DUAL_MIN / s_q)], DUAL_MIN * lam_scale])
    hi = np.concatenate([[math.log(upper[0] / s_q)], upper[1:] * lam_scale])

    def to_norm(x: np.ndarray) -> np.ndarray:
        return np.clip(np.concatenate([[math.log(x[0] / s_q)], x[1:] * lam_scale]), lo, hi)

    def from_norm(z: np.ndarray) -> np.ndarray:
        return np.clip(np.concatenate([[math.exp(z[0]) * s_q], z[1:] / lam_scale]), DUAL_MIN, upper)

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        g = estep_dual(zt[0].exp(), zt[1:], qn, cn, eps, eps_cn)
        (grad,) = torch.autograd.grad(g, zt)
        return float(g.detach()), grad.numpy()

    z0 = to_norm(x0)
    best, best_val = z0, fun(z0)[0]
    with torch.no_grad():  # coarse log-grid over η' at the warm-start λ' and at λ' = lower bound
        etas = torch.exp(
            torch.linspace(max(lo[0], math.log(1e-4)), min(hi[0], math.log(1e4)), 25, dtype=torch.float64)
        )[:, None]
        for lam_n in (z0[1:], lo[1:]):
            lam_t = torch.as_tensor(lam_n, dtype=torch.float64)
            adv = qn - (lam_t[:, None, None] * cn).sum(0)
            lse = torch.logsumexp(adv.unsqueeze(0) / etas[..., None], dim=-1) - math.log(adv.shape[-1])
            vals = etas[:, 0] * eps + (lam_t * eps_cn).sum() + etas[:, 0] * lse.mean(-1)
            i = int(torch.argmin(vals))
            if float(vals[i]) < best_val:
                best, best_val = np.concatenate([[math.log(float(etas[i, 0]))], lam_n]), float(vals[i])
    res = minimize(
        fun,
        best,
        jac=True,
        method="SLSQP",
        bounds=list(zip(lo, hi)),
        tol=tol,
        options={"maxiter": maxiter, "ftol": tol},
    )
    z = res.x if fun(res.x)[0] <= best_val else best
    x = from_norm(z)
    return x, raw(x)


def estep_weights(
    q: torch.Tensor, c: torch.Tensor, eta: torch.Tensor | float, lam: torch.Tensor | float
) -> torch.Tensor:
    """``q_ij = softmax_i((Q_ij − λ·C_ij)/η)``: ``(K, N)``, each row sums to one (no gradient)."""
    q = q.detach()
    c, lam_t = _as_constraints(c.detach(), torch.as_tensor(lam, dtype=q.dtype, device=q.device))
    adv = q - (lam_t[:, None, None] * c).sum(0)
    return torch.softmax(adv / torch.as_tensor(eta, dtype=q.dtype, device=q.device), dim=-1)


# ------------------------------------------------------------------------------ 3. M-step
def decoupled_kl(
    make_dist: Callable, mean_b: torch.Tensor, scale_b: torch.Tensor, mean_t: torch.Tensor, scale_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``KL_μ = mean_j KL(N(μ_b,Σ_b) ‖ N(μ_θ,Σ_b))`` and ``KL_Σ = mean_j KL(N(μ_b,Σ_b) ‖ N(μ_b,Σ_θ))``.

    For a diagonal Gaussian these are ``Σ_d ½(μ_b−μ_θ)²/σ_b²`` and
    ``Σ_d ½(log σ_θ²/σ_b² + σ_b²/σ_θ² − 1)``; for a full one ``½ Δμᵀ Σ_b⁻¹ Δμ`` and
    ``½[tr(Σ_θ⁻¹Σ_b) − n + log det Σ_θ/det Σ_b]``.
    """
    old = make_dist(mean_b, scale_b)
    kl_mu = torch.distributions.kl_divergence(old, make_dist(mean_t, scale_b)).mean()
    kl_sigma = torch.distributions.kl_divergence(old, make_dist(mean_b, scale_t)).mean()
    return kl_mu, kl_sigma


def weighted_mle_loss(
    make_dist: Callable,
    mean_b: torch.Tensor,
    scale_b: torch.Tensor,
    mean_t: torch.Tensor,
    scale_t: torch.Tensor,
    actions: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """``L_MLE = − mean_ij q_ij [log N(a_ij; μ_θ, Σ_b) + log N(a_ij; μ_b, Σ_θ)]``.

    ``actions``: ``(N, K, A)``; ``weights``: ``(K, N)``. The mean over the ``N×K`` grid (not a sum
    over ``i``) is the released codes' convention (§3.6).
    """
    logp = make_dist(mean_t, scale_b).log_prob(actions) + make_dist(mean_b, scale_t).log_prob(actions)  # (N, K)
    return -(weights.t() * logp).mean()


# ------------------------------------------------------------------------------ 4. learner
class CVPOLearner:
    """Networks, optimisers and duals of CVPO; ``update(batch)`` is one gradient step (§3.6 order)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: CVPOConfig | None = None,
        act_low=None,
        act_high=None,
        horizon: int = 300,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = cfg = config or CVPOConfig()
        self.device = torch.device(device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.horizon = int(cfg.horizon or horizon)
        if cfg.policy == "diag":
            self.actor: nn.Module = DiagGaussianPolicy(
                obs_dim,
                act_dim,
                cfg.hidden,
                cfg.activation,
                act_low,
                act_high,
                state_dependent_std=cfg.state_dependent_std,
                bounded_mean=True,
            )
        elif cfg.policy == "cholesky":
            self.actor = CholeskyGaussianPolicy(obs_dim, act_dim, cfg.hidden, cfg.activation, act_low, act_high)
        else:
            raise ValueError(f"policy must be 'diag' or 'cholesky', got {cfg.policy!r}")
        self.actor.to(self.device)
        self.behaviour = copy.deepcopy(self.actor).requires_grad_(False)  # b(·|s): snapshot or Polyak target
        self.critic = EnsembleQ(obs_dim, act_dim, cfg.num_q, cfg.hidden, cfg.activation).to(self.device)
        self.cost_critic = EnsembleQ(obs_dim, act_dim, cfg.num_qc, cfg.hidden, cfg.activation).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.cost_critic_target = copy.deepcopy(self.cost_critic).requires_grad_(False)
        # foreach: one fused op per Adam stage over all parameters (bit-identical to the per-tensor loop)
        self.critic_optimizer = torch.optim.Adam(
            list(self.critic.parameters()) + list(self.cost_critic.parameters()), lr=cfg.critic_lr, foreach=True
        )
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, foreach=True)
        # E-step duals [η, λ]: a parameter for Adam; SLSQP reads/writes the same tensor as warm start
        self.estep_duals = nn.Parameter(torch.full((2,), cfg.estep_dual_init, device=self.device))
        self.estep_optimizer = torch.optim.Adam([self.estep_duals], lr=cfg.estep_dual_lr)
        # M-step duals [α_μ, α_Σ]
        self.mstep_duals = nn.Parameter(torch.zeros(2, device=self.device))
        self.mstep_optimizer = torch.optim.Adam([self.mstep_duals], lr=cfg.mstep_dual_lr)
        self.total_steps = 0
        self.rounds = 0
        self.cost_threshold = cfg.threshold(self.horizon, 0)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.actor.sample(obs.to(self.device), deterministic)[0]

    def begin_round(self) -> None:
        """Start of an update round (FSRL ``pre_update_fn``): snapshot ``b ← π``, reset M-step duals."""
        cfg = self.config
        if cfg.behaviour == "snapshot":
            self.behaviour.load_state_dict(self.actor.state_dict())
        if cfg.mstep_dual_mode == "adam":
            with torch.no_grad():
                self.mstep_duals.zero_()
            self.mstep_optimizer = torch.optim.Adam([self.mstep_duals], lr=cfg.mstep_dual_lr)
        self.cost_threshold = cfg.threshold(self.horizon, self.rounds)
        self.rounds += 1

    # ------------------------------------------------------------------ §3.3 critics
    @torch.no_grad()
    def _critic_targets(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``y_r = r + γ(1−d) min_j Q̄_r,j(s',a')``, ``y_c = c + γ[(1−d)] Q̄_c(s',a')``, ``a' ~ π(·|s')``.

        With n-step rows (``batch["discounts"] = γ^m``, ``r``/``c`` the discounted m-step sums)
        ``γ`` becomes ``γ^m``.
        """
        cfg = self.config
        next_obs = batch["next_observations"]
        next_act = self.actor.sample(next_obs)[0]
        not_done = 1.0 - batch["terminals"].float()
        discount = batch["discounts"] if "discounts" in batch else cfg.gamma  # γ^m for n-step rows
        y_r = batch["rewards"] + discount * not_done * self.critic_target.reduced(next_obs, next_act, "min")
        mask = not_done if cfg.cost_terminal_mask else 1.0
        y_c = batch["costs"] + discount * mask * self.cost_critic_target.reduced(next_obs, next_act, "mean")
        return y_r, y_c

    def _update_critics(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """``L_Qr + L_Qc`` (each a sum over members of the MSE), one Adam step."""
        y_r, y_c = self._critic_targets(batch)
        q = self.critic(batch["observations"], batch["actions"])  # (num_q, B)
        qc = self.cost_critic(batch["observations"], batch["actions"])  # (num_qc, B)
        loss_q = (q - y_r).pow(2).mean(1).sum()
        loss_qc = (qc - y_c).pow(2).mean(1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        (loss_q + loss_qc).backward()
        self.critic_optimizer.step()
        return {
            "loss_q": float(loss_q.detach()),
            "loss_qc": float(loss_qc.detach()),
            "q": float(q.detach().mean()),
            "qc": float(qc.detach().mean()),
        }

    # ------------------------------------------------------------------ §3.5 E-step
    @torch.no_grad()
    def _sample_and_evaluate(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``a_ij ~ b(·|s_j)`` ``(N, K, A)``, ``Q_ij`` and ``C_ij`` ``(K, N)``."""
        cfg = self.config
        n, k = cfg.sample_action_num, obs.shape[0]
        actions = self.behaviour.distribution(obs).sample((n,))  # (N, K, A)
        flat_obs = obs.unsqueeze(0).expand(n, -1, -1).reshape(n * k, -1)
        flat_act = actions.reshape(n * k, -1)
        critic = self.critic if cfg.estep_critic == "current" else self.critic_target
        cost_critic = self.cost_critic if cfg.estep_critic == "current" else self.cost_critic_target
        q = critic.reduced(flat_obs, flat_act, "min").reshape(n, k).t()
        c = cost_critic.reduced(flat_obs, flat_act, "mean").reshape(n, k).t()
        return actions, q, c

    def _e_step(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Solve the dual for ``(η, λ)``, return the sampled actions and the weights ``q_ij``."""
        cfg = self.config
        actions, q, c = self._sample_and_evaluate(obs)
        if cfg.estep_solver == "adam":
            g = solve_dual_adam(
                self.estep_duals,
                self.estep_optimizer,
                q,
                c,
                cfg.estep_kl,
                self.cost_threshold,
                cfg.estep_iter_num,
                cfg.estep_dual_max,
            )
        elif cfg.estep_solver == "slsqp":
            x, g = solve_dual_slsqp(
                self.estep_duals.detach().cpu().double().numpy(),
                q,
                c,
                cfg.estep_kl,
                self.cost_threshold,
                cfg.slsqp_dual_max,
                cfg.slsqp_maxiter,
                cfg.slsqp_tol,
                cfg.slsqp_lambda_max,
            )
            with torch.no_grad():
                self.estep_duals.copy_(torch.as_tensor(x, dtype=torch.float32))
        else:
            raise ValueError(f"estep_solver must be 'adam' or 'slsqp', got {cfg.estep_solver!r}")
        eta, lam = self.estep_duals.detach()[0], self.estep_duals.detach()[1:]
        weights = estep_weights(q, c, eta, lam)
        ess = (1.0 / weights.pow(2).sum(-1)).mean()
        logs = {
            "eta": float(eta),
            "lambda": float(lam[0]),
            "estep_dual": g,
            "qc_sampled": float(c.mean()),
            "cost_threshold": float(self.cost_threshold),
            "weights_ess": float(ess),
        }
        return actions, weights, logs

    # ------------------------------------------------------------------ §3.6 M-step
    def _m_step(self, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
        """``mstep_iter_num`` Adam steps on ``L_MLE + α_μ(KL_μ − ε_μ) + α_Σ(KL_Σ − ε_Σ)``."""
        cfg = self.config
        make = self.actor.make_distribution
        with torch.no_grad():
            mean_b, scale_b = self.behaviour.params(obs)
        eps_kl = torch.tensor([cfg.mstep_kl_mu, cfg.mstep_kl_std], device=self.device)
        logs: dict[str, float] = {}
        for _ in range(cfg.mstep_iter_num):
            mean_t, scale_t = self.actor.params(obs)
            loss_mle = weighted_mle_loss(make, mean_b, scale_b, mean_t, scale_t, actions, weights)
            kl_mu, kl_sigma = decoupled_kl(make, mean_b, scale_b, mean_t, scale_t)
            kl = torch.stack([kl_mu, kl_sigma])
            alpha = self._update_mstep_duals(eps_kl - kl.detach())
            loss = loss_mle + (alpha * (kl - eps_kl)).sum()
            self.actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.actor_grad_clip is not None:
                nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.actor_grad_clip)
            self.actor_optimizer.step()
            logs = {
                "loss_mle": float(loss_mle.detach()),
                "kl_mu": float(kl_mu.detach()),
                "kl_sigma": float(kl_sigma.detach()),
                "alpha_mu": float(alpha[0]),
                "alpha_sigma": float(alpha[1]),
            }
        return logs

    @torch.no_grad()
    def _update_mstep_duals(self, slack: torch.Tensor) -> torch.Tensor:
        """One dual step with ``slack = ε − KL``; returns the multipliers to use (detached)."""
        cfg = self.config
        if cfg.mstep_dual_mode == "adam":
            # the gradient of (α · slack).sum() in α is slack itself: set it, no autograd graph
            self.mstep_duals.grad = slack.detach().clone()
            self.mstep_optimizer.step()
            self.mstep_duals.clamp_(0.0, cfg.mstep_dual_max)
        elif cfg.mstep_dual_mode == "projected":
            steps = torch.tensor([cfg.mstep_step_mu, cfg.mstep_step_sigma], device=self.device)
            caps = torch.tensor([cfg.mstep_alpha_mu_max, cfg.mstep_alpha_sigma_max], device=self.device)
            self.mstep_duals.copy_(torch.minimum((self.mstep_duals - steps * slack).clamp_min(0.0), caps))
        else:
            raise ValueError(f"mstep_dual_mode must be 'adam' or 'projected', got {cfg.mstep_dual_mode!r}")
        return self.mstep_duals.detach().clone()

    # ------------------------------------------------------------------ one update
    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """critics → E-step → M-step → Polyak (critic targets; behaviour too if it is a target)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        logs = self._update_critics(batch)
        actions, weights, e_logs = self._e_step(batch["observations"])
        logs.update(e_logs)
        logs.update(self._m_step(batch["observations"], actions, weights))
        soft_update(self.critic_target, self.critic, self.config.tau)
        soft_update(self.cost_critic_target, self.cost_critic, self.config.tau)
        if self.config.behaviour == "target":
            tau_b = self.config.behaviour_tau if self.config.behaviour_tau is not None else self.config.tau
            soft_update(self.behaviour, self.actor, tau_b)
        self.total_steps += 1
        return logs

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "behaviour": self.behaviour.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "cost_critic": self.cost_critic.state_dict(),
            "cost_critic_target": self.cost_critic_target.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "estep_duals": self.estep_duals.detach().clone(),
            "estep_optimizer": self.estep_optimizer.state_dict(),
            "mstep_duals": self.mstep_duals.detach().clone(),
            "mstep_optimizer": self.mstep_optimizer.state_dict(),
            "total_steps": self.total_steps,
            "rounds": self.rounds,
            "cost_threshold": self.cost_threshold,
        }

    def load_state_dict(self, state: Mapping) -> None:
        for name in ("actor", "behaviour", "critic", "critic_target", "cost_critic", "cost_critic_target"):
            getattr(self, name).load_state_dict(state[name])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        with torch.no_grad():
            self.estep_duals.copy_(state["estep_duals"])
            self.mstep_duals.copy_(state["mstep_duals"])
        self.estep_optimizer.load_state_dict(state["estep_optimizer"])
        self.mstep_optimizer = torch.optim.Adam([self.mstep_duals], lr=self.config.mstep_dual_lr)
        self.mstep_optimizer.load_state_dict(state["mstep_optimizer"])
        self.total_steps, self.rounds = int(state["total_steps"]), int(state["rounds"])
        self.cost_threshold = float(state["cost_threshold"])


# ------------------------------------------------------------------------------ 5. online schedule
class CVPOTrainer:
    """CVPO's online schedule (§3.7) as an :class:`~corl.algos.online.collector.OnlineAgent`.

    ``act`` samples from the current policy (uniform random during ``warmup_steps``);
    ``observe`` stores each vector step in a FIFO :class:`~corl.data.replay.TensorReplayBuffer`
    (the policy's unclipped actions); when ``episodes_per_round`` episodes have finished since
    the last round it calls ``begin_round()`` and runs the round's updates on uniform batches.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: CVPOConfig | None = None,
        act_low=None,
        act_high=None,
        horizon: int = 300,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = cfg = config or CVPOConfig()
        self.device = torch.device(device)
        self.learner = CVPOLearner(obs_dim, act_dim, cfg, act_low, act_high, horizon, device)
        fields = {
            "observations": ((obs_dim,), torch.float32),
            "actions": ((act_dim,), torch.float32),
            "rewards": ((), torch.float32),
            "costs": ((), torch.float32),
            "next_observations": ((obs_dim,), torch.float32),
            "terminals": ((), torch.float32),
            "discounts": ((), torch.float32),
        }  # γ^m of each (n-step) row
        self.buffer = TensorReplayBuffer(cfg.buffer_size, fields, self.device)
        self._pending: list[collections.deque] = []
        self.act_low = np.asarray(act_low if act_low is not None else [-1.0] * act_dim, dtype=np.float32)
        self.act_high = np.asarray(act_high if act_high is not None else [1.0] * act_dim, dtype=np.float32)
        self.rng = np.random.default_rng(cfg.seed)
        self.env_steps = 0
        self.steps_since_round = 0
        self.episodes_since_round = 0
        self.warmed_up = cfg.warmup_steps <= 0

    @classmethod
    def for_task(cls, task, config: CVPOConfig | None = None, device: torch.device | str = "cpu") -> "CVPOTrainer":
        from corl.envs.factory import make_env
        from corl.tasks import get_task

        spec = get_task(task) if isinstance(task, str) else task
        env = make_env(spec)
        low, high = env.action_space.low, env.action_space.high
        env.close()
        return cls(spec.obs_dim, spec.act_dim, config, low, high, spec.max_episode_steps, device)

    @property
    def training_step(self) -> int:
        return self.learner.total_steps

    @property
    def fixed_horizon(self) -> bool:
        """:func:`~corl.algos.online.collector.train_online` wraps the envs in ``FixedHorizon`` when True."""
        return self.config.fixed_horizon

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        if self.env_steps < self.config.warmup_steps:
            a = self.rng.uniform(self.act_low, self.act_high, size=(obs.shape[0], len(self.act_low)))
            return torch.as_tensor(a, dtype=torch.float32)
        return self.learner.act(obs).cpu()

    def observe(self, step) -> dict[str, float] | None:
        cfg = self.config
        n = len(step.rewards)
        terminals = np.asarray(step.terminals, dtype=bool)
        if cfg.reward_terminal_on_early_termination and "early_termination" in step.infos:
            # FixedHorizon hides true terminations from the episode flags; the reward critic
            # still stops bootstrapping there (the original's d = 1 at goal_met, §3.3)
            mask = step.infos.get("_early_termination", np.ones(n, dtype=bool))
            terminals = terminals | (np.asarray(step.infos["early_termination"], dtype=bool) & mask)
        self._store(step, terminals)
        self.env_steps += n
        self.steps_since_round += n
        self.episodes_since_round += len(step.finished)
        if not self.warmed_up and self.env_steps >= cfg.warmup_steps:
            self.warmed_up = True
            self.steps_since_round = self.episodes_since_round = 0
            return self.run_updates(cfg.warmup_steps // 2)
        if self.warmed_up and self.episodes_since_round >= cfg.episodes_per_round:
            if cfg.episode_rerun_num is not None:
                n_updates = cfg.episode_rerun_num * self.steps_since_round // cfg.batch_size
            else:
                n_updates = int(round(cfg.update_per_step * self.steps_since_round))
            self.steps_since_round = self.episodes_since_round = 0
            return self.run_updates(n_updates)
        return None

    def _store(self, step, terminals: np.ndarray) -> None:
        """Append ``n_step``-step transitions (FSRL's n-step returns; ``n_step = 1``: plain rows).

        Per env a queue of the last rows; a full queue emits its oldest row as
        ``(s_t, a_t, Σ_k γ^k r_{t+k}, Σ_k γ^k c_{t+k}, s_{t+m}, d_{t+m-1}, γ^m)``. An episode end
        or a reward terminal flushes the queue (shorter windows), so no window crosses either.
        """
        cfg = self.config
        n = len(step.rewards)
        if len(self._pending) != n:
            self._pending = [collections.deque() for _ in range(n)]
        dones = np.asarray(step.dones, dtype=bool)
        out: list[tuple] = []
        for j in range(n):
            queue = self._pending[j]
            queue.append(
                (
                    torch.as_tensor(step.observations[j]),
                    torch.as_tensor(step.actions[j]),
                    float(step.rewards[j]),
                    float(step.costs[j]),
                    torch.as_tensor(step.next_observations[j]),
                    float(terminals[j]),
                )
            )
            flush = bool(dones[j] or terminals[j])
            while queue and (flush or len(queue) >= cfg.n_step):
                rows = list(queue)
                ret_r = sum(cfg.gamma**k * row[2] for k, row in enumerate(rows))
                ret_c = sum(cfg.gamma**k * row[3] for k, row in enumerate(rows))
                out.append((rows[0][0], rows[0][1], ret_r, ret_c, rows[-1][4], rows[-1][5], cfg.gamma ** len(rows)))
                queue.popleft()
        if out:
            cols = list(zip(*out))
            self.buffer.add(
                {
                    "observations": torch.stack(cols[0]),
                    "actions": torch.stack(cols[1]),
                    "rewards": torch.tensor(cols[2]),
                    "costs": torch.tensor(cols[3]),
                    "next_observations": torch.stack(cols[4]),
                    "terminals": torch.tensor(cols[5]),
                    "discounts": torch.tensor(cols[6]),
                }
            )

    def run_updates(self, n_updates: int) -> dict[str, float] | None:
        """One round: ``begin_round()`` then ``n_updates`` learner updates; the mean of their logs."""
        if n_updates <= 0 or len(self.buffer) == 0:
            return None
        self.learner.begin_round()
        totals: dict[str, float] = {}
        for _ in range(n_updates):
            logs = self.learner.update(self.buffer.sample(self.config.batch_size))
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + v
        out = {k: v / n_updates for k, v in totals.items()}
        out["updates"] = float(n_updates)
        return out

    def cut_episodes(self, open_envs: np.ndarray, last_obs: np.ndarray) -> None:
        """The open episodes will not continue (a resume restarts them): drop their n-step windows."""
        self._pending = []

    def state_dict(self) -> dict:
        """Learner, replay buffer, schedule counters and RNG states.

        Like ``nn.Module.state_dict`` the tensors share storage with the live objects: save it
        (``torch.save``; loads with ``weights_only=True``) or ``copy.deepcopy`` it before training on.
        """
        return {
            "learner": self.learner.state_dict(),
            "buffer": self.buffer.state_dict(),
            "env_steps": self.env_steps,
            "steps_since_round": self.steps_since_round,
            "episodes_since_round": self.episodes_since_round,
            "warmed_up": self.warmed_up,
            "pending": [[list(row) for row in q] for q in self._pending],
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore everything, including the global torch RNG state (exact resume)."""
        self.learner.load_state_dict(state["learner"])
        self.buffer.load_state_dict(state["buffer"])
        self.env_steps = int(state["env_steps"])
        self.steps_since_round = int(state["steps_since_round"])
        self.episodes_since_round = int(state["episodes_since_round"])
        self.warmed_up = bool(state["warmed_up"])
        self._pending = [collections.deque(tuple(row) for row in q) for q in state.get("pending", [])]
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
