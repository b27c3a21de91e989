"""Caching: a second run does no work, --set reruns exactly the affected stages, corrupt
artifacts are rebuilt, run records and cache management."""

from __future__ import annotations

import json
import os

import torch
from _pipeline_util import TASK, TRAIN_ONLY_SPEC, run, statuses, write_dataset, write_spec
from typer.testing import CliRunner

from corl.cli import app
from corl.pipeline.runner import RunRequest, plan_pipeline
from corl.store import artifacts as art


def test_second_run_is_cached_and_set_reruns_only_dependents(tmp_path):
    spec, data = write_spec(tmp_path), write_dataset(tmp_path)
    first = run(spec, data)
    assert statuses(first) == {"dataset": "ran", "bc": "ran", "evaluate": "ran"}
    bc_dir = first.stages[1].dir
    manifest = json.loads((bc_dir / "manifest.json").read_text())
    for field in (
        "config",
        "key",
        "inputs",
        "dataset_sha256",
        "seed",
        "versions",
        "wall_time",
        "final_metrics",
        "files",
    ):
        assert field in manifest
    assert manifest["steps"] == 60 and "policy.pt" in manifest["files"]
    assert (bc_dir / "metrics.jsonl").read_text().count("\n") == 6  # log_every = 10
    assert not (bc_dir / "checkpoint.pt").exists()  # a done artifact keeps no checkpoint
    assert first.scores["final"]["evaluate/normalized_reward"] == first.stages[2].metrics["final/normalized_reward"]
    assert first.scores["best"] == {}

    second = run(spec, data)
    assert statuses(second) == {"dataset": "cached", "bc": "cached", "evaluate": "cached"}
    assert second.ran == []
    assert second.stages[2].metrics == first.stages[2].metrics

    only_eval = run(spec, data, ("evaluate.num_envs=2",))
    assert statuses(only_eval) == {"dataset": "cached", "bc": "cached", "evaluate": "ran"}
    bc_changed = run(spec, data, ("bc.lr=0.01",))
    assert statuses(bc_changed) == {"dataset": "cached", "bc": "ran", "evaluate": "ran"}
    assert bc_changed.stages[1].dir != bc_dir
    reseeded = run(spec, data, seed=1)
    assert statuses(reseeded) == {"dataset": "cached", "bc": "ran", "evaluate": "ran"}  # the dataset is seed-free


def test_same_seed_same_numbers_and_dry_run(tmp_path):
    spec, data = write_spec(tmp_path), write_dataset(tmp_path)
    a = run(spec, data)
    b = run(spec, data, checkpoints=str(tmp_path / "other-cache"))
    assert statuses(b) == {"dataset": "ran", "bc": "ran", "evaluate": "ran"}
    assert a.stages[2].metrics == b.stages[2].metrics  # same seed on a CPU: identical rollouts
    pa = torch.load(a.stages[1].dir / "policy.pt", weights_only=True)["state_dict"]
    pb = torch.load(b.stages[1].dir / "policy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(pa[k], pb[k]) for k in pa)

    req = RunRequest(pipeline=str(spec), task=TASK, dataset=str(data), overrides=["bc.steps=61"], device="cpu")
    plan = plan_pipeline(req)
    assert {s.name: s.status for s in plan.stages} == {"dataset": "cached", "bc": "run", "evaluate": "run"}
    assert not plan.stage("bc").dir.exists()


def test_corrupt_weights_are_detected_and_rebuilt(tmp_path):
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    first = run(spec, data)
    weights = first.stages[1].dir / "policy.pt"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk

    req = RunRequest(pipeline=str(spec), task=TASK, dataset=str(data), device="cpu")
    plan = plan_pipeline(req)
    assert plan.stage("bc").status == "corrupt" and "sha256 mismatch" in plan.stage("bc").reason

    messages = []

    class Recorder:
        def __getattr__(self, name):
            return lambda *a, **k: messages.append((name, a)) if name == "message" else None

    again = run(spec, data, callbacks=Recorder())
    assert statuses(again) == {"dataset": "cached", "bc": "ran"}
    assert any("corrupt" in a[0] for _, a in messages)
    assert weights.read_bytes() == good  # deterministic rebuild
    assert art.verify(first.stages[1].dir) is not None

    (first.stages[1].dir / "manifest.json").write_text("{not json")
    assert statuses(run(spec, data))["bc"] == "ran"


def test_directory_without_manifest_is_not_done(tmp_path):
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    first = run(spec, data)
    os.remove(first.stages[1].dir / "manifest.json")
    assert statuses(run(spec, data))["bc"] == "ran"


def test_cli_run_runs_and_cache_commands(tmp_path):
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["run", str(spec), "--task", TASK, "--dataset", str(data), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert "bc" in out.output and "ran" in out.output
    dry = runner.invoke(
        app, ["run", str(spec), "--task", TASK, "--dataset", str(data), "--dry-run", "--set", "bc.steps=7"]
    )
    assert dry.exit_code == 0 and "would run: bc" in dry.output
    runner.invoke(app, ["run", str(spec), "--task", TASK, "--dataset", str(data), "--set", "bc.steps=5"])
    root = art.cache_root()

    runs = runner.invoke(app, ["runs"])
    assert runs.exit_code == 0 and "tiny" in runs.output and "final" in runs.output and "best" in runs.output

    # an artifact no run record references: delete the record of the steps=5 run
    records = sorted((root / "runs").glob("*.json"), key=lambda p: json.loads(p.read_text())["started"])
    small = json.loads(records[-1].read_text())["stages"][1]["dir"]
    records[-1].unlink()
    ls = runner.invoke(app, ["cache", "ls"])
    assert ls.exit_code == 0 and small.split("/")[1] in ls.output
    dry = runner.invoke(app, ["cache", "prune", "--dry-run"])
    assert "would remove 1 artifacts" in dry.output and (root / small).exists()
    done = runner.invoke(app, ["cache", "prune"])
    assert "removed 1 artifacts" in done.output and not (root / small).exists()
    assert statuses(run(spec, data))["bc"] == "cached"  # referenced artifacts survive
