"""The ``cpq`` stage: CPQ (learner in ``corl.algos.cpq``) on the pre-fitted VAE."""

from __future__ import annotations

from corl.algos.cpq import CPQConfig, CPQLearner
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.bc import action_bounds
from corl.pipeline.stages.vae import load_vae, task_threshold, train
from corl.store.policies import save_policy


@register_stage(
    "cpq",
    config=CPQConfig,
    version="1",
    inputs=("dataset", "vae"),
    description="CPQ: VAE-detected OOD actions penalised in the cost critic, cost-gated actor",
)
def cpq_stage(ctx: StageContext) -> StageResult:
    cfg: CPQConfig = ctx.config
    data = ctx.load_dataset()
    limit, horizon, thres = task_threshold(ctx, cfg)
    low, high = action_bounds(ctx.task)
    learner = CPQLearner(cfg, data.obs_dim, data.act_dim, load_vae(ctx), thres, low, high, ctx.device)
    steps = train(ctx, learner, cfg.steps, lambda g: data.sample(cfg.batch_size, g))
    policy = save_policy(ctx.out_dir, learner.actor, "tanh_gaussian", learner.policy_kwargs)
    return StageResult(
        metrics={"steps": float(steps), "qc_thres": thres},
        outputs={
            "policy": policy,
            "cost_limit": limit,
            "episode_len": horizon,
            "qc_thres": thres,
            "label": "CPQ",
            "steps": steps,
        },
    )
