"""The ``bcql`` stage: BCQ-Lag (learner in ``corl.algos.bcql``) on the pre-fitted VAE."""

from __future__ import annotations

from corl.algos.bcql import BCQLConfig, BCQLLearner
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.bc import action_bounds
from corl.pipeline.stages.vae import load_vae, task_threshold, train
from corl.store.policies import save_policy


@register_stage(
    "bcql",
    config=BCQLConfig,
    version="1",
    inputs=("dataset", "vae"),
    description="BCQ-Lag: VAE candidates + perturbation actor, PID-Lagrangian cost critic",
)
def bcql_stage(ctx: StageContext) -> StageResult:
    cfg: BCQLConfig = ctx.config
    data = ctx.load_dataset()
    limit, horizon, thres = task_threshold(ctx, cfg)
    low, high = action_bounds(ctx.task)
    learner = BCQLLearner(cfg, data.obs_dim, data.act_dim, load_vae(ctx), thres, low, high, ctx.device)
    steps = train(ctx, learner, cfg.steps, lambda g: data.sample(cfg.batch_size, g))
    policy = save_policy(ctx.out_dir, learner.policy, "bcq", learner.policy_kwargs)
    return StageResult(
        metrics={"steps": float(steps), "qc_thres": thres},
        outputs={
            "policy": policy,
            "cost_limit": limit,
            "episode_len": horizon,
            "qc_thres": thres,
            "label": "BCQ-Lag",
            "steps": steps,
        },
    )
