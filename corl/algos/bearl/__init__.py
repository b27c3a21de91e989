"""BEAR-Lag (OSRL's Lagrangian BEAR): see :mod:`corl.algos.bearl.bearl`."""

from corl.algos.bearl.bearl import BEARLConfig, BEARLLearner, mmd

__all__ = ["BEARLConfig", "BEARLLearner", "mmd"]
