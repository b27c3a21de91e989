"""BCQ-Lag: the safe optimum of a constrained bandit, the shared VAE stage, exact resume."""

from __future__ import annotations

import torch
from _baselines_util import bandit, fit_vae, interrupted_then_resumed, same_policy, train
from _pipeline_util import run, statuses, write_dataset, write_spec


def test_bcql_picks_the_safe_action_at_the_cost_limit():
    """r = a, c = max(a, 0)^2, limit 0.25: the safe optimum is a = 0.5, the unsafe one a = 1."""
    from corl.algos.bcql import BCQLConfig, BCQLLearner

    data = bandit()
    vae = fit_vae(data)
    torch.manual_seed(0)
    cfg = BCQLConfig(
        hidden=[32, 32], phi=1.0, num_samples=4, reward_scale=1.0, cost_done_mask=True, pid=[1.0, 0.05, 0.0]
    )
    learner = BCQLLearner(cfg, 1, 1, vae, qc_thres=0.25)
    logs = train(learner, data, 400)
    action = learner.act(torch.zeros(256, 1)).mean().item()
    assert 0.4 <= action <= 0.6, (action, logs)
    assert abs(logs["actor/qc"] - 0.25) < 0.05 and logs["actor/lambda"] > 0.3, logs

    loose = BCQLLearner(cfg, 1, 1, vae, qc_thres=2.0)  # the constraint inactive: reward wins
    train(loose, data, 150, batch_size=64)
    assert loose.act(torch.zeros(256, 1)).mean().item() > 0.85


SPEC = """
description = "bcql test pipeline"

[checkpoint]
every_steps = 20
every_seconds = 600.0
log_every = 10

[stages.dataset]
kind = "dataset"

[stages.vae]
kind = "vae"
inputs = ["dataset"]
steps = 20
batch_size = 32
hidden = [16, 16]

[stages.bcql]
kind = "bcql"
inputs = ["dataset", "vae"]
steps = 40
batch_size = 32
hidden = [16, 16]
num_samples = 4
"""


def test_bcql_pipeline_resume_is_exact_and_reruns_are_cached(tmp_path, monkeypatch):
    reference, resumed = interrupted_then_resumed(tmp_path, monkeypatch, SPEC, "bcql", 27)
    assert statuses(resumed) == {"dataset": "cached", "vae": "cached", "bcql": "ran"}
    assert resumed.stages[2].resumed_from == 27
    assert same_policy(reference.stages[2].dir, resumed.stages[2].dir)
    again = run(write_spec(tmp_path, SPEC, "bcql.toml"), write_dataset(tmp_path), checkpoints=str(tmp_path / "resumed"))
    assert set(statuses(again).values()) == {"cached"}


def test_pid_osrl_form_matches_osrl_controller():
    """OSRL's LagrangianPIDController: e = qc - thres; d = relu(e - e_prev); I = relu(I + e);
    lambda = relu(KP relu(e) + KI I + KD d), with e_prev = I = 0 at the start."""
    from corl.nn.lagrange import PIDLagrangeMultiplier

    kp, ki, kd, thres = 0.1, 0.003, 0.001, 3.17
    pid = PIDLagrangeMultiplier(thres, kp=kp, ki=ki, kd=kd, form="osrl")
    e_prev = integral = 0.0
    for qc in (5.0, 4.0, 1.0, 0.5, 6.0, 2.0, 3.3):
        e = qc - thres
        d = max(0.0, e - e_prev)
        integral = max(0.0, integral + e)
        e_prev = e
        expected = max(0.0, kp * max(0.0, e) + ki * integral + kd * d)
        assert abs(pid.update(qc) - expected) < 1e-6  # corl reads J_c as float32
