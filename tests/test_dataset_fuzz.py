"""Fuzz: generated malformed DSRL files through ``datasets validate``, ``datasets info`` and
``run``; every one ends in exit 2 and one line naming the file, never a traceback or a
"valid" (issue 14, items 4 and the fuzz deliverable). Positions and values are drawn from a
seeded generator, so a failure is reproducible by its case id."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _cli_util import assert_one_line, corl  # noqa: E402
from _pipeline_util import TASK, TRAIN_ONLY_SPEC, write_spec  # noqa: E402
from conftest import make_arrays  # noqa: E402

FLOAT_KEYS = ("observations", "actions", "rewards", "costs", "next_observations")
ALL_KEYS = FLOAT_KEYS + ("terminals", "timeouts")
Arrays = dict[str, np.ndarray]


def _write(path: Path, arrays: Arrays, extra: Callable[[h5py.File], None] | None = None) -> None:
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value)
        if extra is not None:
            extra(handle)


def _base(rng: np.random.Generator) -> Arrays:
    return make_arrays(
        n_episodes=int(rng.integers(2, 5)), length=25, obs_dim=8, act_dim=2, seed=int(rng.integers(1000))
    )


def _row(rng, arrays: Arrays) -> int:
    return int(rng.integers(0, len(arrays["rewards"])))


# Each mutation writes a malformed file; ``task_only`` ones are valid on their own and wrong
# only for the task (corl validates what the file implies without a task).
def m_missing_key(path, rng, a):
    del a[ALL_KEYS[int(rng.integers(len(ALL_KEYS)))]]
    _write(path, a)


def m_length_mismatch(path, rng, a):
    key = ALL_KEYS[int(rng.integers(len(ALL_KEYS)))]
    a[key] = a[key][: -int(rng.integers(1, 5))]
    _write(path, a)


def m_nan(path, rng, a):
    key = FLOAT_KEYS[int(rng.integers(len(FLOAT_KEYS)))]
    a[key][_row(rng, a)] = np.nan
    _write(path, a)


def m_inf(path, rng, a):
    key = FLOAT_KEYS[int(rng.integers(len(FLOAT_KEYS)))]
    a[key][_row(rng, a)] = -np.inf if rng.random() < 0.5 else np.inf
    _write(path, a)


def m_float32_overflow(path, rng, a):
    key = ("observations", "rewards", "next_observations")[int(rng.integers(3))]
    a[key] = a[key].astype(np.float64)
    a[key][_row(rng, a)] = 1e39  # finite as float64, inf as float32 (what training sees)
    _write(path, a)


def m_wrong_rank(path, rng, a):
    choice = int(rng.integers(3))
    if choice == 0:
        a["rewards"] = np.stack([a["rewards"]] * 2, axis=1)
    elif choice == 1:
        a["observations"] = a["observations"][:, 0]
    else:
        a["actions"] = a["actions"][:, :, None].repeat(2, axis=2)
    _write(path, a)


def m_truncated(path, rng, a):
    _write(path, a)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * rng.uniform(0.05, 0.9))])


def m_string_data(path, rng, a):
    key = ALL_KEYS[int(rng.integers(len(ALL_KEYS)))]
    a[key] = np.array([b"x"] * len(a[key]))
    _write(path, a)


def m_group_for_dataset(path, rng, a):
    key = ALL_KEYS[int(rng.integers(len(ALL_KEYS)))]
    value = a.pop(key)
    _write(path, a, lambda h: h.create_group(key).create_dataset("data", data=value))


def m_negative_cost(path, rng, a):
    a["costs"][_row(rng, a)] = -float(rng.uniform(0.5, 400))
    _write(path, a)


def m_fractional_flag(path, rng, a):
    key = ("terminals", "timeouts")[int(rng.integers(2))]
    a[key] = a[key].astype(np.float32)
    a[key][_row(rng, a)] = 0.5
    _write(path, a)


def m_huge_rows(path, rng, a):
    n = a["observations"].shape[0]
    a.pop("observations")
    _write(path, a, lambda h: h.create_dataset("observations", shape=(2**31, 8), dtype="f4"))
    del n


def m_huge_columns(path, rng, a):
    n = a["observations"].shape[0]
    a.pop("next_observations")
    _write(path, a, lambda h: h.create_dataset("next_observations", shape=(n, 2**28), dtype="f4"))


def m_declared_not_stored(path, rng, a):  # a header with no data behind it (reads as zeros)
    key = FLOAT_KEYS[int(rng.integers(len(FLOAT_KEYS)))]
    value = a.pop(key)
    _write(path, a, lambda h: h.create_dataset(key, shape=value.shape, dtype="f4"))


def m_empty_file(path, rng, a):
    path.write_bytes(b"")


def m_not_hdf5(path, rng, a):
    path.write_bytes(rng.bytes(int(rng.integers(10, 5000))))


def m_bad_metadata(path, rng, a):
    value = (b"\xff\xfe garbage", "[1, 2]", "{not json")[int(rng.integers(3))]
    _write(
        path, a, lambda h: h.attrs.__setitem__("corl_metadata", np.void(value) if isinstance(value, bytes) else value)
    )


def m_zero_rows(path, rng, a):
    _write(path, {k: v[:0] for k, v in a.items()})


def m_complex(path, rng, a):
    a["rewards"] = a["rewards"].astype(np.complex64)
    _write(path, a)


def m_next_obs_dim(path, rng, a):
    a["next_observations"] = a["next_observations"][:, :-1]
    _write(path, a)


def m_no_episode_end(path, rng, a):
    a["terminals"][:] = False
    a["timeouts"][:] = False
    _write(path, a)


def m_actions_outside_box(path, rng, a):  # task_only: the box is the task's
    a["actions"][_row(rng, a), int(rng.integers(2))] = float(rng.choice([-1, 1]) * rng.uniform(5, 1e6))
    _write(path, a)


def m_obs_dim_for_task(path, rng, a):  # task_only
    a["observations"] = a["observations"][:, :5].copy()
    a["next_observations"] = a["next_observations"][:, :5].copy()
    _write(path, a)


MUTATIONS = {name[2:]: fn for name, fn in dict(globals()).items() if name.startswith("m_")}
TASK_ONLY = {"actions_outside_box", "obs_dim_for_task"}
CASES = [pytest.param(name, seed, id=f"{name}-{seed}") for name in sorted(MUTATIONS) for seed in (0, 1)]


@pytest.mark.parametrize("name,seed", CASES)
def test_malformed_file_is_one_line_everywhere(name, seed, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng([seed, sorted(MUTATIONS).index(name)])
    path = tmp_path / f"{name}-{seed}.hdf5"
    MUTATIONS[name](path, rng, _base(rng))
    needles = (str(path),)
    # validate / info without a task: what the file implies about itself
    for command in (["datasets", "validate", str(path)], ["datasets", "info", str(path)]):
        result = corl(capsys, monkeypatch, *command)
        if name in TASK_ONLY:
            assert result.code == 0, result.err
        else:
            assert_one_line(result, *needles)
    # with the task, and through a run (which fails in its dataset stage, before training)
    assert_one_line(corl(capsys, monkeypatch, "datasets", "validate", str(path), "--task", TASK), *needles)
    spec = write_spec(tmp_path, TRAIN_ONLY_SPEC)
    result = corl(capsys, monkeypatch, "run", str(spec), "--task", TASK, "--dataset", str(path))
    assert_one_line(result, *needles)
    assert "bc" not in {p.name.split("-")[0] for p in (tmp_path / "checkpoints" / TASK).glob("bc-*/manifest.json")}


def test_the_reported_bad_values_name_what_is_wrong(tmp_path):
    """The issue's instances, with the words a user needs to fix them."""
    from corl.data.formats.dsrl import read_dsrl
    from corl.errors import DatasetError

    cases = {
        "negative_cost": "costs count constraint violations and must be >= 0",
        "float32_overflow": "overflows float32",
        "fractional_flag": "expected 0/1 flags",
        "huge_rows": "more than the",
        "huge_columns": "more than the",
        "declared_not_stored": "but the file stores only 0 bytes",
        "actions_outside_box": "outside the task's action box",
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.hdf5"
        rng = np.random.default_rng(0)
        MUTATIONS[name](path, rng, _base(rng))
        with pytest.raises(DatasetError) as info:
            read_dsrl(path, obs_dim=8, act_dim=2)
        assert text in str(info.value), (name, str(info.value))
