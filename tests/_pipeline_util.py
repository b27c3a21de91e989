"""Helpers for the pipeline tests: a tiny real DSRL file and a tiny spec written in tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from corl.data.dataset import TransitionDataset
from corl.data.formats.dsrl import write_dsrl

TASK = "OfflineCarCircle-v0"
REPO = Path(__file__).resolve().parents[1]

TINY_SPEC = """
description = "test pipeline"

[checkpoint]
every_steps = 50
every_seconds = 600.0
log_every = 10

[stages.dataset]
kind = "dataset"

[stages.bc]
kind = "bc"
inputs = ["dataset"]
mode = "all"
steps = 60
batch_size = 32
hidden = [16, 16]

[stages.evaluate]
kind = "evaluate"
inputs = { policy = "bc" }
episodes = 1
num_envs = 1

[presets.tiny.bc]
steps = 30
"""

TRAIN_ONLY_SPEC = TINY_SPEC.split("[stages.evaluate]")[0]


def write_dataset(tmp_path: Path, seed: int = 0, name: str = "tiny.hdf5") -> Path:
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_arrays

    arrays = make_arrays(n_episodes=6, length=25, obs_dim=8, act_dim=2, seed=seed)
    ds = TransitionDataset.from_numpy(arrays, {"task": TASK, "source": "test"})
    return write_dsrl(ds, tmp_path / name)


def write_spec(tmp_path: Path, text: str = TINY_SPEC, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO)
    env["COLUMNS"] = "200"
    return env


def corl_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "corl", *args]


def run(spec: Path, dataset: Path, overrides: tuple[str, ...] = (), callbacks=None, **kwargs):
    """Run a spec in-process on the test dataset; returns the RunResult."""
    from corl.pipeline.runner import RunRequest, run_pipeline

    req = RunRequest(
        pipeline=str(spec), task=TASK, dataset=str(dataset), overrides=list(overrides), device="cpu", **kwargs
    )
    return run_pipeline(req, callbacks)


def statuses(result) -> dict[str, str]:
    return {o.name: o.status for o in result.stages}
