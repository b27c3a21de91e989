"""The ``cdt`` stage: CDT (learner in ``corl.algos.cdt``) on the task's trajectories.

The saved policy carries OSRL's default targets for the task (``target_return`` /
``target_cost``); ``evaluate.target_return`` / ``evaluate.target_cost`` condition the same
weights on other targets without retraining.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from corl.algos.cdt import CDTConfig, CDTLearner, CDTModel, WindowSampler, augment, split_trajectories
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.bc import action_bounds
from corl.pipeline.stages.vae import train
from corl.store.policies import save_policy


def model_kwargs(cfg: CDTConfig, episode_len: int) -> dict:
    return {
        "seq_len": cfg.seq_len,
        "episode_len": episode_len,
        "embedding_dim": cfg.embedding_dim,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "attention_dropout": cfg.attention_dropout,
        "residual_dropout": cfg.residual_dropout,
        "embedding_dropout": cfg.embedding_dropout,
        "cost_transform_offset": cfg.cost_transform_offset,
    }


@register_stage(
    "cdt",
    config=CDTConfig,
    version="2",
    inputs=("dataset",),
    description="CDT: return/cost-conditioned decision transformer with Pareto relabelling",
)
def cdt_stage(ctx: StageContext) -> StageResult:
    cfg: CDTConfig = ctx.config
    data = ctx.load_dataset()
    horizon = cfg.episode_len if cfg.episode_len is not None else int(ctx.task.max_episode_steps)
    trajs = split_trajectories(data)
    n_aug = 0
    if cfg.augment:
        rng = np.random.default_rng(ctx.seed)  # explicit generator (OSRL uses the global ones)
        trajs, n_aug = augment(
            trajs,
            rng,
            cfg.augment_percent,
            cfg.augment_deg,
            cfg.max_reward,
            cfg.min_reward,
            cfg.max_rew_decrease,
            cfg.augment_beta,
        )
    sampler = WindowSampler(
        trajs, cfg.seq_len, cfg.reward_scale, cfg.cost_scale, cfg.cost_sample, cfg.cost_sample_max, ctx.device
    )
    kwargs = model_kwargs(cfg, horizon)
    learner = CDTLearner(cfg, CDTModel(data.obs_dim, data.act_dim, **kwargs), ctx.device)
    steps = train(ctx, learner, cfg.steps, lambda g: sampler.sample(cfg.batch_size, g))
    low, high = action_bounds(ctx.task)
    policy_kwargs = {
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "model": kwargs,
        "target_return": cfg.target_return,
        "target_cost": cfg.target_cost,
        "reward_scale": cfg.reward_scale,
        "cost_scale": cfg.cost_scale,
        "act_low": low,
        "act_high": high,
    }
    from corl.algos.cdt import CDTPolicy

    policy = CDTPolicy(**policy_kwargs)
    policy.model.load_state_dict(learner.model.state_dict())
    spec = save_policy(ctx.out_dir, policy, "cdt", policy_kwargs)
    limit = cfg.cost_limit if cfg.cost_limit is not None else ctx.task.cost_limit
    return StageResult(
        metrics={"steps": float(steps), "augmented_trajectories": float(n_aug)},
        outputs={
            "policy": spec,
            "cost_limit": limit,
            "label": "CDT",
            "steps": steps,
            "targets": [cfg.target_return, cfg.target_cost],
            "config": dataclasses.asdict(cfg),
        },
    )
