"""DRCORL stages: ``drcorl_behavior`` -> ``drcorl_critics`` -> ``drcorl_policy`` (learners in
``corl.algos.drcorl``; this module is only the glue: data, checkpoints, artifacts).

* ``drcorl_behavior`` (inputs: dataset): fits the diffusion behaviour model; writes
  ``behavior.pt`` (the ScoreNet ``state_dict``); outputs its config and dims.
* ``drcorl_critics`` (inputs: dataset): IQL reward/cost critics on the IQL-scaled reward;
  writes ``critics.pt`` (the whole CriticLearner state, optimizers included).
* ``drcorl_policy`` (inputs: dataset, behavior, critics, optionally dynamics): warm start +
  safe phase; writes the Dirac policy for ``evaluate`` (builder ``deterministic``). With a
  ``dynamics`` input (the generic ``dynamics`` stage: MICRO's ensemble, shared with ``micro``
  through the cache) it also labels iterates with the model estimate, keeps the best one by
  that offline estimate (``policy-best-offline.pt``, ``outputs["best_offline_policy"]``) and
  offers the estimate to the switch (``switch_estimator = "model"``); see ``_drcorl_model.py``.

Deviations from the authors' runner, by design: batches are drawn uniformly with
replacement (``TransitionDataset.sample``) rather than from shuffled epochs; the switching
statistic is the offline cost-critic estimate unless ``switch_estimator = "online"`` (or
``"model"``); no best-checkpoint selection on simulator episodes (the final policy is the
artifact; the best-offline iterate is a second, separately labelled one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from corl.algos.drcorl import (
    BehaviorConfig,
    BehaviorLearner,
    CriticConfig,
    CriticLearner,
    PolicyConfig,
    PolicyLearner,
    build_score_net,
    initial_observations,
    iql_reward_scale,
)
from corl.algos.drcorl.policy import calibration_rows
from corl.data.filtering import safe_episodes
from corl.envs.factory import action_bounds
from corl.errors import CorlError
from corl.files import torch_save_atomic
from corl.nn.diffusion import VPSchedule
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages._drcorl_model import IterateSelection, build_estimator, model_estimate_config
from corl.store.policies import save_policy

_IF_SET = {"key": "if_set"}


# ----------------------------------------------------------------------------- configs
@dataclass
class BehaviorStageConfig(BehaviorConfig):
    """``corl.algos.drcorl.BehaviorConfig`` plus which episodes the model is fitted on."""

    episodes: str = field(default="all", metadata=_IF_SET)
    """A corl option: ``all`` (the paper: the whole dataset) or ``safe`` (only the episodes
    whose cost is within ``cost_limit``, BC-Safe's rows). The behaviour model is both the
    warm start's target and the safe phase's regulariser, so on data with many unsafe
    episodes the paper's choice anchors the policy to unsafe driving that the switch must
    then undo with biased offline estimates; ``safe`` anchors it to safe driving instead.
    The critics still learn from every episode (the cost critic needs the unsafe ones)."""
    cost_limit: float | None = field(default=None, metadata=_IF_SET)  # episodes = safe; None: the task's

    def __post_init__(self) -> None:
        if self.episodes not in ("all", "safe"):
            raise ValueError(f"behavior.episodes must be 'all' or 'safe', got {self.episodes!r}")


@dataclass
class CriticStageConfig(CriticConfig):
    """``corl.algos.drcorl.CriticConfig`` (every field is a key of the stage)."""


@dataclass
class PolicyStageConfig(PolicyConfig):
    """``corl.algos.drcorl.PolicyConfig`` plus task defaults and online-estimator settings."""

    cost_threshold: float | None = None  # kappa; None = the task's first cost limit (10 if none)
    episode_len: int | None = None  # T; None = the task's episode length
    estimate_num_envs: int = 4  # vector envs for switch_estimator = "online"
    # -- the model estimate and offline selection (a corl extension; they need a `dynamics`
    # input; corl.algos.drcorl.model_estimate). Keyed only when set, so old artifacts stay valid.
    model_horizon: int = field(default=10, metadata=_IF_SET)  # H (start_states = dataset)
    model_start_states: str = field(default="dataset", metadata=_IF_SET)  # dataset | initial
    model_num_starts: int = field(default=1000, metadata=_IF_SET)  # N start states per estimate
    model_pessimism: float = field(default=1.0, metadata=_IF_SET)  # k: cost + k std, reward - k std
    model_sample_noise: bool = field(default=True, metadata=_IF_SET)
    model_clip_obs: bool = field(default=True, metadata=_IF_SET)
    select_every: int = field(
        default=100, metadata=_IF_SET
    )  # label an iterate every N safe iterations (0: the final only)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.select_every < 0:
            raise ValueError("select_every must be >= 0 (0: label only the final iterate)")
        model_estimate_config(self)  # the model_* keys' errors at spec time


def _safe_rows(data, limit: float, empty_message: str):
    """The episodes with cost return <= ``limit`` (BC-Safe's rows); ``empty_message`` when none."""
    safe = safe_episodes(data, limit)
    if len(safe) == 0:
        raise CorlError(empty_message)
    return safe


def _learner_config(cls, cfg, **overrides):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k in names}
    values.update(overrides)
    return cls(**values)


def _train(ctx: StageContext, learner, steps: int, sample, selection: IterateSelection | None = None) -> int:
    """``ctx.train_loop`` over ``learner.update``; ``selection`` labels iterates (policy stage)."""
    gen = ctx.generator()

    def get_state() -> dict:
        state = {"learner": learner.state_dict(), "generator": gen.get_state()}
        if selection is not None:
            state["selection"] = selection.state_dict()
        return state

    def set_state(state: dict) -> None:
        learner.load_state_dict(state["learner"])
        gen.set_state(state["generator"].cpu())
        if selection is not None:
            selection.load_state_dict(state["selection"])

    loop = ctx.train_loop(steps, get_state, set_state)
    for _ in loop:
        metrics = learner.update(sample(gen))
        if selection is not None and selection.due(learner):
            metrics.update(selection.label(learner))
        loop.log(metrics)
    return loop.step


# ----------------------------------------------------------------------------- stage 1
@register_stage(
    "drcorl_behavior",
    config=BehaviorStageConfig,
    version="1",
    inputs=("dataset",),
    description="DRCORL: diffusion behaviour model (VP-SDE, eps-prediction)",
)
def behavior_stage(ctx: StageContext) -> StageResult:
    cfg: BehaviorStageConfig = ctx.config
    data = ctx.load_dataset()
    if cfg.episodes == "safe":
        limit = cfg.cost_limit if cfg.cost_limit is not None else ctx.task.cost_limit
        if limit is None:
            raise CorlError(
                f"behavior: episodes 'safe' needs a cost limit and task {ctx.task.name} has none; "
                "set behavior.cost_limit or use episodes='all'"
            )
        data = _safe_rows(
            data,
            float(limit),
            f"behavior: no episode of the dataset has cost <= {limit}; raise behavior.cost_limit "
            "or use behavior.episodes='all'",
        )
    learner = BehaviorLearner(
        data.obs_dim, data.act_dim, _learner_config(BehaviorConfig, cfg), ctx.device, seed=ctx.seed
    )
    steps = _train(ctx, learner, cfg.steps, lambda g: data.sample(cfg.batch_size, g))
    torch_save_atomic(
        {"net": {k: v.detach().cpu() for k, v in learner.net.state_dict().items()}}, ctx.out_dir / "behavior.pt"
    )
    val = learner.evaluate_loss(data.sample(min(len(data), 4096), ctx.generator(offset=1)))
    return StageResult(
        metrics={"steps": float(steps), "behavior/val_loss": val, "behavior/episodes": float(data.num_episodes)},
        outputs={
            "file": "behavior.pt",
            "config": dataclasses.asdict(learner.config),
            "obs_dim": data.obs_dim,
            "act_dim": data.act_dim,
        },
    )


# ----------------------------------------------------------------------------- stage 2
@register_stage(
    "drcorl_critics",
    config=CriticStageConfig,
    version="1",
    inputs=("dataset",),
    description="DRCORL: IQL reward and cost critics",
)
def critics_stage(ctx: StageContext) -> StageResult:
    cfg: CriticStageConfig = ctx.config
    data = ctx.load_dataset()
    scale = iql_reward_scale(data, cfg.reward_scale_episode_steps)
    learner = CriticLearner(data.obs_dim, data.act_dim, _learner_config(CriticConfig, cfg), scale, ctx.device)
    steps = _train(ctx, learner, cfg.steps, lambda g: data.sample(cfg.batch_size, g))
    torch_save_atomic(learner.state_dict(), ctx.out_dir / "critics.pt")
    return StageResult(
        metrics={"steps": float(steps), "reward_scale": scale, **ctx.last_train_metrics},
        outputs={"file": "critics.pt", "config": dataclasses.asdict(learner.config), "reward_scale": scale},
    )


# ----------------------------------------------------------------------------- stage 3
@register_stage(
    "drcorl_policy",
    config=PolicyStageConfig,
    version="1",
    inputs=("dataset", "behavior", "critics"),  # optional extra role: dynamics
    description="DRCORL: score-regularised Dirac policy with the safety switch",
)
def policy_stage(ctx: StageContext) -> StageResult:
    cfg: PolicyStageConfig = ctx.config
    data = ctx.load_dataset()
    kappa = cfg.cost_threshold if cfg.cost_threshold is not None else (ctx.task.cost_limit or 10.0)
    horizon = cfg.episode_len if cfg.episode_len is not None else int(ctx.task.max_episode_steps)
    pcfg = _learner_config(PolicyConfig, cfg, cost_threshold=float(kappa), episode_len=int(horizon))

    b_art, c_art = ctx.input("behavior"), ctx.input("critics")
    bcfg = _learner_config(BehaviorConfig, BehaviorConfig(), **b_art.outputs["config"])
    behavior = build_score_net(data.obs_dim, data.act_dim, bcfg)
    behavior.load_state_dict(
        torch.load(b_art.dir / b_art.outputs["file"], map_location="cpu", weights_only=True)["net"]
    )
    ccfg = _learner_config(CriticConfig, CriticConfig(), **c_art.outputs["config"])
    critics = CriticLearner(data.obs_dim, data.act_dim, ccfg, c_art.outputs["reward_scale"], ctx.device)
    critics.load_state_dict(torch.load(c_art.dir / c_art.outputs["file"], map_location=ctx.device, weights_only=True))

    model = build_estimator(ctx, cfg, data, critics, pcfg.gamma, int(horizon))
    estimator = model if pcfg.switch_estimator == "model" else None
    if pcfg.switch_estimator == "online":
        from corl.eval.rollout import rollout

        def estimator(policy, n_episodes: int) -> float:  # mean undiscounted episode cost
            fn = torch.no_grad()(lambda obs: policy(obs))
            result = rollout(ctx.task, fn, n_episodes, seed=ctx.seed, num_envs=cfg.estimate_num_envs, device=ctx.device)
            return float(result.cost.mean())

    warm_data = data
    if pcfg.warm_start == "bc" and pcfg.warm_start_episodes == "safe":
        warm_data = _safe_rows(
            data,
            float(kappa),
            f"policy: warm_start_episodes 'safe' found no episode with cost <= {kappa:g}; "
            "use policy.warm_start_episodes=all or raise policy.cost_threshold",
        )

    low, high = action_bounds(ctx.task)
    learner = PolicyLearner(
        data.obs_dim,
        data.act_dim,
        behavior,
        critics,
        pcfg,
        low,
        high,
        VPSchedule(bcfg.beta0, bcfg.beta1),
        ctx.device,
        seed=ctx.seed,
        cost_estimator=estimator,
        initial_observations=initial_observations(data),
        calibration=(
            calibration_rows(data, pcfg.gamma, 4096, ctx.seed)
            if pcfg.critic_calibration or pcfg.estimate_anchor != "none"
            else None
        ),
        reference_cost=(float(warm_data.episode_returns()["cost"].mean()) if pcfg.estimate_anchor != "none" else None),
    )
    kwargs = {
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "hidden": list(pcfg.hidden),
        "activation": "relu",
        "act_low": low,
        "act_high": high,
    }
    selection = (
        None
        if model is None
        else IterateSelection(
            ctx, model, cfg.select_every, float(kappa), pcfg.cost_limit, pcfg.fix_cost_normalisation, kwargs
        )
    )

    def sample(g: torch.Generator) -> dict[str, torch.Tensor]:  # warm-start rows, then every row
        source = warm_data if learner.step < learner.pretrain_steps else data
        return source.sample(pcfg.batch_size, g)

    steps = _train(ctx, learner, learner.total_steps, sample, selection)
    policy = save_policy(ctx.out_dir, learner.policy, "deterministic", kwargs)
    metrics = {"steps": float(steps), "cost_estimate": learner.cost_estimate}
    outputs = {"policy": policy, "cost_limit": float(kappa), "label": "DRCORL", "steps": steps}
    if selection is not None:
        from corl.eval.scores import normalized_reward

        extra_metrics, extra_outputs = selection.finish(learner, lambda r: float(normalized_reward(ctx.task, [r])[0]))
        metrics.update(extra_metrics)
        outputs.update(extra_outputs)
    return StageResult(metrics=metrics, outputs=outputs)
