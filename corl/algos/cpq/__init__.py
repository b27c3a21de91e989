"""CPQ (constraints penalized Q-learning, OSRL's version): see :mod:`corl.algos.cpq.cpq`."""

from corl.algos.cpq.cpq import CPQConfig, CPQLearner

__all__ = ["CPQConfig", "CPQLearner"]
