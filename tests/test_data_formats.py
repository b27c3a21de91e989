"""Formats, filters and summaries on real HDF5 files (and dsrl's own loader as the referee)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_arrays

from corl.data.dataset import TRANSITION_KEYS, TransitionDataset
from corl.data.filtering import DensityFilterConfig, density_config_for, density_filter, safe_episodes
from corl.data.formats.d4rl import read_d4rl
from corl.data.formats.dsrl import read_dsrl, write_dsrl
from corl.data.hashing import file_sha256
from corl.data.stats import dataset_summary
from corl.errors import ConfigError
from corl.tasks import get_task


def write_h5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays as-is (keys may contain '/', making groups), the way D4RL's writer does."""
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            value = np.asarray(value)
            handle.create_dataset(key, data=value, compression="gzip" if value.ndim else None)
    return path


def episodes_dataset(rewards: list[float], costs: list[float], length: int = 2) -> TransitionDataset:
    """One episode per (reward return, cost return) pair, each of ``length`` steps."""
    n_ep = len(rewards)
    arrays = make_arrays(n_episodes=n_ep, length=length, obs_dim=3, act_dim=1)
    arrays["rewards"] = np.repeat(np.asarray(rewards, dtype=np.float32) / length, length)
    arrays["costs"] = np.repeat(np.asarray(costs, dtype=np.float32) / length, length)
    return TransitionDataset.from_numpy(arrays)


# ------------------------------------------------------------------------------ DSRL
def test_dsrl_file_loads_identically_in_dsrl(tmp_path):
    import gymnasium

    from corl.compat import import_dsrl

    import_dsrl()
    arrays = make_arrays(n_episodes=3, length=20, obs_dim=8, act_dim=2)
    arrays["terminals"][9] = True  # a terminal mid-episode too
    path = write_dsrl(TransitionDataset.from_numpy(arrays, {"task": "OfflineCarCircle-v0"}), tmp_path / "car.hdf5")

    env = gymnasium.make("OfflineCarCircle-v0", disable_env_checker=True).unwrapped
    theirs = env.get_dataset(h5path=str(path))
    ours = read_dsrl(path, obs_dim=8, act_dim=2)
    for key in TRANSITION_KEYS:
        np.testing.assert_array_equal(theirs[key], arrays[key], err_msg=key)
        np.testing.assert_array_equal(getattr(ours, key).numpy(), theirs[key], err_msg=key)
    for key in ("observations", "actions", "rewards", "costs", "next_observations"):
        assert theirs[key].dtype == np.float32
    assert theirs["terminals"].dtype == bool and theirs["timeouts"].dtype == bool
    assert ours.metadata["task"] == "OfflineCarCircle-v0"
    assert ours.metadata["sha256"] == file_sha256(path)


# ------------------------------------------------------------------------------ D4RL
def test_d4rl_with_next_observations(tmp_path):
    arrays = make_arrays(n_episodes=3, length=10, obs_dim=11, act_dim=3)
    arrays.pop("costs")
    arrays["rewards"] = arrays["rewards"][:, None]  # (N, 1), as some D4RL files have
    arrays["infos/qpos"] = np.zeros((30, 6), dtype=np.float32)
    arrays["metadata/algorithm"] = np.bytes_(b"SAC")
    arrays["metadata/iteration"] = np.int64(7)
    path = write_h5(tmp_path / "hopper_medium-v2.hdf5", arrays)

    ds = read_d4rl(path, obs_dim=11, act_dim=3)
    assert len(ds) == 30 and ds.num_episodes == 3
    np.testing.assert_array_equal(ds.next_observations.numpy(), arrays["next_observations"])
    np.testing.assert_array_equal(ds.rewards.numpy(), arrays["rewards"][:, 0])
    assert not ds.costs.any()
    meta = ds.metadata
    assert meta["format"] == "d4rl" and meta["path"] == str(path)
    assert meta["sha256"] == file_sha256(path)
    assert meta["next_observations"] == "stored" and meta["dropped_rows"] == 0
    assert meta["d4rl_metadata"] == {"algorithm": "SAC", "iteration": 7}
    assert meta["info_keys"] == ["qpos"]


def test_d4rl_derives_next_observations(tmp_path):
    # Episodes: [0..2] terminal, [3..6] timeout, [7] one-step timeout, [8..10] cut off by EOF.
    n = 11
    obs = np.repeat(np.arange(n, dtype=np.float32)[:, None], 2, axis=1)
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    terminals[2] = True
    timeouts[[2, 6, 7]] = True  # row 2 has both flags: a termination, kept
    arrays = dict(
        observations=obs,
        actions=np.arange(n, dtype=np.float32)[:, None],
        rewards=np.arange(n, dtype=np.float32),
        terminals=terminals,
        timeouts=timeouts,
        costs=np.ones(n, dtype=np.float32),
    )
    ds = read_d4rl(write_h5(tmp_path / "d.hdf5", arrays))

    kept = [0, 1, 2, 3, 4, 5, 8, 9]
    np.testing.assert_array_equal(ds.observations[:, 0].numpy(), kept)
    np.testing.assert_array_equal(ds.next_observations[:, 0].numpy(), [1, 2, 2, 4, 5, 6, 9, 10])
    np.testing.assert_array_equal(ds.rewards.numpy(), kept)
    np.testing.assert_array_equal(ds.terminals.numpy(), [0, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(ds.timeouts.numpy(), [0, 0, 1, 0, 0, 1, 0, 1])
    assert ds.costs.sum().item() == 8  # the file's costs key is used
    assert ds.metadata["next_observations"] == "derived" and ds.metadata["dropped_rows"] == 3
    returns = ds.episode_returns()
    np.testing.assert_array_equal(returns["length"], [3, 3, 2])
    np.testing.assert_array_equal(returns["reward"], [0 + 1 + 2, 3 + 4 + 5, 8 + 9])


# ------------------------------------------------------------------------------ filtering
def test_density_filter_caps_bins_and_drops_sparse_cells():
    rewards = [i * 0.5 for i in range(20)] + [60.0, 61.0, 62.0] + [100.0]
    costs = [0.0] * 20 + [10.0] * 3 + [0.0]
    ds = episodes_dataset(rewards, costs)
    config = DensityFilterConfig(cost_bins=2, reward_bins=2, max_per_bin=4, min_per_bin=1, seed=3)
    out, report = density_filter(ds, config)

    kept = out.episode_returns()
    assert out.num_episodes == 7 and len(out) == 14
    assert sorted(kept["reward"][kept["cost"] == 10].tolist()) == [60.0, 61.0, 62.0]
    assert (kept["reward"][kept["cost"] == 0] < 10).sum() == 4  # 20 capped to 4
    assert 100.0 not in kept["reward"]  # a lone episode in its cell is dropped
    assert report["episodes_before"] == 24 and report["episodes_after"] == 7
    assert report["cells"] == 3 and report["cells_capped"] == 1 and report["cells_dropped"] == 1
    assert report["dropped_cap"] == 16 and report["dropped_sparse"] == 1
    assert report["transitions_after"] == 14
    assert out.metadata["density_filter"]["seed"] == 3


def test_density_filter_is_reproducible_and_respects_limits():
    rng = np.random.default_rng(0)
    rewards = rng.gamma(2.0, 20.0, size=300).round(1).tolist()
    costs = rng.integers(0, 30, size=300).astype(float).tolist()
    ds = episodes_dataset(rewards, costs)
    config = DensityFilterConfig(cost_bins=5, reward_bins=5, max_per_bin=3, min_per_bin=1, seed=11)

    first, _ = density_filter(ds, config)
    second, _ = density_filter(ds, config)
    a, b = first.episode_returns(), second.episode_returns()
    np.testing.assert_array_equal(a["reward"], b["reward"])
    np.testing.assert_array_equal(first.observations.numpy(), second.observations.numpy())
    others = [
        density_filter(ds, DensityFilterConfig(5, 5, 3, 1, seed=s))[0].episode_returns()["reward"] for s in range(4)
    ]
    assert any(o.shape != a["reward"].shape or not np.array_equal(o, a["reward"]) for o in others)

    # Re-bin the survivors on the original grid: every cell holds 2..3 episodes.
    c_lo, c_hi, r_lo, r_hi = min(costs), max(costs), min(rewards), max(rewards)
    cb = np.clip(((a["cost"] - c_lo) // ((c_hi - c_lo) / 5)).astype(int), 0, 4)
    rb = np.clip(((a["reward"] - r_lo) // ((r_hi - r_lo) / 5)).astype(int), 0, 4)
    _, counts = np.unique(cb * 5 + rb, return_counts=True)
    assert counts.max() <= 3 and counts.min() >= 2


def test_density_config_from_dsrl_and_safe_episodes():
    cfg = density_config_for("OfflineCarCircle-v0", 0.75, seed=5)
    assert (cfg.cost_bins, cfg.reward_bins, cfg.max_per_bin, cfg.min_per_bin, cfg.seed) == (10, 50, 9, 2, 5)
    assert density_config_for("hopper-medium-v2") == DensityFilterConfig()
    with pytest.raises(ConfigError, match="available: 0.5, 0.75"):
        density_config_for("OfflineCarCircle-v0", 0.6)
    with pytest.raises(ConfigError):
        DensityFilterConfig(cost_bins=0)

    ds = episodes_dataset([1.0, 2.0, 3.0, 4.0], [0.0, 10.0, 10.5, 40.0])
    safe = safe_episodes(ds, 10.0)
    np.testing.assert_array_equal(safe.episode_returns()["cost"], [0.0, 10.0])
    assert safe.metadata["safe_episodes"]["episodes_after"] == 2


# ------------------------------------------------------------------------------ stats
def test_dataset_summary_matches_hand_computation():
    # Episode returns: reward 10, 20, 40; cost 0, 15, 30; lengths 2, 3, 4.
    obs_dim, act_dim = 8, 2
    lengths = [2, 3, 4]
    rewards = np.concatenate([np.full(2, 5.0), np.full(3, 20 / 3), np.full(4, 10.0)]).astype(np.float32)
    costs = np.concatenate([np.zeros(2), np.full(3, 5.0), np.full(4, 7.5)]).astype(np.float32)
    n = sum(lengths)
    timeouts = np.zeros(n, dtype=bool)
    timeouts[[1, 4]] = True
    terminals = np.zeros(n, dtype=bool)
    terminals[8] = True
    ds = TransitionDataset.from_numpy(
        dict(
            observations=np.zeros((n, obs_dim)),
            next_observations=np.zeros((n, obs_dim)),
            actions=np.zeros((n, act_dim)),
            rewards=rewards,
            costs=costs,
            terminals=terminals,
            timeouts=timeouts,
        )
    )
    s = dataset_summary(ds)
    assert (s["episodes"], s["transitions"], s["obs_dim"], s["act_dim"]) == (3, 9, 8, 2)
    assert (s["terminals"], s["timeouts"]) == (1, 2)
    expected_reward = {"min": 10, "25%": 15, "50%": 20, "75%": 30, "max": 40, "mean": 70 / 3}
    assert s["reward"] == pytest.approx(expected_reward, rel=1e-6)
    assert s["cost"] == pytest.approx({"min": 0, "25%": 7.5, "50%": 15, "75%": 22.5, "max": 30, "mean": 15})
    assert s["length"] == pytest.approx({"min": 2, "25%": 2.5, "50%": 3, "75%": 3.5, "max": 4, "mean": 3})
    assert "normalized_reward" not in s and "safe_fraction" not in s

    task = get_task("OfflineCarCircle-v0")
    rmin, rmax = 3.484419822692871, 534.3060913085938
    s = dataset_summary(ds, "OfflineCarCircle-v0")
    assert s["task"] == task.name and s["normalization"] == "DSRL" and s["cost_limit"] == 10.0
    assert s["normalized_reward"]["min"] == pytest.approx((10 - rmin) / (rmax - rmin), rel=1e-6)
    assert s["normalized_reward"]["max"] == pytest.approx((40 - rmin) / (rmax - rmin), rel=1e-6)
    assert s["normalized_cost"] == pytest.approx(
        {"min": 0, "25%": 0.75, "50%": 1.5, "75%": 2.25, "max": 3, "mean": 1.5}
    )
    assert s["safe_fraction"] == pytest.approx(1 / 3)

    s = dataset_summary(ds, task, cost_limit=0.0)  # eps = 1 when the limit is 0
    assert s["normalized_cost"]["min"] == 1.0 and s["normalized_cost"]["max"] == 31.0
    assert s["safe_fraction"] == pytest.approx(1 / 3)

    s = dataset_summary(ds, "hopper-medium-v2")
    assert s["normalization"] == "D4RL" and "cost_limit" not in s
    assert s["normalized_reward"]["50%"] == pytest.approx((20 + 20.272305) / (3234.3 + 20.272305))
