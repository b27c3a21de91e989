"""FISOR (feasibility-guided safe offline RL): see :mod:`corl.algos.fisor.fisor`."""

from corl.algos.fisor.fisor import FISORConfig, FISORLearner, FISORPolicy, constraint_signal

__all__ = ["FISORConfig", "FISORLearner", "FISORPolicy", "constraint_signal"]
