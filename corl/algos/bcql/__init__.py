"""BCQ-Lag (OSRL's Lagrangian BCQ): see :mod:`corl.algos.bcql.bcql`."""

from corl.algos.bcql.bcql import BCQLConfig, BCQLLearner, BCQPolicy

__all__ = ["BCQLConfig", "BCQLLearner", "BCQPolicy"]
