"""The ``bc`` stage: BC-All / BC-Safe on the task's dataset (learner in corl.algos.baselines.bc)."""

from __future__ import annotations

from corl.algos.baselines.bc import BCConfig, BCLearner, select_episodes
from corl.envs.factory import action_bounds
from corl.errors import CorlError
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.store.policies import save_policy


@register_stage(
    "bc",
    config=BCConfig,
    version="1",
    inputs=("dataset",),
    description="behavior cloning of a tanh-Gaussian policy (BC-All / BC-Safe)",
)
def bc_stage(ctx: StageContext) -> StageResult:
    cfg: BCConfig = ctx.config
    data = ctx.load_dataset()
    limit = cfg.cost_limit if cfg.cost_limit is not None else ctx.task.cost_limit
    if cfg.mode == "safe" and limit is None:
        raise CorlError(f"bc: mode 'safe' needs a cost limit and task {ctx.task.name} has none; use mode='all'")
    selected = select_episodes(data, cfg.mode, limit)
    if len(selected) == 0:
        raise CorlError(f"bc: no episode of the dataset has cost <= {limit}; raise bc.cost_limit or use bc.mode=all")
    mean, std = selected.observation_stats() if cfg.normalize_obs else (None, None)
    low, high = action_bounds(ctx.task)
    learner = BCLearner(cfg, selected.obs_dim, selected.act_dim, low, high, mean, std, ctx.device)
    gen = ctx.generator()

    def get_state() -> dict:
        return {"learner": learner.state_dict(), "generator": gen.get_state()}

    def set_state(state: dict) -> None:
        learner.load_state_dict(state["learner"])
        gen.set_state(state["generator"])

    loop = ctx.train_loop(cfg.steps, get_state, set_state)
    for _ in loop:
        loop.log(learner.update(selected.sample(cfg.batch_size, gen)))

    policy = save_policy(
        ctx.out_dir,
        learner.policy,
        "tanh_gaussian",
        learner.policy_kwargs,
        learner.obs_mean if cfg.normalize_obs else None,
        learner.obs_std if cfg.normalize_obs else None,
    )
    returns = selected.episode_returns()
    return StageResult(
        metrics={"steps": float(loop.step), "episodes_used": float(len(returns["reward"]))},
        outputs={
            "policy": policy,
            "cost_limit": limit,
            "mode": cfg.mode,
            "steps": loop.step,
            "label": "BC-Safe" if cfg.mode == "safe" else "BC-All",
        },
    )
