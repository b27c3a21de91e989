"""The DRCORL stages run end to end on a tiny dataset, and a second run is all cache hits."""

from __future__ import annotations

import torch

from _pipeline_util import run, statuses, write_dataset, write_spec

SPEC = """
description = "drcorl test pipeline"

[checkpoint]
every_steps = 20
every_seconds = 600.0
log_every = 10

[stages.dataset]
kind = "dataset"

[stages.behavior]
kind = "drcorl_behavior"
inputs = ["dataset"]
steps = 30
batch_size = 32
width = 16
blocks = 1
time_dim = 8
fourier_features = 4

[stages.critics]
kind = "drcorl_critics"
inputs = ["dataset"]
steps = 30
batch_size = 32
hidden = [16, 16]

[stages.policy]
kind = "drcorl_policy"
inputs = ["dataset", "behavior", "critics"]
hidden = [16, 16]
pretrain_epochs = 1
steps_per_pretrain_epoch = 10
train_epochs = 15
warmup_iters = 5
batch_size = 32
use_lagrangian = true
"""


def test_drcorl_stages_run_and_cache(tmp_path):
    spec, data = write_spec(tmp_path, SPEC, "drcorl.toml"), write_dataset(tmp_path)
    first = run(spec, data, checkpoints=str(tmp_path / "ck"))
    assert set(statuses(first).values()) == {"ran"}, statuses(first)
    policy_dir = first.stages[-1].dir
    payload = torch.load(policy_dir / "policy.pt", weights_only=True)
    assert any(k.startswith("net.") for k in payload["state_dict"])
    second = run(spec, data, checkpoints=str(tmp_path / "ck"))
    assert set(statuses(second).values()) == {"cached"}, statuses(second)


def test_policy_stage_ctrl_c_resume_is_exact(tmp_path, monkeypatch):
    """Interrupted inside the safe phase, the resumed policy stage ends with the same weights."""
    from corl.pipeline.context import InterruptFlag, TrainLoop
    from corl.pipeline.progress import RunCallbacks
    from corl.pipeline.runner import RunInterrupted, RunRequest, run_pipeline

    from _pipeline_util import TASK

    class InterruptAt(RunCallbacks):
        def __init__(self, flag, step):
            self.flag, self.step = flag, step

        def stage_progress(self, stage, done, total, metrics):
            if stage == "policy" and done >= self.step:
                self.flag.request()

    monkeypatch.setattr(TrainLoop, "PROGRESS_INTERVAL", 0.0)
    spec, data = write_spec(tmp_path, SPEC, "drcorl.toml"), write_dataset(tmp_path)
    reference = run(spec, data, checkpoints=str(tmp_path / "reference"))
    flag = InterruptFlag()
    req = RunRequest(pipeline=str(spec), task=TASK, dataset=str(data), device="cpu",
                     checkpoints=str(tmp_path / "resumed"), checkpoint_every_steps=10_000)
    try:
        run_pipeline(req, InterruptAt(flag, 17), interrupt=flag)  # 10 warm-start steps, then safe its
        raise AssertionError("the run was not interrupted")
    except RunInterrupted:
        pass
    resumed = run(spec, data, checkpoints=str(tmp_path / "resumed"))
    assert statuses(resumed)["policy"] == "ran" and resumed.stages[3].resumed_from == 17
    ref = torch.load(reference.stages[3].dir / "policy.pt", weights_only=True)["state_dict"]
    got = torch.load(resumed.stages[3].dir / "policy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_quick_preset_keeps_the_paper_method_and_a_safety_sized_evaluation():
    """`quick` shrinks sizes and changes only the documented settings (see the spec's comment)."""
    from corl.pipeline.spec import load_spec

    from _pipeline_util import REPO, TASK

    spec = load_spec(REPO / "pipelines" / "drcorl.toml")
    quick, full = spec.resolve(TASK, "quick"), spec.resolve(TASK, None)
    assert quick["evaluate"].episodes >= 10  # a safety verdict needs >= 10 episodes
    assert quick["critics"].tau == 0.05 and full["critics"].tau == 0.005
    assert (quick["policy"].lambda_mode, quick["policy"].lambda_fixed) == ("fixed", 5.0)
    assert quick["policy"].use_lagrangian and full["policy"].lambda_mode == "pid"
    assert (quick["policy"].beta_coef, full["policy"].beta_coef) == (0.001, 0.01)
    for key in ("cost_limit", "slack_bound", "switch_estimator", "critic_states", "beta_schedule",
                "weighting", "lr", "fix_cost_normalisation"):
        assert getattr(quick["policy"], key) == getattr(full["policy"], key), key


def test_policy_setting_reruns_only_policy_and_evaluate(tmp_path):
    """`--set policy.slack_bound=0.2` keeps behavior and critics (a sweep reuses them)."""
    text = SPEC + '\n[stages.evaluate]\nkind = "evaluate"\ninputs = { policy = "policy" }\nepisodes = 1\nnum_envs = 1\n'
    spec, data = write_spec(tmp_path, text, "drcorl.toml"), write_dataset(tmp_path)
    first = run(spec, data, checkpoints=str(tmp_path / "ck"))
    assert set(statuses(first).values()) == {"ran"}, statuses(first)
    swept = run(spec, data, overrides=("policy.slack_bound=0.2",), checkpoints=str(tmp_path / "ck"))
    assert statuses(swept) == {"dataset": "cached", "behavior": "cached", "critics": "cached",
                               "policy": "ran", "evaluate": "ran"}, statuses(swept)
    assert swept.stages[3].dir != first.stages[3].dir
