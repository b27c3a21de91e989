"""CVPO's hyper-parameters (algorithms.md §3.8) with the method's losses in the docstring.

Defaults follow FSRL's ``TrainCfg`` for Bullet tasks (diagonal Gaussian, Adam E-step dual,
duals re-initialised every round), the recommended implementation; every choice of the
original ``cvpo-safe-rl`` code is a named option and :func:`original_config` sets them all.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from corl.nn.losses import stepwise_threshold


@dataclass
class CVPOConfig:
    """Constrained Variational Policy Optimization (Liu et al., ICML 2022, arXiv 2201.11927).

    Critics (§3.3), ``a' ~ π(·|s')``::

        y_r = r + γ (1 − d) min_j Q̄_r,j(s', a')          L_Qr = Σ_j E (Q_r,j(s,a) − y_r)²
        y_c = c + γ [(1 − d) if cost_terminal_mask] Q̄_c(s', a')   L_Qc = E (Q_c(s,a) − y_c)²

    (``n_step = m > 1``: ``r``, ``c`` are the discounted m-step sums, ``s'`` is ``s_{t+m}``, ``γ`` is ``γ^m``.)

    Step-wise cost threshold (§3.4), ``T`` the fixed episode length::

        ε_c = κ (1 − γ^T) / ((1 − γ) T)

    E-step (§3.5): ``N`` actions ``a_ij ~ b(·|s_j)`` for ``K`` states, ``Q_ij``, ``C_ij``; the
    convex dual over ``η > 0, λ ≥ 0``::

        g(η, λ) = η ε + λ ε_c + η (1/K) Σ_j log (1/N) Σ_i exp((Q_ij − λ C_ij)/η)

    minimised by Adam (``estep_solver="adam"``) or SciPy SLSQP (``"slsqp"``); weights
    ``q_ij = softmax_i((Q_ij − λ C_ij)/η)``.

    M-step (§3.6), old ``(μ_b, Σ_b)``, new ``(μ_θ, Σ_θ)``, ``π_μ = N(μ_θ, Σ_b)``, ``π_Σ = N(μ_b, Σ_θ)``::

        L_MLE = − mean_ij q_ij [log π_μ(a_ij|s_j) + log π_Σ(a_ij|s_j)]
        KL_μ = mean_j KL(N(μ_b,Σ_b) ‖ N(μ_θ,Σ_b)),   KL_Σ = mean_j KL(N(μ_b,Σ_b) ‖ N(μ_b,Σ_θ))
        L_π = L_MLE + α_μ (KL_μ − ε_μ) + α_Σ (KL_Σ − ε_Σ)

    with the multipliers by Adam on ``α·sg(ε − KL)`` clipped to ``[0, mstep_dual_max]`` and
    reset every round (``mstep_dual_mode="adam"``, FSRL) or by projected descent
    ``α ← clip(α − s(ε − KL), 0, α_max)`` persisting across updates (``"projected"``, original).
    """

    # ---- episodes and the constraint
    cost_limit: float = 10.0  # κ, episodic
    horizon: int | None = None  # T; None: the task's episode length (episodes are fixed-length)
    cost_limit_start: float | None = None  # optional decay κ_k = κ_end + (κ_start − κ_end) e^{−5k/K}
    cost_decay_rounds: int = 0  # K (0: no decay)
    # ---- networks
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "relu"
    policy: Literal["diag", "cholesky"] = "diag"
    state_dependent_std: bool = True
    num_q: int = 2  # reward critics (min over them)
    num_qc: int = 1  # cost critics
    # ---- critics
    gamma: float = 0.97
    tau: float = 0.05  # Polyak rate of the critic targets (original: 0.005)
    critic_lr: float = 1e-3
    n_step: int = 1  # n-step returns for both critics (FSRL: 2 Bullet, 3 Safety-Gymnasium)
    cost_terminal_mask: bool = False  # the cost critic bootstraps through terminals (§3.11-2)
    estep_critic: Literal["current", "target"] = "current"  # FSRL: current; original: target
    # ---- E-step
    sample_action_num: int = 16  # N
    estep_kl: float = 0.02  # ε
    estep_solver: Literal["adam", "slsqp"] = "adam"
    estep_iter_num: int = 1  # Adam steps per update
    estep_dual_lr: float = 0.02
    estep_dual_init: float = 0.1  # η and λ start here (original 0.1)
    estep_dual_max: float = 20.0  # clamp for Adam; SLSQP bound is slsqp_dual_max
    slsqp_dual_max: float = 1e5
    # bound of λ alone (None: slsqp_dual_max bounds both); not an original option, a corl extension
    slsqp_lambda_max: float | None = field(default=None, metadata={"key": "if_set"})
    slsqp_maxiter: int = 10
    slsqp_tol: float = 1e-3  # ftol on the normalised dual (relative to the spread of Q, see solve_dual_slsqp)
    # ---- M-step
    mstep_iter_num: int = 1
    mstep_kl_mu: float = 0.005
    mstep_kl_std: float = 0.0005
    mstep_dual_mode: Literal["adam", "projected"] = "adam"
    mstep_dual_lr: float = 0.1  # Adam on the duals
    mstep_dual_max: float = 0.5  # adam mode clip
    mstep_step_mu: float = 1.0  # projected mode step sizes s_μ, s_Σ and caps
    mstep_step_sigma: float = 100.0
    mstep_alpha_mu_max: float = 0.1
    mstep_alpha_sigma_max: float = 10.0
    actor_lr: float = 5e-4
    actor_grad_clip: float | None = None  # original: 0.01
    behaviour: Literal["snapshot", "target"] = "snapshot"  # b = actor copied each round (FSRL) or Polyak target
    behaviour_tau: float | None = None  # Polyak rate of the "target" behaviour; None: tau (original: one polyak)
    # ---- schedule (used by CVPOTrainer)
    batch_size: int = 256
    buffer_size: int = 200_000
    episodes_per_round: int = 10  # episodes collected between update rounds
    update_per_step: float = 0.2  # updates per collected env step (FSRL)
    episode_rerun_num: int | None = None  # original: updates = rerun·steps // batch_size
    warmup_steps: int = 0  # random actions first, then warmup_steps // 2 updates
    fixed_horizon: bool = True  # wrap envs so every episode lasts exactly T steps
    reward_terminal_on_early_termination: bool = True  # d = 1 for Q_r where FixedHorizon hid a termination
    seed: int = 0

    def threshold(self, horizon: int, round_index: int = 0) -> float:
        """``ε_c`` for the (possibly decayed) episodic limit at update round ``round_index``."""
        return stepwise_threshold(self.cost_limit_at(round_index), self.gamma, horizon)

    def cost_limit_at(self, round_index: int) -> float:
        """κ_k = κ_end + (κ_start − κ_end) exp(−5k/K) (κ_end = ``cost_limit``); constant without decay."""
        if self.cost_limit_start is None or self.cost_decay_rounds <= 0:
            return self.cost_limit
        k = min(round_index, self.cost_decay_rounds)
        return self.cost_limit + (self.cost_limit_start - self.cost_limit) * math.exp(-5.0 * k / self.cost_decay_rounds)


def original_config(**overrides) -> CVPOConfig:
    """The original ``cvpo-safe-rl`` settings (``config_cvpo.yaml`` + the SafetyCarCircle override)."""
    base = dict(
        cost_limit=20.0,
        hidden=(256, 256),
        policy="cholesky",
        num_q=2,
        num_qc=1,
        gamma=0.99,
        tau=0.005,
        critic_lr=0.0015,
        estep_critic="target",
        sample_action_num=64,
        estep_kl=0.1,
        estep_solver="slsqp",
        mstep_iter_num=29,
        mstep_kl_mu=0.001,
        mstep_kl_std=0.001,
        mstep_dual_mode="projected",
        actor_lr=0.0064,
        actor_grad_clip=0.01,
        behaviour="target",
        batch_size=300,
        buffer_size=8000,
        episodes_per_round=20,
        episode_rerun_num=28,
        warmup_steps=2000,
    )
    base.update(overrides)
    return dataclasses.replace(CVPOConfig(), **base)
