"""Minari export/import with the real minari 0.4.3 package and its local store."""

from __future__ import annotations

import h5py
import minari
import numpy as np
import pytest
from conftest import make_arrays

from corl.data.dataset import TRANSITION_KEYS, TransitionDataset
from corl.data.formats.minari import export_minari, import_minari, minari_store_dir
from corl.errors import DatasetError
from corl.tasks import get_task

pytestmark = pytest.mark.filterwarnings("ignore:.*Box bound precision:UserWarning")


def chained(
    n_episodes: int = 3, length: int = 12, obs_dim: int = 8, act_dim: int = 2, seed: int = 1
) -> TransitionDataset:
    """Episodes whose next observation is the following row's observation (real rollouts look so)."""
    rng = np.random.default_rng(seed)
    parts = {k: [] for k in TRANSITION_KEYS}
    for ep in range(n_episodes):
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        parts["observations"].append(states[:-1])
        parts["next_observations"].append(states[1:])
        parts["actions"].append(rng.uniform(-1, 1, size=(length, act_dim)).astype(np.float32))
        parts["rewards"].append(rng.normal(size=length).astype(np.float32))
        parts["costs"].append(rng.integers(0, 2, size=length).astype(np.float32))
        term = np.zeros(length, dtype=bool)
        trunc = np.zeros(length, dtype=bool)
        (term if ep == 0 else trunc)[-1] = True  # one terminated, the rest truncated
        parts["terminals"].append(term)
        parts["timeouts"].append(trunc)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["timeouts"][-1] = False  # the last episode is cut off: neither flag
    return TransitionDataset.from_numpy(arrays, {"task": "OfflineCarCircle-v0", "source": "test"})


def assert_same(a: TransitionDataset, b: TransitionDataset) -> None:
    for key in TRANSITION_KEYS:
        left, right = getattr(a, key).numpy(), getattr(b, key).numpy()
        assert left.dtype == right.dtype and left.shape == right.shape, key
        assert np.array_equal(left, right), key


def test_export_loads_in_minari_and_round_trips(tmp_path):
    task = get_task("OfflineCarCircle-v0")
    data = chained()
    out = export_minari(data, "carcircle-corl-v0", task)
    assert str(minari_store_dir()) == str(tmp_path / "minari") and out.startswith(str(tmp_path / "minari"))

    loaded = minari.load_dataset("carcircle-corl-v0")
    assert loaded.total_episodes == data.num_episodes == 3
    assert loaded.total_steps == len(data) == 36
    assert "carcircle-corl-v0" in minari.list_local_datasets()
    episode = next(iter(loaded))
    assert episode.observations.shape == (13, 8) and episode.actions.shape == (12, 2)
    assert episode.infos["cost"].shape == (13,) and episode.infos["cost"][0] == 0.0
    np.testing.assert_array_equal(episode.infos["cost"][1:], data.costs[:12].numpy())
    assert bool(episode.terminations[-1]) and not bool(episode.truncations[-1])
    meta = loaded.storage.metadata
    assert meta["ref_max_score"] == pytest.approx(task.reward_max)
    assert list(meta["corl_cost_limits"]) == list(task.cost_limits)
    assert minari.get_normalized_score(loaded, np.array([task.reward_max]))[0] == pytest.approx(1.0)

    back = import_minari("carcircle-corl-v0")
    assert_same(data, back)
    assert back.metadata["format"] == "minari" and back.metadata["task"] == "OfflineCarCircle-v0"
    assert "cost_note" not in back.metadata


def test_discontinuous_next_observations_still_round_trip():
    data = TransitionDataset.from_numpy(make_arrays(n_episodes=2, length=5))  # random next obs
    export_minari(data, "stitched-corl-v0", None)
    loaded = minari.load_dataset("stitched-corl-v0")
    assert loaded.total_steps == 10 and loaded.total_episodes == 10  # split at every break
    assert loaded.storage.metadata["corl_extra_splits"] == 8
    assert_same(data, import_minari("stitched-corl-v0"))


def test_overwrite_needs_the_flag():
    data = chained()
    export_minari(data, "carcircle-corl-v0", None)
    with pytest.raises(DatasetError) as err:
        export_minari(chained(n_episodes=2), "carcircle-corl-v0", None)
    assert "already exists" in str(err.value) and "overwrite" in str(err.value) and "\n" not in str(err.value)
    assert minari.load_dataset("carcircle-corl-v0").total_episodes == 3  # untouched
    export_minari(chained(n_episodes=2), "carcircle-corl-v0", None, overwrite=True)
    assert minari.load_dataset("carcircle-corl-v0").total_episodes == 2
    assert sorted(p.name for p in minari_store_dir().iterdir()) == ["carcircle-corl-v0"]  # no temp dirs


def test_import_without_cost_reads_zeros_with_a_note():
    data = chained(n_episodes=2)
    export_minari(data, "nocost-corl-v0", None)
    with h5py.File(minari_store_dir() / "nocost-corl-v0" / "data" / "main_data.hdf5", "a") as handle:
        for name in handle:
            del handle[name]["infos"]  # as a Minari dataset recorded without infos looks
    back = import_minari("nocost-corl-v0")
    assert float(back.costs.abs().sum()) == 0.0
    assert "cost_note" in back.metadata
    np.testing.assert_array_equal(back.rewards.numpy(), data.rewards.numpy())


def test_bad_ids_and_missing_dataset_are_one_line_errors():
    with pytest.raises(DatasetError, match="expected the form"):
        export_minari(chained(), "no-version", None)
    with pytest.raises(DatasetError, match="not found in the local Minari store"):
        import_minari("absent-corl-v0")
