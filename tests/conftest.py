"""Shared test fixtures: tiny real datasets, isolated cache/dataset dirs, one torch thread."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_stores(tmp_path, monkeypatch):
    """Every test gets its own checkpoints/, datasets/ and DSRL/Minari stores."""
    monkeypatch.setenv("CORL_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("CORL_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path / "dsrl"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("CORL_OFFLINE", "1")


def make_arrays(
    n_episodes: int = 4, length: int = 25, obs_dim: int = 8, act_dim: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """Synthetic transitions with episode structure (for format/validation tests only)."""
    rng = np.random.default_rng(seed)
    n = n_episodes * length
    timeouts = np.zeros(n, dtype=bool)
    timeouts[length - 1 :: length] = True
    return dict(
        observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        costs=rng.integers(0, 2, size=n).astype(np.float32),
        next_observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        terminals=np.zeros(n, dtype=bool),
        timeouts=timeouts,
    )


@pytest.fixture
def arrays():
    return make_arrays()
