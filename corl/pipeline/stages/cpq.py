"""The ``cpq`` stage: CPQ (learner in ``corl.algos.cpq``) on the pre-fitted VAE."""

from __future__ import annotations

from corl.algos.cpq import CPQConfig, CPQLearner
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.vae import vae_policy_stage


@register_stage(
    "cpq",
    config=CPQConfig,
    version="1",
    inputs=("dataset", "vae"),
    description="CPQ: VAE-detected OOD actions penalised in the cost critic, cost-gated actor",
)
def cpq_stage(ctx: StageContext) -> StageResult:
    return vae_policy_stage(ctx, CPQLearner, "actor", "tanh_gaussian", "CPQ")
