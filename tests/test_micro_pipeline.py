"""The MICRO pipeline (dataset -> dynamics -> policy -> evaluate) at tiny sizes: it runs end to
end, caches, reuses the dynamics artifact when only policy keys change, and both training
stages resume after a SIGKILL (exactly: same weights as an uninterrupted run)."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import tomllib
import torch
from _pipeline_util import REPO, TASK, corl_cmd, run, statuses, subprocess_env, write_dataset, write_spec

from corl.algos.micro import PAPER_PRESETS, MICROConfig
from corl.errors import CorlError
from corl.pipeline.spec import load_spec
from corl.pipeline.stages.micro import MICROPolicyStageConfig, load_dynamics
from corl.store.artifacts import Artifact

SPEC = """
description = "micro test pipeline"

[checkpoint]
every_steps = 20
every_seconds = 600.0
log_every = 10

[stages.dataset]
kind = "dataset"

[stages.dynamics]
kind = "dynamics"
inputs = ["dataset"]
ensemble_size = 3
num_elites = 2
hidden = [16, 16]
weight_decays = [2.5e-5, 5e-5, 1e-4]
batch_size = 32
max_holdout = 30
max_epochs = 5
max_epochs_since_update = 1000

[stages.policy]
kind = "micro_policy"
inputs = ["dataset", "dynamics"]
hidden = [16, 16]
epochs = 3
steps_per_epoch = 20
rollout_freq = 10
rollout_batch_size = 32
rollout_length = 2
model_retain_epochs = 2
batch_size = 32
real_ratio = 0.25
num_samples = 2

[stages.evaluate]
kind = "evaluate"
inputs = { policy = "policy" }
episodes = 1
num_envs = 1
"""

TRAIN_ONLY = SPEC.split("[stages.evaluate]")[0]


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def _artifact(directory: Path) -> Artifact:
    return Artifact(directory, _manifest(directory))


def _state(path: Path, key: str = "state_dict") -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)[key]


def test_end_to_end_cached_and_policy_change_reuses_dynamics(tmp_path):
    spec, data = write_spec(tmp_path, SPEC, "micro.toml"), write_dataset(tmp_path)
    first = run(spec, data)
    assert statuses(first) == {"dataset": "ran", "dynamics": "ran", "policy": "ran", "evaluate": "ran"}
    dyn, pol, ev = first.stages[1], first.stages[2], first.stages[3]
    dman, pman = _manifest(dyn.dir), _manifest(pol.dir)
    assert dman["steps"] == 5 and dman["outputs"]["epochs"] == 5
    assert sorted(dman["files"]) == ["dynamics.pt", "metrics.jsonl"] and len(dman["outputs"]["elites"]) == 2
    assert dman["outputs"]["predict_cost"] is True  # a safety task: the model predicts cost
    model = load_dynamics(_artifact(dyn.dir), "cpu")
    assert model.elites.tolist() == dman["outputs"]["elites"]
    assert float(model.input_scaler.std.min()) > 0
    assert pman["steps"] == 60 and pman["outputs"]["policy"]["builder"] == "tanh_gaussian"
    assert pman["outputs"]["label"] == "MICRO" and pman["outputs"]["target_clamp_min"] is None
    assert "final/normalized_reward" in ev.metrics and "final/normalized_cost" in ev.metrics

    second = run(spec, data)
    assert set(statuses(second).values()) == {"cached"}
    assert second.stages[3].metrics == ev.metrics

    changed = run(spec, data, ("policy.rollout_length=3",))
    assert statuses(changed) == {"dataset": "cached", "dynamics": "cached", "policy": "ran", "evaluate": "ran"}
    assert changed.stages[1].dir == dyn.dir and changed.stages[2].dir != pol.dir
    assert _manifest(changed.stages[2].dir)["inputs"]["dynamics"]["dir"] == dyn.dir.name


def test_variants_plain_target_and_cost_aware(tmp_path):
    spec, data = write_spec(tmp_path, TRAIN_ONLY, "micro.toml"), write_dataset(tmp_path)
    base = run(spec, data)
    plain = run(spec, data, ("policy.robust_target=false",))
    assert statuses(plain) == {"dataset": "cached", "dynamics": "cached", "policy": "ran"}
    assert _manifest(plain.stages[2].dir)["outputs"]["label"] == "MICRO (plain target)"
    metrics = [json.loads(line) for line in (plain.stages[2].dir / "metrics.jsonl").read_text().splitlines()]
    assert all(m["micro/penalty_model"] == 0.0 for m in metrics)  # u = 0 without the robust target

    aware = run(spec, data, ("policy.cost_limit=5",))
    man = _manifest(aware.stages[2].dir)
    assert man["outputs"]["cost_limit"] == 5.0 and man["outputs"]["label"] == "MICRO cost-aware@5"
    last = json.loads((aware.stages[2].dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert "lagrange/value" in last and "cost_critic/loss" in last

    with pytest.raises(CorlError, match="predict_cost"):
        run(spec, data, ("policy.cost_limit=5", "dynamics.predict_cost=false"))
    assert base.stages[2].dir != aware.stages[2].dir


def _start(spec: Path, data: Path, tmp_path: Path, every: int) -> subprocess.Popen:
    return subprocess.Popen(
        corl_cmd(
            "run",
            str(spec),
            "--task",
            TASK,
            "--dataset",
            str(data),
            "--device",
            "cpu",
            "--checkpoint-every",
            str(every),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(tmp_path),
        cwd=tmp_path,
    )


def _kill_at_checkpoint(proc: subprocess.Popen, pattern: str, root: Path, timeout: float = 60.0) -> int:
    """SIGKILL ``proc`` as soon as a checkpoint matching ``pattern`` exists; its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(root.glob(f"{TASK}/{pattern}/checkpoint.pt"))
        if found:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            assert not (found[0].parent / "manifest.json").exists()
            return int(torch.load(found[0], weights_only=True)["step"])
        if proc.poll() is not None:
            raise AssertionError(f"run ended before a checkpoint: {proc.stdout.read()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no {pattern} checkpoint appeared")


def test_sigkill_resume_of_dynamics_and_policy_is_exact(tmp_path):
    epochs, per_epoch, policy_epochs = 150, 50, 6
    spec_text = (
        TRAIN_ONLY.replace("max_epochs = 5", f"max_epochs = {epochs}")
        .replace("steps_per_epoch = 20", f"steps_per_epoch = {per_epoch}")
        .replace("epochs = 3\n", f"epochs = {policy_epochs}\n")
    )
    spec, data = write_spec(tmp_path, spec_text, "micro.toml"), write_dataset(tmp_path)
    root = tmp_path / "checkpoints"

    # a checkpoint every dynamics epoch, then every 20 policy steps (the flag counts both)
    dyn_saved = _kill_at_checkpoint(_start(spec, data, tmp_path, 1), "dynamics-*", root)
    assert 0 < dyn_saved < epochs
    pol_saved = _kill_at_checkpoint(_start(spec, data, tmp_path, 20), "micro_policy-*", root)
    assert 0 < pol_saved < policy_epochs * per_epoch

    resumed = run(spec, data)
    assert statuses(resumed) == {"dataset": "cached", "dynamics": "cached", "policy": "ran"}
    dyn, pol = resumed.stages[1], resumed.stages[2]
    dman, pman = _manifest(dyn.dir), _manifest(pol.dir)
    assert dman["resumed_from"] == dyn_saved and dman["steps"] == epochs
    assert pol.resumed_from == pol_saved > 0 and pman["steps"] == policy_epochs * per_epoch
    dyn_steps = [json.loads(line)["step"] for line in (dyn.dir / "metrics.jsonl").read_text().splitlines()]
    assert dyn_steps == list(range(1, epochs + 1))  # one line per epoch, none twice after the resume

    reference = run(spec, data, checkpoints=str(tmp_path / "reference"))
    ref_dyn, ref_pol = _state(reference.stages[1].dir / "dynamics.pt"), _state(reference.stages[2].dir / "policy.pt")
    got_dyn, got_pol = _state(dyn.dir / "dynamics.pt"), _state(pol.dir / "policy.pt")
    assert all(torch.equal(ref_dyn[k], got_dyn[k]) for k in ref_dyn)
    assert all(torch.equal(ref_pol[k], got_pol[k]) for k in ref_pol)


def test_ctrl_c_in_dynamics_epochs_resumes_exactly(tmp_path, monkeypatch):
    """The dynamics stage drives the engine's one TrainLoop from fit's epoch hook: Ctrl-C at
    an epoch saves there, and the resumed run writes the same ensemble, one metric line per epoch."""
    from corl.pipeline.context import InterruptFlag, TrainLoop
    from corl.pipeline.progress import RunCallbacks
    from corl.pipeline.runner import RunInterrupted, RunRequest, run_pipeline

    class InterruptAt(RunCallbacks):
        def __init__(self, flag: InterruptFlag, epoch: int) -> None:
            self.flag, self.epoch = flag, epoch

        def stage_progress(self, stage, done, total, metrics):
            if stage == "dynamics" and done >= self.epoch:
                self.flag.request()

    monkeypatch.setattr(TrainLoop, "PROGRESS_INTERVAL", 0.0)  # report every epoch
    epochs = 8
    spec_text = SPEC.split("[stages.policy]")[0].replace("max_epochs = 5", f"max_epochs = {epochs}")
    spec, data = write_spec(tmp_path, spec_text, "micro.toml"), write_dataset(tmp_path)
    reference = run(spec, data, checkpoints=str(tmp_path / "reference"))
    flag = InterruptFlag()
    req = RunRequest(pipeline=str(spec), task=TASK, dataset=str(data), device="cpu", checkpoint_every_steps=10_000)
    with pytest.raises(RunInterrupted, match="checkpoint saved at step 3"):
        run_pipeline(req, InterruptAt(flag, 3), interrupt=flag)

    resumed = run(spec, data)
    dyn = resumed.stages[1]
    assert statuses(resumed) == {"dataset": "cached", "dynamics": "ran"} and dyn.resumed_from == 3
    assert _manifest(dyn.dir)["steps"] == epochs
    steps = [json.loads(line)["step"] for line in (dyn.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, epochs + 1))
    ref, got = _state(reference.stages[1].dir / "dynamics.pt"), _state(dyn.dir / "dynamics.pt")
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_spec_presets_and_paper_table():
    spec = load_spec(REPO / "pipelines" / "micro.toml")
    assert list(spec.stages) == ["dataset", "dynamics", "policy", "evaluate"]
    raw = tomllib.loads((REPO / "pipelines" / "micro.toml").read_text())
    table = raw["tasks"]
    assert set(table) == set(PAPER_PRESETS)
    for task, preset in PAPER_PRESETS.items():
        for preset_name in (None, "paper"):
            configs = spec.resolve(task, preset_name)
            for key, value in preset.items():
                if key.startswith("dyn_"):
                    assert getattr(configs["dynamics"], key[4:]) == value, (task, key)
                else:
                    assert getattr(configs["policy"], key) == value, (task, key)
    quick = spec.resolve(TASK, "quick")
    assert quick["policy"].epochs * quick["policy"].steps_per_epoch <= 5000
    assert quick["dynamics"].max_epochs is not None


def test_policy_stage_config_is_the_learner_config():
    """One config per learner: the stage config subclasses MICROConfig (same fields, same
    defaults, same validation) and changes only the None-means-task-default fields."""
    from corl.algos.micro import DynamicsConfig
    from corl.pipeline.stages.micro import DynamicsStageConfig

    task_default = {"target_clamp_min", "lr_schedule_epochs", "episode_length"}
    assert issubclass(MICROPolicyStageConfig, MICROConfig) and issubclass(DynamicsStageConfig, DynamicsConfig)
    assert [f.name for f in dataclasses.fields(MICROPolicyStageConfig)] == [
        f.name for f in dataclasses.fields(MICROConfig)
    ]
    learner, stage = MICROConfig(), MICROPolicyStageConfig()
    assert {n for n in vars(learner) if getattr(learner, n) != getattr(stage, n)} == task_default
    with pytest.raises(ValueError, match="real_ratio"):
        MICROPolicyStageConfig(real_ratio=1.5)


def test_d4rl_task_defaults_and_missing_file_message(tmp_path):
    """A D4RL-named task: no cost head, target clamped at 0, D4RL score; without a local file
    the plan fails with a one-line error that says where to put D4RL's file."""
    from test_micro import collect_random

    from corl.data.formats.dsrl import write_dsrl
    from corl.pipeline.runner import RunRequest, plan_pipeline, run_pipeline

    task = "hopper-medium-v2"
    data = write_dsrl(collect_random(task, steps=300), tmp_path / "hopper.hdf5")
    spec = write_spec(tmp_path, SPEC, "micro.toml")
    result = run_pipeline(RunRequest(pipeline=str(spec), task=task, dataset=str(data), device="cpu"))
    assert set(statuses(result).values()) == {"ran"}
    assert _manifest(result.stages[1].dir)["outputs"]["predict_cost"] is False
    assert _manifest(result.stages[2].dir)["outputs"]["target_clamp_min"] == 0.0
    assert "final/normalized_score" in result.stages[3].metrics

    if not list(Path.home().glob(".d4rl/datasets/hopper_medium-v2.hdf5")):
        with pytest.raises(CorlError, match="place D4RL's hopper_medium-v2.hdf5"):
            plan_pipeline(RunRequest(pipeline="micro", task=task, device="cpu"))
