"""MICE's hyper-parameters (algorithms.md §4.7, ``MICE.yaml``) with the method's equations.

Defects of the released code (§4.10) are fixed by default; each fix is a named option:

* ``beta_guard`` (1e-8): β is only corrected where ``|c^I_t|`` exceeds it (released: ``≠ 0``).
* ``correction_uses_reward_gamma`` (False): the bias-correction recursion discounts with the
  cost γ; True reproduces the released buffer's use of the reward γ.
* ``empty_cost_window`` (``"epoch_rate"``): when no episode has finished yet the episodic cost
  ``Ĵ_C`` (NaN in the released code) is estimated as the epoch's mean cost per step × T;
  ``"zero"`` uses 0.
* The observation normaliser is part of the state and the underestimation diagnostic is not
  computed on raw observations (§4.10-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class MICEConfig:
    """MICE (Gao et al., ICML 2025): CPO with an intrinsic-augmented cost constraint.

    Intrinsic cost (§4.3): ``c^I_t = ρ γ_c^{epoch} sqrt(Σ_{i≤k} ε_K/(max(δ_(i)/mean δ − ξ, 0) + ε_K))``
    over the ``k`` nearest memory embeddings of ``f(s_t)``. Cost value (§4.4): GAE on
    ``c_t + β_t c^I_t`` with the per-step bias correction ``β_t = β − η_β δ⁰_t / c^I_t``.

    CPO step (§4.5) with ``g = ∇E[ρ_θ A^R]``, ``b = ∇E[ρ_θ A^C]``, ``x = H⁻¹g``, ``p = H⁻¹b``,
    ``q = gᵀx``, ``r = gᵀp``, ``s = bᵀp`` and the constraint value
    ``c = (Ĵ_C − d) + mean Ĵ^I``; the dual ``(λ*, ν*)`` of
    ``max_Δ gᵀΔ s.t. c + bᵀΔ ≤ 0, ½ΔᵀHΔ ≤ δ_KL`` gives ``Δ = (x − ν* p)/λ*`` (feasible cases
    1-4) or the recovery step ``Δ = −sqrt(2δ_KL/s) p`` (case 0); a backtracking line search
    accepts the largest ``0.8^j Δ`` that keeps ``KL ≤ δ_KL``, does not raise the cost
    surrogate by more than ``max(−c, 0)`` and (feasible cases) improves the reward surrogate.

    Critics: ``update_iters`` passes of minibatch MSE to the GAE targets + ``critic_l2 Σ‖w‖²``.
    """

    # ---- constraint
    cost_limit: float = 25.0  # d
    cost_window: int = 100  # Ĵ_C: mean cost of the last finished training episodes
    empty_cost_window: Literal["epoch_rate", "zero"] = "epoch_rate"
    horizon: int | None = None  # T for the epoch-rate fallback; None: the task's
    # ---- networks
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    obs_normalize: bool = True
    # ---- returns
    gamma: float = 0.99
    cost_gamma: float = 0.99
    lam: float = 0.95
    lam_c: float = 0.95
    # ---- CPO
    base: Literal["cpo", "ppo_lag"] = "cpo"
    target_kl: float = 0.01
    cg_iters: int = 15
    cg_damping: float = 0.1
    line_search_steps: int = 20
    line_search_decay: float = 0.8
    # ---- PPO-Lagrangian base (an extension, not in the released MICE code; §4.5 "derived")
    ppo_clip: float = 0.2
    ppo_actor_lr: float = 3e-4
    lagrange_lr: float = 0.035
    lagrange_init: float = 0.001
    # ---- critics
    critic_lr: float = 1e-3
    update_iters: int = 10
    batch_size: int = 128
    critic_l2: float = 0.001
    max_grad_norm: float = 40.0
    # ---- schedule
    steps_per_epoch: int = 20_000  # summed over envs
    # ---- MICE
    intrinsic_factor: float = 5.0  # ρ (0: plain CPO)
    intrinsic_decay: float = 0.99  # γ_c per epoch
    k_knn: int = 10
    emb_dim: int = 8
    memory_capacity: int = 100
    kernel_xi: float = 0.008
    kernel_eps: float = 1e-4
    beta_init: float = 1.0
    beta_ema: float = 0.1
    beta_lr: float = 1e-3  # η_β (released: the critic's learning rate)
    beta_guard: float = 1e-8
    correction_uses_reward_gamma: bool = False
    seed: int = 0

    def __post_init__(self) -> None:  # errors where the value is set (a stage key, a script), not mid-run
        if self.base not in ("cpo", "ppo_lag"):
            raise ValueError(f"base must be 'cpo' or 'ppo_lag', got {self.base!r}")
        if self.empty_cost_window not in ("epoch_rate", "zero"):
            raise ValueError(f"empty_cost_window must be 'epoch_rate' or 'zero', got {self.empty_cost_window!r}")
        if (
            min(
                self.cost_window,
                self.cg_iters,
                self.line_search_steps,
                self.update_iters,
                self.batch_size,
                self.steps_per_epoch,
                self.k_knn,
                self.emb_dim,
                self.memory_capacity,
            )
            < 1
        ):
            raise ValueError(
                "cost_window, cg_iters, line_search_steps, update_iters, batch_size, steps_per_epoch, "
                "k_knn, emb_dim and memory_capacity must be >= 1"
            )
        for name in ("gamma", "cost_gamma", "lam", "lam_c", "intrinsic_decay", "line_search_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.target_kl <= 0 or self.intrinsic_factor < 0:
            raise ValueError("target_kl must be > 0 and intrinsic_factor >= 0")
