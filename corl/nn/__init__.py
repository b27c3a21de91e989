"""Shared network blocks, defined once for every method (no method logic, no cache)."""

from corl.nn.critics import EnsembleQ, ValueFunction, group_min, soft_update
from corl.nn.diffusion import ScoreNet, VPSchedule, denoising_loss, sample_actions
from corl.nn.losses import expectile_loss, pcgrad_merge, stepwise_threshold
from corl.nn.mlp import MLP, EnsembleLinear, EnsembleMLP
from corl.nn.policies import DeterministicPolicy, PerturbationActor, TanhGaussianPolicy
from corl.nn.vae import VAE, vae_loss

__all__ = [
    "MLP",
    "EnsembleLinear",
    "EnsembleMLP",
    "EnsembleQ",
    "ValueFunction",
    "soft_update",
    "TanhGaussianPolicy",
    "DeterministicPolicy",
    "PerturbationActor",
    "VAE",
    "vae_loss",
    "group_min",
    "ScoreNet",
    "VPSchedule",
    "denoising_loss",
    "sample_actions",
    "expectile_loss",
    "pcgrad_merge",
    "stepwise_threshold",
]
