"""The ``fisor`` stage: FISOR (learner in ``corl.algos.fisor``).

Rewards are scaled by ``T / (R_max - R_min)`` with the task's DSRL reference returns, as the
authors' loader does (``normalize_returns``); the cost limit only labels the scores (FISOR's
constraint is the hard, state-wise one).
"""

from __future__ import annotations

from corl.algos.fisor import FISORConfig, FISORLearner
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.bc import action_bounds
from corl.pipeline.stages.vae import train
from corl.store.policies import save_policy


@register_stage(
    "fisor",
    config=FISORConfig,
    version="1",
    inputs=("dataset",),
    description="FISOR: HJ feasibility critics, IQL reward critics, weighted DDPM policy",
)
def fisor_stage(ctx: StageContext) -> StageResult:
    cfg: FISORConfig = ctx.config
    data = ctx.load_dataset()
    task = ctx.task
    factor = 1.0
    if cfg.normalize_returns and task.reward_max is not None and task.reward_min is not None:
        factor = float(task.max_episode_steps) / (task.reward_max - task.reward_min)
    low, high = action_bounds(task)
    learner = FISORLearner(cfg, data.obs_dim, data.act_dim, factor, low, high, ctx.device)
    steps = train(ctx, learner, cfg.steps, lambda g: data.sample(cfg.batch_size, g))
    spec = save_policy(ctx.out_dir, learner.make_policy(), "fisor", learner.policy_kwargs)
    limit = cfg.cost_limit if cfg.cost_limit is not None else task.cost_limit
    return StageResult(
        metrics={"steps": float(steps), "reward_factor": factor},
        outputs={"policy": spec, "cost_limit": limit, "label": "FISOR", "steps": steps, "reward_factor": factor},
    )
