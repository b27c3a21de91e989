"""CDT (constrained decision transformer, OSRL's version): :mod:`corl.algos.cdt.cdt` (model and
learner) and :mod:`corl.algos.cdt.data` (trajectories, Pareto relabelling, windows)."""

from corl.algos.cdt.cdt import CDTConfig, CDTLearner, CDTModel, CDTPolicy
from corl.algos.cdt.data import Trajectories, WindowSampler, augment, pareto_front, split_trajectories

__all__ = [
    "CDTConfig",
    "CDTLearner",
    "CDTModel",
    "CDTPolicy",
    "Trajectories",
    "WindowSampler",
    "augment",
    "pareto_front",
    "split_trajectories",
]
