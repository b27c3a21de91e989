"""Every way a dataset file can be wrong ends in one line that names the file (and the key)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from conftest import make_arrays

from corl.data.dataset import TransitionDataset
from corl.data.formats.d4rl import read_d4rl
from corl.data.formats.dsrl import read_dsrl, write_dsrl
from corl.errors import DatasetError
from corl.tasks import get_task

READERS = [pytest.param(read_dsrl, id="dsrl"), pytest.param(read_d4rl, id="d4rl")]


def write_raw(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value)
    return path


def error_of(reader: Callable, path: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        reader(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def broken(arrays: dict[str, np.ndarray], case: str) -> dict[str, np.ndarray]:
    n = arrays["observations"].shape[0]
    if case == "wrong_shape":
        arrays["rewards"] = np.zeros((n, 2), dtype=np.float32)
    elif case == "length_mismatch":
        arrays["actions"] = arrays["actions"][:-3]
    elif case == "nan":
        arrays["rewards"][7] = np.nan
    elif case == "inf":
        arrays["observations"][5, 1] = np.inf
    elif case == "no_episode_ends":
        arrays["terminals"][:] = False
        arrays["timeouts"][:] = False
    elif case == "obs_1d":
        arrays["observations"] = arrays["observations"][:, 0]
    elif case == "text_flags":
        arrays["timeouts"] = np.array([b"x"] * n)
    return arrays


CASES = {
    "wrong_shape": ("rewards", "expected a 1-D array"),
    "length_mismatch": ("actions", "differs from observations'"),
    "nan": ("rewards", "NaN or inf (first at row 7)"),
    "inf": ("observations", "NaN or inf (first at row 5)"),
    "no_episode_ends": ("terminals", "no episode ends"),
    "obs_1d": ("observations", "expected a 2-D array"),
    "text_flags": ("timeouts", "expected bool or 0/1 flags"),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_arrays(tmp_path, reader, case):
    path = write_raw(tmp_path / f"{case}.hdf5", broken(make_arrays(), case))
    key, text = CASES[case]
    message = error_of(reader, path)
    assert f"key '{key}'" in message and text in message


@pytest.mark.parametrize(
    "reader, key", [(read_dsrl, "costs"), (read_dsrl, "next_observations"), (read_d4rl, "timeouts")]
)
def test_missing_key(tmp_path, reader, key):
    arrays = make_arrays()
    arrays.pop(key)
    message = error_of(reader, write_raw(tmp_path / "missing.hdf5", arrays))
    assert f"key '{key}': missing" in message
    assert ("D4RL" if reader is read_d4rl else "DSRL") in message


@pytest.mark.parametrize("reader", READERS)
def test_obs_dim_mismatch_with_task(tmp_path, reader):
    task = get_task("OfflineCarCircle-v0")
    path = write_raw(tmp_path / "dims.hdf5", make_arrays(obs_dim=5))
    message = error_of(reader, path, obs_dim=task.obs_dim, act_dim=task.act_dim)
    assert "key 'observations'" in message and "does not match the task's 8" in message
    path = write_raw(tmp_path / "acts.hdf5", make_arrays(act_dim=3))
    message = error_of(reader, path, obs_dim=task.obs_dim, act_dim=task.act_dim)
    assert "key 'actions'" in message and "task's 2" in message


@pytest.mark.parametrize("reader", READERS)
def test_text_file_renamed_hdf5(tmp_path, reader):
    path = tmp_path / "notes.hdf5"
    path.write_text("observations,actions\n1,2\n")
    assert "not an HDF5 file" in error_of(reader, path)


@pytest.mark.parametrize("reader", READERS)
def test_truncated_hdf5(tmp_path, reader):
    full = write_dsrl(TransitionDataset.from_numpy(make_arrays(n_episodes=20, length=50)), tmp_path / "full.hdf5")
    data = full.read_bytes()
    path = tmp_path / "cut.hdf5"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in error_of(reader, path)


@pytest.mark.parametrize("reader", READERS)
def test_corrupt_chunk_names_the_key(tmp_path, reader):
    path = write_dsrl(TransitionDataset.from_numpy(make_arrays(n_episodes=20, length=50)), tmp_path / "c.hdf5")
    with h5py.File(path, "r") as handle:
        chunk = handle["rewards"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[chunk.byte_offset : chunk.byte_offset + chunk.size] = bytes(chunk.size)
    path.write_bytes(bytes(raw))
    message = error_of(reader, path)
    assert "key 'rewards' unreadable" in message


@pytest.mark.parametrize("reader", READERS)
def test_directory_and_missing_file(tmp_path, reader):
    folder = tmp_path / "data.hdf5"
    folder.mkdir()
    assert "is a directory" in error_of(reader, folder)
    assert "no such file" in error_of(reader, tmp_path / "absent.hdf5")


def test_group_where_a_dataset_belongs(tmp_path):
    arrays = make_arrays()
    arrays.pop("rewards")
    path = write_raw(tmp_path / "group.hdf5", arrays)
    with h5py.File(path, "a") as handle:
        handle.create_group("rewards")
    assert "key 'rewards'" in error_of(read_d4rl, path)
    assert "key 'rewards'" in error_of(read_dsrl, path)
