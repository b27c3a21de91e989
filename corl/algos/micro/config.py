"""MICRO's hyper-parameters (algorithms.md §2.8) as dataclasses, with the paper's per-task presets.

Two configs, one per learner:

* :class:`DynamicsConfig` — the probabilistic ensemble (§2.2-2.3).
* :class:`MICROConfig` — rollouts, data mixing, the conservative target and SAC (§2.4-2.6);
  the dynamics half is the fitted model's own config (``GaussianEnsembleDynamics.config``).

Each validates itself (``__post_init__``), so a bad value fails where it is set, whether by a
pipeline stage (whose configs subclass these two) or by a script.

:func:`paper_config` / :func:`paper_dynamics_config` return the authors' setting for a D4RL
task (the table of §2.8) and a "never terminate, predict cost, no target clamp" setting for
DSRL/bullet tasks.

Defects of the released code (§2.11) are fixed by default; each fix is a named option whose
other value reproduces the released behaviour:

* ``MICROConfig.termination_two_sided_bound`` (True): hopper's "|s'[1:]| < 100" test is
  two-sided; False reproduces ``np.abs(s' < 100)``, under which large negative states never
  terminate.
* ``MICROConfig.target_clamp_min`` (0.0 for D4RL, None for DSRL): the released target is
  clamped at 0, valid only for non-negative-return tasks; None disables the clamp.
* ``MICROConfig.rollout_member_rows`` (True): each elite runs only on the rows it was picked
  for (same distribution, ~7x less work); False runs all members on every row and keeps
  one per row, as released.
* ``DynamicsConfig.max_epochs = None`` means "no cap" (the released assert rejects its own
  documented None default); snapshots are plain tensors, never optimiser parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from corl.errors import TaskError


@dataclass
class DynamicsConfig:
    """Probabilistic dynamics ensemble ``p_e(Δs, r[, c] | s, a) = N(μ_e, diag exp(logvar_e))``.

    Inputs ``x = (s, a)`` are standardised with the train split's mean/std (std < 1e-12 → 1);
    targets are ``y = (s' − s, r[, c])``. The log-variance is soft-bounded::

        logvar = max_logvar − softplus(max_logvar − raw);  logvar = min_logvar + softplus(logvar − min_logvar)

    Loss per mini-batch (bootstrapped rows per member), summed over members ``e``, averaged
    over batch and output dims::

        L = Σ_e mean[(μ_e − y)² · exp(−logvar_e)] + Σ_e mean[logvar_e]
            + Σ_l wd_l · ½‖W_l‖² + logvar_loss_coef · (Σ max_logvar − Σ min_logvar)

    After each epoch the hold-out MSE of the means is computed per member; a member whose
    MSE improved by more than ``improvement_threshold`` (relative) is snapshotted; training
    stops when no member improved for ``max_epochs_since_update`` epochs (or ``max_epochs``
    is reached); snapshots are restored and the ``num_elites`` lowest hold-out MSEs are the
    elites.
    """

    ensemble_size: int = 7
    num_elites: int = 5
    hidden: tuple[int, ...] = (200, 200, 200, 200)
    activation: str = "swish"
    weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)  # hidden layers + output
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    logvar_loss_coef: float = 0.01
    lr: float = 1e-3
    batch_size: int = 256
    holdout_ratio: float = 0.2
    max_holdout: int = 1000
    improvement_threshold: float = 0.01
    max_epochs_since_update: int = 5
    max_epochs: Optional[int] = None  # None: no cap (works, unlike the released assert)
    predict_cost: bool = False  # an extra output for the cost (DSRL tasks)
    normalize_targets: bool = False  # §2.3 standardises inputs only; True also standardises y

    def __post_init__(self) -> None:  # errors where the value is set, not deep in the model
        if len(self.weight_decays) != len(self.hidden) + 1:
            raise ValueError(
                f"weight_decays needs {len(self.hidden) + 1} values (one per hidden layer "
                f"plus the output layer), got {len(self.weight_decays)}"
            )
        if not 1 <= self.num_elites <= self.ensemble_size:
            raise ValueError(f"num_elites must be in [1, ensemble_size={self.ensemble_size}], got {self.num_elites}")
        if not 0.0 < self.holdout_ratio < 1.0 or self.max_holdout < 1:
            raise ValueError("holdout_ratio must be in (0, 1) and max_holdout >= 1")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1 (or absent: no cap), got {self.max_epochs}")


@dataclass
class MICROConfig:
    """MICRO: SAC on real + model data with a conservative (robust) Bellman target.

    Rollouts (§2.4): every ``rollout_freq`` updates, ``rollout_batch_size`` real start states
    are rolled ``rollout_length`` steps with the stochastic policy through a random elite per
    row (Gaussian noise on every output), stopping rows at model terminals; transitions go to
    a FIFO buffer of ``rollout_batch_size · rollout_length · model_retain_epochs`` rows.
    A batch has ``⌊batch_size · real_ratio⌋`` real rows, the rest model rows.

    Conservative target (§2.5), for a model row ``(s, a, r, s', d)`` with ``a' ~ π(·|s')``::

        ŝ'_{k,n} ~ N(s + μ_k^Δs(s,a), σ_k^Δs(s,a)²)   for elites k, samples n = 1..num_samples
        v̄_k = mean_n min_i Q̄_i(ŝ'_{k,n}, ã_{k,n}),  ã_{k,n} ~ π(·|ŝ'_{k,n})
        u(s,a) = mean_k v̄_k − min_k v̄_k  (≥ 0; 0 on real rows and when robust_target=False)
        y = clamp_{≥ target_clamp_min}( r + γ(1−d)[min_i Q̄_i(s', a') − α log π(a'|s') − λ u(s,a)] )

    SAC (§2.6)::

        L_Q = mean_{i,batch} (Q_i(s,a) − y)²
        L_π = mean[α log π(a_θ|s) − min_i Q_i(s, a_θ)]       (+ λ_c · Q_c(s, a_θ) when cost_limit is set)
        L_α = −mean[log α · sg(log π(a_θ|s) + H_target)],  α = clamp(exp log α, 0, 1)

    The actor's lr is cosine-annealed over ``lr_schedule_epochs`` epochs of
    ``steps_per_epoch`` updates. Optional cost-awareness (``cost_limit`` set): a cost critic
    with target ``c + γ(1−d)[Q̄_c(s',a') + λ u_c(s,a)]`` where ``u_c = max_k v̄^c_k − mean_k v̄^c_k``,
    and a Lagrange multiplier on ``mean Q_c(s, π(s))`` against the step-wise threshold
    ``κ(1−γ^T)/((1−γ)T)``.
    """

    # SAC
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    gamma: float = 0.99
    tau: float = 0.005
    auto_alpha: bool = True
    alpha_lr: float = 1e-4
    initial_log_alpha: float = 0.0  # auto-α starts at α = 1 (released code)
    alpha: float = 0.1  # fixed α when auto_alpha is False
    target_entropy: Optional[float] = None  # None: −|A|
    deterministic_backup: bool = False
    max_q_backup: bool = False
    max_q_backup_samples: int = 10
    # conservative target
    penalty_coef: float = 0.5  # λ
    num_samples: int = 10  # N next-state samples per elite
    robust_target: bool = True  # False: the plain (MBPO-style) target, for comparisons
    target_clamp_min: Optional[float] = 0.0  # released: 0.0 (D4RL); None: no clamp
    # rollouts and mixing
    rollout_freq: int = 1000
    rollout_batch_size: int = 50_000
    rollout_length: int = 5
    model_retain_epochs: int = 5
    real_ratio: float = 0.05
    batch_size: int = 256
    rollout_member_rows: bool = True  # False: all members on every row (released, ~7x work)
    termination_two_sided_bound: bool = True  # False: hopper's released one-sided bound
    drop_timeout_transitions: bool = False  # True: D4RL qlearning_dataset semantics
    # schedule
    epochs: int = 3000
    steps_per_epoch: int = 1000
    lr_schedule_epochs: Optional[int] = 3000  # None: constant actor lr
    # optional cost-awareness
    cost_limit: Optional[float] = None  # episodic κ; None: reward-only MICRO
    episode_length: int = 1000  # T for the step-wise threshold
    cost_critic_lr: float = 3e-4
    lagrange_lr: float = 1e-3
    lagrange_init: float = 0.0
    lagrange_upper_bound: Optional[float] = None
    cost_penalty_coef: Optional[float] = None  # λ for the cost target; None: penalty_coef

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError("epochs and steps_per_epoch must be >= 1")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        if (
            min(
                self.rollout_freq,
                self.rollout_batch_size,
                self.rollout_length,
                self.model_retain_epochs,
                self.batch_size,
                self.num_samples,
            )
            < 1
        ):
            raise ValueError(
                "rollout_freq, rollout_batch_size, rollout_length, model_retain_epochs, "
                "batch_size and num_samples must be >= 1"
            )
        if self.penalty_coef < 0:
            raise ValueError(f"penalty_coef must be >= 0, got {self.penalty_coef}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def model_buffer_capacity(self) -> int:
        return self.rollout_batch_size * self.rollout_length * self.model_retain_epochs

    @property
    def real_batch_size(self) -> int:
        return int(self.batch_size * self.real_ratio)  # floored, as released (12 at 0.05)


#: The §2.8 table: per D4RL task, overrides of MICROConfig ("dyn_*" go to DynamicsConfig).
PAPER_PRESETS: dict[str, dict] = {
    "halfcheetah-medium-v2": dict(rollout_length=5, penalty_coef=0.5, real_ratio=0.05),
    "halfcheetah-medium-replay-v2": dict(rollout_length=5, penalty_coef=0.5, real_ratio=0.05),
    "halfcheetah-medium-expert-v2": dict(
        rollout_length=5, penalty_coef=0.5, real_ratio=0.5, deterministic_backup=True, dyn_max_epochs_since_update=30
    ),
    "hopper-medium-v2": dict(
        rollout_length=5, penalty_coef=1.0, real_ratio=0.05, auto_alpha=False, alpha=0.1, dyn_max_epochs_since_update=10
    ),
    "hopper-medium-replay-v2": dict(rollout_length=5, penalty_coef=0.1, real_ratio=0.5, auto_alpha=False, alpha=0.1),
    "hopper-medium-expert-v2": dict(
        rollout_length=10, penalty_coef=1.0, real_ratio=0.05, deterministic_backup=True, dyn_max_epochs_since_update=30
    ),
    "walker2d-medium-v2": dict(
        rollout_length=5, penalty_coef=0.5, real_ratio=0.05, dyn_max_epochs=30, dyn_max_epochs_since_update=30
    ),
    "walker2d-medium-replay-v2": dict(rollout_length=1, penalty_coef=0.2, real_ratio=0.5),
    "walker2d-medium-expert-v2": dict(rollout_length=1, penalty_coef=1.0, real_ratio=0.05),
}

#: DSRL / bullet tasks (no paper setting exists): cost predicted, no target clamp, and the
#: cost-aware variant switched on by giving a cost_limit.
SAFETY_DEFAULTS: dict = dict(target_clamp_min=None, dyn_predict_cost=True)


def _split(overrides: dict) -> tuple[dict, dict]:
    """(MICROConfig keys, DynamicsConfig keys): ``dyn_<name>`` keys go to the dynamics."""
    dyn = {k[4:]: v for k, v in overrides.items() if k.startswith("dyn_")}
    top = {k: v for k, v in overrides.items() if not k.startswith("dyn_")}
    unknown = set(top) - {f.name for f in dataclasses.fields(MICROConfig)}
    unknown |= {f"dyn_{k}" for k in set(dyn) - {f.name for f in dataclasses.fields(DynamicsConfig)}}
    if unknown:
        raise ValueError(f"unknown MICRO config keys: {sorted(unknown)}")
    return top, dyn


def _paper_preset(task: str) -> dict:
    from corl.algos.micro.termination import task_family  # local: termination imports nothing of ours

    family = task_family(task)
    if family in ("hopper", "walker2d", "halfcheetah"):
        return PAPER_PRESETS.get(task.lower(), {})
    if family == "never":
        return SAFETY_DEFAULTS
    raise TaskError(f"no MICRO preset for task {task!r}")  # pragma: no cover - task_family raises first


def paper_config(task: str, **overrides) -> MICROConfig:
    """The authors' policy setting for ``task`` (§2.8), then ``overrides`` on top (``dyn_*``
    keys are checked and belong to :func:`paper_dynamics_config`).

    D4RL locomotion tasks outside the table (e.g. ``*-random-v2``, ``*-expert-v2``) get the
    shared defaults; DSRL (``Offline*``) and online safety tasks get :data:`SAFETY_DEFAULTS`.
    """
    top, _ = _split({**_paper_preset(task), **overrides})
    return MICROConfig(**top)


def paper_dynamics_config(task: str, **overrides) -> DynamicsConfig:
    """The authors' dynamics setting for ``task`` (the ``dyn_*`` entries of §2.8's table), then
    ``overrides`` (``dyn_<name>`` or plain ``DynamicsConfig`` names) on top."""
    _, dyn = _split(_paper_preset(task))
    plain = {k: v for k, v in overrides.items() if not k.startswith("dyn_")}
    _, more = _split({k: v for k, v in overrides.items() if k.startswith("dyn_")})
    return DynamicsConfig(**{**dyn, **more, **plain})
