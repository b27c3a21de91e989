"""Datasets: the in-memory TransitionDataset, the on-disk formats, validation and lookup."""

from corl.data.dataset import TransitionDataset, TRANSITION_KEYS

__all__ = ["TransitionDataset", "TRANSITION_KEYS"]
