"""DRCORL hyper-parameters (Guo et al., "Diffusion-Regularized Constrained Offline RL",
NeurIPS 2025, arXiv 2502.12391; official code JamesJunyuGuo/DRCORL on top of thu-ml/SRPO).

Defaults are the paper's / authors' launch-script values (``algorithms.md`` 1.8) for the
common task setting (OfflineCarCircle-v0-like: kappa 10, h 0.5, policy lr 1e-4, critic lr
3e-4, 100k warm-start steps, 4000 safe iterations, batch 256). :func:`paper_config` returns
the per-task settings of the launch scripts.

Every ``fix_*`` option repairs a defect of the authors' code (``algorithms.md`` 1.11); its
docstring says what the code did. :func:`reproduce_code_bugs` turns all of them off.

Losses (``algorithms.md`` 1.3-1.6)::

    behaviour   L_diff = E || eps_phi(alpha_t a + sigma_t z, t, s) - z ||^2,  t ~ U(1e-3, 1)
    value       L_V    = E |tau - 1{u<0}| u^2,   u = sg(min_j Qbar_j(s, a)) - V(s)
    IQL Q       L_Q    = mean_j E (Q_j(s, a) - (y + gamma (1-d) sg V(s')))^2
    TD Q        L_Q    = mean_j E (Q_j(s, a) - (y + gamma (1-d) Qbar_j(s', pi(s'))))^2
    warm start  L_bc   = E w(t) <eps_hat, pi(s)>
    reward      L_rew  = E w(t) <eps_hat, pi(s)> - beta <g_r, pi(s)>
    cost        L_cost = E w(t) <eps_hat, pi(s)> + beta <g_c, pi(s)>
    Lagrangian  L_lag  = E w(t) <eps_hat, pi(s)> - beta <g_r - lambda g_c, pi(s)>

with ``eps_hat = sg(eps_phi(alpha_t pi(s) + sigma_t z, t, s))``, ``t ~ U(0.02, 0.98)``,
``w(t) = sigma_t^2`` (VDS) and ``g = sg(grad_a mean_j Qbar_j(s, a))`` at ``a = pi(s)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class BehaviorConfig:
    """Stage 1: the conditional diffusion behaviour model ``eps_phi(a_t, t, s)``."""

    width: int = 256  # residual trunk width
    blocks: int = 3  # actor_blocks
    time_dim: int = 128  # time-embedding width (Fourier 64 -> 128 -> 128)
    fourier_features: int = 32  # fixed frequencies W ~ N(0, scale^2)
    fourier_scale: float = 30.0
    expansion: int = 4  # residual block hidden = expansion * width (1024)
    dropout: float = 0.1
    beta0: float = 0.1  # VP-SDE linear schedule
    beta1: float = 20.0
    t_min: float = 1e-3  # training times t ~ U(t_min, 1)
    lr: float = 3e-4  # AdamW
    weight_decay: float = 0.01  # PyTorch AdamW default, as in the code
    batch_size: int = 2048
    steps: int = 2_000_000  # 200 "epochs" x 10k steps
    compile: bool = False  # torch.compile the loss function


@dataclass
class CriticConfig:
    """Stage 2: reward and cost critics, IQL pre-training (then TD fine-tuning in stage 3)."""

    hidden: tuple[int, ...] = (256, 256)  # q_layer = 2
    qc_mode: Literal["twin", "ensemble"] = "twin"  # ensemble: 6 members, Kaiming-uniform init, zero bias
    ensemble_size: int = 6
    gamma: float = 0.99
    expectile: float = 0.7  # for both V_r and V_c (pitfall 3: with min of the twin)
    cost_expectile: float | None = field(default=None, metadata={"key": "if_set"})
    """A corl option: the expectile of ``V_c`` alone (None: ``expectile``, as the authors). The
    upper expectile is IQL's soft max over the data's actions; for a cost it values every state
    by the data's worse actions, so the pre-trained ``Q_c`` reads 2-3x the data's Monte-Carlo
    cost-to-go and every offline switch estimate built on it sits above the limit. 0.5 (the
    mean: SARSA on the data) values the data's own continuation."""
    tau: float = 0.005  # Polyak
    q_lr: float = 3e-4
    v_lr: float = 3e-4
    batch_size: int = 256
    steps: int = 500_000  # the policy stage loads the epoch-50 checkpoint (50 x 10k)
    reward_scale_episode_steps: int = 1000  # r~ = r 1000 / (R_max - R_min), episodes cut every 1000 steps
    fix_cost_broadcast: bool = True
    """The authors' IQL pre-training stored costs as ``(B,)`` against ``(B, 1)`` done flags and
    values, so the target broadcast to ``(B, B)`` and every ``Q_c(s_i)`` regressed onto
    ``mean_j c_j + gamma (1 - d_i) V_c(s'_i)``. True: costs reshaped to ``(B, 1)``."""
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("expectile", "cost_expectile"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"critics.{name} must be in (0, 1), got {value}")


@dataclass
class PolicyConfig:
    """Stage 3: the score-regularised Dirac policy with the safety switch."""

    hidden: tuple[int, ...] = (256, 256)  # (256,)*4 for maze tasks
    lr: float = 1e-4  # policy_lr
    pretrain_lr: float | None = field(default=None, metadata={"key": "if_set"})
    """A corl option for CPU-sized runs (None: the paper's single ``lr``): the behaviour-mode warm
    start takes its own Adam optimizer at this rate, and the safe phase starts a fresh one at
    ``lr``. The paper warm-starts for 100k steps at 1e-4; a few thousand steps at 1e-3 reach a
    state-dependent policy on a CPU, while the safe phase keeps the paper's slower rate."""
    warm_start: Literal["score", "bc"] = field(default="score", metadata={"key": "if_set"})
    """What the warm start (3a) fits. ``score`` (the paper): ``L_bc``, the behaviour model's
    score distilled into the Dirac policy (mode-seeking; as good as the diffusion model). ``bc``
    (a corl option): the mean-squared error to the dataset's actions on the same states, the
    deterministic BC that the safe phase then moves from. At CPU size the distilled policy
    reaches a fraction of the data's episode (0.048 against BC-All's 0.270 on the scripted
    data, the README's diagnosis) and the safe phase starts from a standstill."""
    warm_start_episodes: Literal["all", "safe"] = field(default="all", metadata={"key": "if_set"})
    """Which episodes the ``bc`` warm start clones: ``all``, or ``safe`` (cost return within
    ``cost_threshold``: BC-Safe's rows). The safe phase and the critics see every row."""
    n_policy_epochs: int = 1000  # cosine T_max = n_policy_epochs x 10k (effectively constant)
    batch_size: int = 256  # policy_batchsize
    pretrain_epochs: int = 100  # behaviour-mode warm start: pretrain_epochs x steps_per_pretrain_epoch
    steps_per_pretrain_epoch: int = 1000  # L_bc steps per warm-start "epoch" (1000 in the code)
    train_epochs: int = 4000  # safe-phase iterations k
    t_min: float = 0.02  # t ~ U(0.02, 0.98) for the score regulariser
    t_max: float = 0.98
    weighting: Literal["VDS", "stable", "score"] = "VDS"  # w(t) = sigma^2 | 1 | alpha / sigma
    beta_schedule: Literal["sqrt", "const"] = "sqrt"  # beta_k = beta_coef sqrt(k) | beta
    beta_coef: float = 0.01
    beta: float = 0.01  # constant beta (CLI --beta; the code ignores it in the safe phase)
    regq: bool = False  # normalise critic guidance by its per-sample RMS (maze tasks)
    guidance_norm: Literal["sample", "batch"] = field(default="sample", metadata={"key": "if_set"})
    """With ``regq``: ``sample`` (the paper's maze option) divides each state's guidance by its
    own RMS over action dims, so every state moves at the same speed whatever the critic's
    slope there; ``batch`` (a corl option) divides by the RMS over the whole batch, which keeps
    the dataset-independent scale but lets states where the critic is flat move less."""
    proximal_coef: float = field(default=0.0, metadata={"key": "if_set"})
    """A corl option (0: the paper): the safe phase adds ``proximal_coef E_s ||pi(s) - pi_0(s)||^2``
    to every branch's loss, ``pi_0`` being the warm-start policy (frozen at the first safe
    iteration). The critics' action gradients at CPU size lead out of the region (the README's
    diagnosis: the reward branch takes a BC-Safe-level warm start from 0.177 / 0.00 to 0.097 /
    1.76 in 200 iterations); the term keeps the safe phase a local improvement of the start."""
    # -- safety switch (algorithms.md 1.6)
    cost_threshold: float = 10.0  # kappa (cost_scale): episodic cost budget
    cost_limit: float = 1.0  # l: normalised limit
    slack_bound: float = 0.5  # h
    warmup_iters: int = 500  # k <= warmup_iters: reward branch only
    merge: Literal["pcgrad_on_deltas"] = "pcgrad_on_deltas"
    switch_rule: Literal["estimate", "always_merge"] = field(default="estimate", metadata={"key": "if_set"})
    """``estimate`` (the paper): the branch follows the cost estimate (:func:`switch_branch`).
    ``always_merge`` (a corl option): after the warm-up every safe iteration takes the paper's
    middle branch, the PCGrad merge of one reward and one cost step, whatever the estimate
    reads: a reward step with its cost-increasing part (by the cost critic's action gradient)
    removed. No offline estimate measured here saw the cost of the policy's own moves (the
    README's diagnosis), while the cost critic's local direction still carries it."""
    switch_estimator: Literal["critic", "model", "online"] = "critic"
    """'critic' (offline, a deviation from the code, flagged in algorithms.md 1.6):
    C_ep = (1 - gamma) T mean_s 1/2 sum_j Qbar_c,j(s, pi(s)) over ``critic_states``;
    'online': a caller-supplied ``cost_estimator(policy, n_episodes) -> mean episodic cost``
    (the authors' code: one rollout per iteration); 'model' (a corl extension): the same
    callable backed by the dynamics ensemble (``corl.algos.drcorl.model_estimate``)."""
    critic_states: Literal["batch", "initial"] = "batch"
    cost_pessimism: float = field(default=0.0, metadata={"key": "if_set"})
    """A corl option: the cost critic's value is ``mean_j Qbar_c,j + k std_j Qbar_c,j`` in the
    switch's critic estimate, the cost guidance and the PID's input (0: the members' mean, as
    the paper). The cost branch descends ``Q_c`` at the policy's own, increasingly
    out-of-data actions, where a single critic is free to be wrong in the policy's favour; the
    members' disagreement there is the signal of that (for a twin, ``k = 1`` is the larger)."""
    """'batch': the formula above over the batch states (the repo's unused estimator);
    'initial': C_ep = Qbar_c(s0, pi(s0)) (1 - gamma) T / (1 - gamma^T) over dataset initial
    states (falls back to 'batch' when none are given)."""
    critic_calibration: bool = field(default=False, metadata={"key": "if_set"})
    """A corl option for the critic estimator (not in the paper): multiply ``C_ep`` by
    ``mean G_c / mean Qbar_c(s, a)`` over a fixed set of dataset rows, where ``G_c`` is the
    data's own discounted cost-to-go, measured once with the pre-trained critic at the first
    safe iteration. The IQL cost critic (upper expectile, min of the twin) reads 2-3x the
    Monte-Carlo cost of the data it was trained on; the ratio removes that scale bias."""
    estimate_anchor: Literal["none", "warm_start", "paired"] = field(default="none", metadata={"key": "if_set"})
    """A corl option for the offline switch estimators (``critic``, ``model``). ``none`` (the
    paper): the estimate as it reads. ``warm_start`` (with ``warm_start = "bc"``): the estimate is
    anchored at the policy the safe phase starts from, ``C = C_ref + (C_raw(pi_k) - C_raw(pi_0))``,
    with ``C_ref`` the mean episodic cost of the episodes the warm start cloned (the safe ones
    with ``warm_start_episodes = "safe"``). Both offline estimates average over dataset states,
    many of them in unsafe episodes, and read 5-7x the limit for policies whose simulator cost
    is 0 (the README's diagnosis): an offset the policy cannot change, which keeps the switch in
    the cost branch for good. Anchoring removes the offset and keeps the estimate's changes.
    ``paired``: the same, but ``C_raw(pi_0)`` is read again at every estimate, by the current
    critic (or model) on the same states, ``C = C_ref + (C_k(pi_k) - C_k(pi_0))``. The TD
    fine-tuning moves the cost critic itself (the pre-trained one reads 2-3x the data's cost and
    relaxes), so a difference against a number read once at the start falls whatever the
    policy does; read in pairs, the critic's own drift cancels and only the policy's move is
    left."""
    estimate_every: int = 1  # re-estimate C every this many safe iterations (online: cost!)
    estimate_episodes: int = 10  # episodes per online estimate (with fix_single_episode_eval)
    episode_len: int = 300  # T (task episode length)
    gamma: float = 0.99
    # -- Lagrangian variant
    use_lagrangian: bool = False
    lambda_mode: Literal["fixed", "pid"] = "pid"
    lambda_fixed: float = 0.1
    pid: tuple[float, float, float] = (0.1, 0.003, 0.001)
    # -- critic fine-tuning during policy learning (TD=True)
    td_finetune: bool = True
    td_reset_critic_optimizers: bool = True  # the policy stage builds fresh critic optimizers [unverified]
    # -- code defects
    fix_single_episode_eval: bool = True
    """The authors' ``evaluate_cost`` returns inside its episode loop, so every online
    estimate (and every evaluation) used ONE episode. True: ``estimate_episodes`` episodes."""
    fix_cost_normalisation: bool = True
    """The code normalises costs as ``C / (kappa + 0.1)``. True: DSRL's rule
    ``(C + eps) / (kappa + eps)`` with ``eps = 1`` only when ``kappa == 0``."""
    fix_pid_threshold: bool = True
    """The code builds the PID Lagrangian with threshold 0.0 (the real one never reaches it),
    so lambda tracks ``Q_c > 0``. True: threshold ``kappa (1 - gamma^T) / ((1 - gamma) T)``."""
    compile: bool = False

    def __post_init__(self) -> None:
        _check_choice("weighting", self.weighting, ("VDS", "stable", "score"))
        _check_choice("beta_schedule", self.beta_schedule, ("sqrt", "const"))
        _check_choice("merge", self.merge, ("pcgrad_on_deltas",))
        _check_choice("switch_estimator", self.switch_estimator, ("critic", "model", "online"))
        _check_choice("critic_states", self.critic_states, ("batch", "initial"))
        _check_choice("lambda_mode", self.lambda_mode, ("fixed", "pid"))
        _check_choice("warm_start", self.warm_start, ("score", "bc"))
        _check_choice("warm_start_episodes", self.warm_start_episodes, ("all", "safe"))
        _check_choice("estimate_anchor", self.estimate_anchor, ("none", "warm_start", "paired"))
        _check_choice("guidance_norm", self.guidance_norm, ("sample", "batch"))
        _check_choice("switch_rule", self.switch_rule, ("estimate", "always_merge"))
        if self.proximal_coef < 0:
            raise ValueError(f"proximal_coef must be >= 0, got {self.proximal_coef}")
        if self.cost_pessimism < 0:
            raise ValueError(f"cost_pessimism must be >= 0, got {self.cost_pessimism}")
        if self.estimate_every < 1:
            raise ValueError("estimate_every must be >= 1")
        if self.pretrain_lr is not None and not self.pretrain_lr > 0:
            raise ValueError(f"pretrain_lr must be > 0 (or unset); got {self.pretrain_lr}")


@dataclass
class DRCORLConfig:
    """All three stages."""

    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    critics: CriticConfig = field(default_factory=CriticConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)


# ----------------------------------------------------------------------------- paper settings
# task -> (kappa, h, policy_lr, q_lr (= v_lr), pretrain_epochs, train_epochs, batch, lagrangian+pid, T)
# From the official launch scripts (algorithms.md 1.8). ``batch`` is the intended value; the
# lines marked in _BATCH_TYPO passed ``-policy_batchsize`` with one dash (ignored -> 256).
PAPER_TASKS: dict[str, tuple[float, float, float, float, int, int, int, bool, int]] = {
    "OfflineCarCircle-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, True, 300),
    "OfflineBallCircle-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, True, 200),
    "OfflineCarRun-v0": (30, 0.5, 1e-4, 3e-4, 100, 4000, 256, True, 200),
    "OfflineAntRun-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, False, 200),
    "OfflineAntCircle-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, False, 500),
    "OfflineCarGoal1Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 512, False, 1000),
    "OfflineCarButton1Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, False, 1000),
    "OfflineCarButton2Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, False, 1000),
    "OfflineCarCircle1Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, False, 500),
    "OfflineCarCircle2Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, False, 500),
    "OfflineCarPush1Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, True, 1000),
    "OfflineCarPush2Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, True, 1000),
    "OfflineCarGoal2Gymnasium-v0": (10, 0.5, 1e-5, 1e-4, 100, 2000, 512, False, 1000),
    "OfflinePointButton1Gymnasium-v0": (10, 0.5, 1e-5, 1e-4, 100, 2000, 512, False, 1000),
    "OfflinePointButton2Gymnasium-v0": (10, 0.5, 1e-5, 1e-4, 100, 2000, 512, False, 1000),
    "OfflinePointCircle1Gymnasium-v0": (10, 0.5, 1e-5, 1e-4, 100, 2000, 512, False, 500),
    "OfflinePointCircle2Gymnasium-v0": (10, 0.5, 1e-5, 1e-4, 100, 2000, 512, False, 500),
    "OfflinePointGoal1Gymnasium-v0": (10, 0.5, 1e-5, 1e-4, 100, 2000, 512, False, 1000),
    "OfflinePointGoal2Gymnasium-v0": (10, 0.5, 1e-5, 1e-4, 100, 2000, 512, False, 1000),
    "OfflinePointPush1Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 2000, 512, False, 1000),
    "OfflinePointPush2Gymnasium-v0": (10, 0.5, 1e-4, 3e-4, 100, 2000, 512, False, 1000),
    "OfflineAntVelocityGymnasium-v1": (10, 0.5, 3e-4, 3e-4, 50, 2000, 256, False, 1000),
    "OfflineHalfCheetahVelocityGymnasium-v1": (10, 0.5, 1e-4, 6e-4, 50, 2000, 256, False, 1000),
    "OfflineHopperVelocityGymnasium-v1": (10, 0.5, 3e-4, 3e-4, 100, 4000, 256, False, 1000),
    "OfflineSwimmerVelocityGymnasium-v1": (10, 0.5, 1e-4, 3e-4, 100, 4000, 256, False, 1000),
    "OfflineWalker2dVelocityGymnasium-v1": (10, 0.5, 5e-5, 3e-4, 50, 8000, 256, False, 1000),
}
_BATCH_TYPO = {
    f"OfflinePoint{n}Gymnasium-v0" for n in ("Button2", "Circle1", "Circle2", "Goal1", "Goal2", "Push1", "Push2")
}


def paper_config(task: str, reproduce_batch_typo: bool = False) -> DRCORLConfig:
    """The launch-script settings for ``task`` (defaults for tasks the scripts do not list).

    ``reproduce_batch_typo``: the Point* lines passed ``-policy_batchsize 512`` with a single
    dash, which argparse ignored, so those runs used batch 256.
    """
    cfg = DRCORLConfig()
    if task not in PAPER_TASKS:
        return cfg
    kappa, h, plr, qlr, pre, train, batch, lag, horizon = PAPER_TASKS[task]
    if reproduce_batch_typo and task in _BATCH_TYPO:
        batch = 256
    cfg.critics = dataclasses.replace(cfg.critics, q_lr=qlr, v_lr=qlr)
    cfg.policy = dataclasses.replace(
        cfg.policy,
        cost_threshold=float(kappa),
        slack_bound=h,
        lr=plr,
        pretrain_epochs=pre,
        train_epochs=train,
        batch_size=batch,
        use_lagrangian=lag,
        lambda_mode="pid",
        episode_len=horizon,
    )
    return cfg


def reproduce_code_bugs(cfg: DRCORLConfig) -> DRCORLConfig:
    """A copy with every ``fix_*`` option off (the authors' code as written)."""
    return DRCORLConfig(
        behavior=dataclasses.replace(cfg.behavior),
        critics=dataclasses.replace(cfg.critics, fix_cost_broadcast=False),
        policy=dataclasses.replace(
            cfg.policy, fix_single_episode_eval=False, fix_cost_normalisation=False, fix_pid_threshold=False
        ),
    )
