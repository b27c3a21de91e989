"""Shared network blocks, defined once for every method (no method logic, no cache)."""

from corl.nn.critics import EnsembleQ, ValueFunction, soft_update
from corl.nn.mlp import MLP, EnsembleLinear, EnsembleMLP
from corl.nn.policies import DeterministicPolicy, TanhGaussianPolicy

__all__ = ["MLP", "EnsembleLinear", "EnsembleMLP", "EnsembleQ", "ValueFunction", "soft_update",
           "TanhGaussianPolicy", "DeterministicPolicy"]
