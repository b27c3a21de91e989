"""The dataset CLI on real simulator episodes and real files; user errors are one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

from corl.cli import app
from corl.compat import import_dsrl
from corl.data.dataset import TransitionDataset
from corl.data.formats.dsrl import read_dsrl, write_dsrl

runner = CliRunner()


def run_corl(*args: str) -> subprocess.CompletedProcess:
    """The installed entry point in a subprocess: what a user sees, exit code included."""
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "corl.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "car.hdf5"
    result = runner.invoke(
        app,
        [
            "datasets",
            "collect",
            "--task",
            "OfflineCarCircle-v0",
            "--policy",
            "scripted",
            "--episodes",
            "3",
            "--seed",
            "1",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_collect_records_real_episodes_that_dsrl_loads(collected):
    dataset = read_dsrl(collected)
    assert len(dataset) == 900 and dataset.num_episodes == 3
    assert dataset.timeouts.sum() == 3 and not dataset.terminals.any()
    assert dataset.metadata["collector"] == "planar-pursuit"
    # consecutive rows chain: next_observations[t] == observations[t + 1] inside an episode
    assert np.allclose(dataset.next_observations[:299].numpy(), dataset.observations[1:300].numpy())
    import_dsrl()
    env = gym.make("OfflineCarCircle-v0", disable_env_checker=True)
    theirs = env.unwrapped.get_dataset(h5path=str(collected))
    for key, ours in dataset.to_numpy().items():
        assert np.array_equal(theirs[key], ours), key


def test_scripted_collection_spans_safe_and_unsafe_behaviour(tmp_path):
    out = tmp_path / "spread.hdf5"
    result = runner.invoke(
        app,
        [
            "datasets",
            "collect",
            "--task",
            "OfflineCarCircle-v0",
            "--episodes",
            "2",
            "--seed",
            "3",
            "--aggressiveness",
            "0,0.1",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    safe = read_dsrl(out).episode_returns()
    result = runner.invoke(
        app,
        [
            "datasets",
            "collect",
            "--task",
            "OfflineCarCircle-v0",
            "--episodes",
            "2",
            "--seed",
            "3",
            "--aggressiveness",
            "0.9,1",
            "-o",
            str(out),
        ],
    )
    risky = read_dsrl(out).episode_returns()
    assert safe["cost"].max() < risky["cost"].min()
    assert safe["reward"].mean() < risky["reward"].mean()


def test_info_and_validate(collected):
    result = runner.invoke(app, ["datasets", "info", str(collected)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "900" in result.output and "episodes" in result.output
    result = runner.invoke(
        app, ["datasets", "validate", str(collected), "--task", "OfflineCarCircle-v0"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0 and "valid" in result.output


def test_random_policy_and_same_seed_reproduces(tmp_path):
    a, b = tmp_path / "a.hdf5", tmp_path / "b.hdf5"
    for out in (a, b):
        result = runner.invoke(
            app,
            [
                "datasets",
                "collect",
                "--task",
                "OfflineBallRun-v0",
                "--policy",
                "random",
                "--episodes",
                "2",
                "--seed",
                "7",
                "-o",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
    da, db = read_dsrl(a), read_dsrl(b)
    for key, value in da.to_numpy().items():
        assert np.array_equal(value, db.to_numpy()[key]), key


def _bad_files(tmp_path: Path, arrays) -> dict[str, Path]:
    good = write_dsrl(TransitionDataset.from_numpy(arrays), tmp_path / "good.hdf5")
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    missing = tmp_path / "missing.hdf5"
    import h5py

    with h5py.File(missing, "w") as handle:
        for key, value in arrays.items():
            if key != "costs":
                handle[key] = value
    text = tmp_path / "notes.hdf5"
    text.write_text("this is not an HDF5 file\n")
    return {"truncated": truncated, "missing key": missing, "text": text}


@pytest.mark.parametrize(
    "case,expected", [("truncated", "truncated"), ("missing key", "'costs'"), ("text", "not an HDF5 file")]
)
def test_bad_files_one_line_exit_2_no_traceback(tmp_path, arrays, case, expected):
    path = _bad_files(tmp_path, arrays)[case]
    proc = run_corl("datasets", "validate", str(path))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in lines[0] and expected in lines[0]


def test_unknown_task_and_bad_option_are_one_line_errors(tmp_path):
    proc = run_corl(
        "datasets", "collect", "--task", "OfflineCarCircel-v0", "--episodes", "1", "-o", str(tmp_path / "x.hdf5")
    )
    assert proc.returncode == 2 and "OfflineCarCircle-v0" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_corl(
        "datasets", "collect", "--task", "OfflineCarCircle-v0", "--policy", "expert", "-o", str(tmp_path / "x.hdf5")
    )
    assert proc.returncode == 2 and "--policy" in proc.stderr and "Traceback" not in proc.stderr


def test_tasks_table_lists_families(tmp_path):
    result = runner.invoke(app, ["tasks", "--kind", "dsrl"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "OfflineCarCircle-v0" in result.output and "bullet" in result.output and "29 tasks" in result.output
