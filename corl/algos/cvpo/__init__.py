"""CVPO: Constrained Variational Policy Optimization (algorithms.md §3)."""

from corl.algos.cvpo.config import CVPOConfig, original_config
from corl.algos.cvpo.learner import (
    CVPOLearner,
    CVPOTrainer,
    decoupled_kl,
    estep_dual,
    estep_weights,
    solve_dual_adam,
    solve_dual_slsqp,
    stepwise_threshold,
    weighted_mle_loss,
)

__all__ = [
    "CVPOConfig",
    "original_config",
    "CVPOLearner",
    "CVPOTrainer",
    "decoupled_kl",
    "estep_dual",
    "estep_weights",
    "solve_dual_adam",
    "solve_dual_slsqp",
    "stepwise_threshold",
    "weighted_mle_loss",
]
