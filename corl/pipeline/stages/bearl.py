"""The ``bearl`` stage: BEAR-Lag (learner in ``corl.algos.bearl``) on the pre-fitted VAE."""

from __future__ import annotations

from corl.algos.bearl import BEARLConfig, BEARLLearner
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.vae import vae_policy_stage


@register_stage(
    "bearl",
    config=BEARLConfig,
    version="1",
    inputs=("dataset", "vae"),
    description="BEAR-Lag: MMD support matching to the VAE, PID-Lagrangian cost critic",
)
def bearl_stage(ctx: StageContext) -> StageResult:
    return vae_policy_stage(ctx, BEARLLearner, "actor", "tanh_gaussian", "BEAR-Lag")
