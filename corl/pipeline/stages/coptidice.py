"""The ``coptidice`` stage: COptiDICE (learner in ``corl.algos.coptidice``)."""

from __future__ import annotations

import torch

from corl.algos.coptidice import COptiDICEConfig, COptiDICELearner, initial_flags
from corl.data.dataset import TRANSITION_KEYS
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.bc import action_bounds
from corl.pipeline.stages.vae import task_threshold, train
from corl.store.policies import save_policy


@register_stage(
    "coptidice",
    config=COptiDICEConfig,
    version="2",
    inputs=("dataset",),
    description="COptiDICE: stationary-distribution correction with a cost upper bound, weighted BC",
)
def coptidice_stage(ctx: StageContext) -> StageResult:
    cfg: COptiDICEConfig = ctx.config
    data = ctx.load_dataset()
    limit, horizon, thres = task_threshold(ctx, cfg)
    low, high = action_bounds(ctx.task)
    is_init = initial_flags(data.episode_ends)  # timeouts end episodes here, as in OSRL
    obs_std, act_std = data.observations.std(0, unbiased=False), data.actions.std(0, unbiased=False)  # numpy's, as OSRL
    learner = COptiDICELearner(
        cfg, data.obs_dim, data.act_dim, thres, float(is_init.mean()), obs_std, act_std, low, high, ctx.device
    )

    def sample(gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(data), (cfg.batch_size,), device=data.device, generator=gen)
        batch = {key: getattr(data, key)[idx] for key in TRANSITION_KEYS}
        batch["is_init"] = is_init[idx]
        return batch

    steps = train(ctx, learner, cfg.steps, sample)
    policy = save_policy(ctx.out_dir, learner.actor, "tanh_gaussian", learner.policy_kwargs)
    return StageResult(
        metrics={"steps": float(steps), "qc_thres": learner.qc_thres},
        outputs={
            "policy": policy,
            "cost_limit": limit,
            "episode_len": horizon,
            "qc_thres": learner.qc_thres,
            "label": "COptiDICE",
            "steps": steps,
        },
    )
