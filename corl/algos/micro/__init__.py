"""MICRO (IJCAI 2024): model-based offline RL with a conservative Bellman operator.

Pure learners, in the order a run uses them (algorithms.md §2):

* :mod:`.config` — :class:`DynamicsConfig`, :class:`MICROConfig`, :func:`paper_config`, :func:`paper_dynamics_config` (§2.8).
* :mod:`.dynamics` — :class:`GaussianEnsembleDynamics`, :class:`DynamicsLearner` (§2.2-2.3).
* :mod:`.termination` — :func:`termination_fn` per task (§2.3).
* :mod:`.rollouts` — :func:`model_rollout` (§2.4).
* :mod:`.policy` — :class:`MICROPolicyLearner` (robust SAC, §2.5-2.6), :func:`sample_mixed_batch`,
  :class:`MICROTrainer` (the loop).
"""

from corl.algos.micro.config import PAPER_PRESETS, DynamicsConfig, MICROConfig, paper_config, paper_dynamics_config
from corl.algos.micro.dynamics import DynamicsLearner, GaussianEnsembleDynamics, StandardScaler
from corl.algos.micro.policy import MICROPolicyLearner, MICROTrainer, real_transitions, sample_mixed_batch
from corl.algos.micro.rollouts import model_rollout
from corl.algos.micro.termination import termination_fn

__all__ = [
    "DynamicsConfig",
    "MICROConfig",
    "PAPER_PRESETS",
    "paper_config",
    "paper_dynamics_config",
    "GaussianEnsembleDynamics",
    "DynamicsLearner",
    "StandardScaler",
    "MICROPolicyLearner",
    "MICROTrainer",
    "sample_mixed_batch",
    "real_transitions",
    "model_rollout",
    "termination_fn",
]
