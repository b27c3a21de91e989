"""The ``evaluate`` stage: roll a trained policy out in the simulator; DSRL/D4RL scores.

It evaluates the policy its input produced, i.e. the *final* policy of that stage, and labels
every score ``final/...``; a stage that also keeps a best checkpoint would be evaluated by a
second ``evaluate`` stage whose scores are labelled ``best/...`` (``label = "best"``). DRCORL's
best iterate by the offline model estimate is evaluated that way too: ``label = "best_offline"``,
``policy_output = "best_offline_policy"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from corl.errors import ConfigError
from corl.eval.rollout import rollout
from corl.eval.scores import summarize
from corl.files import atomic_write
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage


@dataclass
class EvaluateConfig:
    episodes: int = 20
    num_envs: int = 4  # synchronous vector envs; batched policy inference over them
    cost_limit: float | None = None  # None: the limit the policy was trained for, else the task's
    label: str = "final"  # which policy this is: "final", "best" or "best_offline" (prefix of every score)
    policy_output: str = field(default="policy", metadata={"key": "if_set"})
    """Which policy spec of the input artifact: ``policy`` (its final policy) or another one it
    publishes, e.g. ``best_offline_policy`` (DRCORL's best iterate by the model estimate)."""
    #: return/cost targets of a return-conditioned policy (CDT), raw units; None = the policy's own
    target_return: float | None = field(default=None, metadata={"key": "if_set"})
    target_cost: float | None = field(default=None, metadata={"key": "if_set"})

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.num_envs < 1:
            raise ValueError("episodes and num_envs must be >= 1")
        if self.label not in ("final", "best", "best_offline"):
            raise ValueError(f"label must be 'final', 'best' or 'best_offline', got {self.label!r}")


@register_stage(
    "evaluate",
    config=EvaluateConfig,
    version="1",
    inputs=("policy",),
    description="simulator rollouts with DSRL-normalized reward and cost",
)
def evaluate_stage(ctx: StageContext) -> StageResult:
    cfg: EvaluateConfig = ctx.config
    policy_art = ctx.input("policy")
    if cfg.policy_output == "policy":
        policy_fn = ctx.load_policy("policy")
    else:
        from corl.errors import CorlError
        from corl.store.policies import load_policy_fn

        spec = policy_art.outputs.get(cfg.policy_output)
        if not isinstance(spec, dict) or "file" not in spec:
            raise CorlError(
                f"stage {ctx.name!r}: input {policy_art.dir.name} ({policy_art.kind}) publishes no "
                f"{cfg.policy_output!r} policy (policy_output); it has {sorted(policy_art.outputs)}"
            )
        policy_fn = load_policy_fn(policy_art.dir, spec, ctx.device)
    if cfg.target_return is not None or cfg.target_cost is not None:
        if not hasattr(policy_fn, "set_targets"):
            raise ConfigError(
                f"evaluate.target_return/target_cost: the policy of stage "
                f"{policy_art.outputs.get('label')!r} takes no targets (only CDT does)"
            )
        policy_fn.set_targets(cfg.target_return, cfg.target_cost)
    limit = cfg.cost_limit
    if limit is None:
        limit = policy_art.outputs.get("cost_limit", ctx.task.cost_limit)
    ctx.progress(0, cfg.episodes)
    result = rollout(
        ctx.task,
        policy_fn,
        cfg.episodes,
        seed=ctx.seed,
        num_envs=cfg.num_envs,
        device=ctx.device,
        progress=lambda done, total: ctx.progress(done, total),
    )
    metrics = summarize(
        ctx.task,
        result.reward,
        result.cost,
        result.length,
        limit,
        extra_limits=ctx.task.cost_limits,
        prefix=f"{cfg.label}/",
    )
    episodes = {
        "reward": result.reward.tolist(),
        "cost": result.cost.tolist(),
        "length": result.length.tolist(),
        "cost_limit": limit,
        "seed": ctx.seed,
        "policy_artifact": policy_art.dir.name,
        "policy_label": policy_art.outputs.get("label"),
        "policy_output": cfg.policy_output,
    }
    atomic_write(ctx.out_dir / "episodes.json", json.dumps(episodes, indent=1).encode())
    return StageResult(
        metrics=metrics, outputs={"cost_limit": limit, "label": cfg.label, "policy": policy_art.outputs.get("label")}
    )
