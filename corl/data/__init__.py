"""Datasets: the in-memory TransitionDataset, the on-disk formats, validation and lookup."""

from corl.data.dataset import TRANSITION_KEYS, TransitionDataset

__all__ = ["TransitionDataset", "TRANSITION_KEYS"]
