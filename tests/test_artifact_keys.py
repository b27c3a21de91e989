"""Artifact keys of existing settings stay the same when the code around them is reshaped.

The expected keys below were computed on main before the learner configs moved beside their
learners (issue 16: stage configs subclass MICROConfig, DynamicsConfig, MICEConfig, ...).
A key is a pure function of the stage kind, version, resolved config, inputs and dataset
hash, so this test only plans (nothing trains). A deliberate change of a preset or a stage
version changes a key here: update the expected value in the same commit, and say so.

To print the current keys: ``python tests/test_artifact_keys.py``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "datasets" / "samples" / "OfflineCarCircle-v0.hdf5"
ONLINE = {"cvpo": "SafetyCarCircle-v0", "mice": "SafetyCarCircle-v0"}

# pipeline -> stage -> key, for the quick preset at seed 0 on OfflineCarCircle-v0 (the bundled
# sample) or, for the online pipelines, SafetyCarCircle-v0.
EXPECTED: dict[str, dict[str, str]] = {
    "bc": {"bc": "68b4436a111c", "dataset": "4b3cbdfdc110", "evaluate": "8fa9b7365db8"},
    "bcql": {"bcql": "d965dcf47cf9", "dataset": "4b3cbdfdc110", "evaluate": "2bf995ca4942", "vae": "30b53426e9a2"},
    "bearl": {"bearl": "1061b455eabb", "dataset": "4b3cbdfdc110", "evaluate": "aa9c21f8df8d", "vae": "30b53426e9a2"},
    "cdt": {
        "cdt": "b71f6fc3c125",
        "dataset": "4b3cbdfdc110",
        "evaluate": "b4d676d713a9",
    },  # cdt stage version 2 (OSRL loss reductions)
    "coptidice": {"coptidice": "9ccebb69aefc", "dataset": "4b3cbdfdc110", "evaluate": "28a23fa2f7d9"},
    "cpq": {"cpq": "421b259e57ce", "dataset": "4b3cbdfdc110", "evaluate": "cc4f309f2f5c", "vae": "30b53426e9a2"},
    "cvpo": {"export": "b2387b5a0a6f", "train": "0ad4144750c2"},
    "drcorl": {
        "behavior": "cd2123293bd9",
        "critics": "6c1bd090f3f0",
        "dataset": "4b3cbdfdc110",
        "dynamics": "0f5906e9a970",
        "evaluate": "24f3a8a012b2",
        "evaluate_best_offline": "294d45beb6e8",
        "policy": "c3597f9e34cc",
    },  # session 8: the quick preset's policy settings changed (earlier stages keep their keys)
    "fisor": {"dataset": "4b3cbdfdc110", "evaluate": "21168367f046", "fisor": "d28bfe0e3c69"},
    "mice": {"export": "d6af0631b224", "train": "37b992ec54ba"},
    "micro": {
        "dataset": "4b3cbdfdc110",
        "dynamics": "0f5906e9a970",
        "evaluate": "e9fcbfd27e3d",
        "policy": "9a198f76e778",
    },
}


def quick_keys(name: str, root: Path, dataset: Path) -> dict[str, str]:
    from corl.pipeline.runner import RunRequest, plan_pipeline

    task = ONLINE.get(name, "OfflineCarCircle-v0")
    req = RunRequest(
        pipeline=name,
        task=task,
        preset="quick",
        seed=0,
        device="cpu",
        dataset=None if name in ONLINE else str(dataset),
        offline=True,
        checkpoints=str(root),
    )
    return {s.name: s.key for s in plan_pipeline(req).stages}


@pytest.fixture(scope="module")
def sample_copy(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("keys")
    shutil.copyfile(SAMPLE, tmp / SAMPLE.name)
    return tmp / SAMPLE.name


@pytest.fixture
def keyed_env(sample_copy, tmp_path, monkeypatch):
    """A fixed dataset store path (the export stage keys its destination) and the sample."""
    monkeypatch.setenv("CORL_DATASETS", "/corl-key-test/datasets")
    monkeypatch.delenv("CORL_PIPELINES", raising=False)
    return sample_copy.parent / "checkpoints", sample_copy


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quick_preset_keys_are_unchanged(name, keyed_env):
    root, dataset = keyed_env
    assert quick_keys(name, root, dataset) == EXPECTED[name]


def test_a_newly_exposed_learner_option_keys_only_when_set(keyed_env):
    """``mice_train`` gained every MICEConfig field as a key; at its default it stays out of the key."""
    from corl.pipeline.runner import RunRequest, plan_pipeline

    root, _ = keyed_env

    def key(*overrides: str) -> str:
        req = RunRequest(
            pipeline="mice",
            task="SafetyCarCircle-v0",
            preset="quick",
            overrides=list(overrides),
            device="cpu",
            checkpoints=str(root),
        )
        return plan_pipeline(req).stage("train").key

    assert key("train.ppo_clip=0.2") == EXPECTED["mice"]["train"]  # the default
    assert key("train.ppo_clip=0.3") != EXPECTED["mice"]["train"]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["CORL_DATASETS"] = "/corl-key-test/datasets"
        print(json.dumps({n: quick_keys(n, Path(tmp), SAMPLE) for n in sorted(EXPECTED)}, indent=4, sort_keys=True))
        sys.exit(0)
