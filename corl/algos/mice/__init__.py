"""MICE: Memory-driven Intrinsic Cost Estimation on a CPO base (algorithms.md §4)."""

from corl.algos.mice.config import MICEConfig
from corl.algos.mice.intrinsic import IntrinsicCostModule, RandomProjection, kernel_pseudo_count
from corl.algos.mice.learner import (
    MICELearner,
    MICETrainer,
    RunningNormalizer,
    conjugate_gradient,
    cpo_step_direction,
    flat_grad,
)
from corl.algos.mice.memory import FlashbulbMemory
from corl.algos.mice.value import CorrectedCostValue, bias_corrected_cost_value, discounted_cumsum, gae

__all__ = [
    "MICEConfig",
    "IntrinsicCostModule",
    "RandomProjection",
    "kernel_pseudo_count",
    "MICELearner",
    "MICETrainer",
    "RunningNormalizer",
    "conjugate_gradient",
    "cpo_step_direction",
    "flat_grad",
    "FlashbulbMemory",
    "CorrectedCostValue",
    "bias_corrected_cost_value",
    "discounted_cumsum",
    "gae",
]
