"""The ``bcql`` stage: BCQ-Lag (learner in ``corl.algos.bcql``) on the pre-fitted VAE."""

from __future__ import annotations

from corl.algos.bcql import BCQLConfig, BCQLLearner
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.vae import vae_policy_stage


@register_stage(
    "bcql",
    config=BCQLConfig,
    version="1",
    inputs=("dataset", "vae"),
    description="BCQ-Lag: VAE candidates + perturbation actor, PID-Lagrangian cost critic",
)
def bcql_stage(ctx: StageContext) -> StageResult:
    return vae_policy_stage(ctx, BCQLLearner, "policy", "bcq", "BCQ-Lag")
