"""BEAR-Lag: the safe optimum of a constrained bandit inside the data's support, exact resume."""

from __future__ import annotations

import torch
from _baselines_util import bandit, fit_vae, interrupted_then_resumed, same_policy, train
from _pipeline_util import statuses


def test_bearl_meets_the_cost_limit_on_the_bandit():
    """r = a, c = max(a, 0)^2, limit 0.25 (safe optimum a = 0.5), data a in [-1, 0.6]: with
    OSRL's flat kernel (sigma 50) the constraint, not the support, decides: a -> 0.5."""
    from corl.algos.bearl import BEARLConfig, BEARLLearner

    data = bandit(low=-1.0, high=0.6)
    vae = fit_vae(data)
    torch.manual_seed(0)
    cfg = BEARLConfig(
        hidden=[32, 32], reward_scale=1.0, cost_done_mask=True, pid=[1.0, 0.05, 0.0], num_samples=4, mmd_samples=4
    )
    learner = BEARLLearner(cfg, 1, 1, vae, qc_thres=0.25)
    logs = train(learner, data, 600)
    action = learner.act(torch.zeros(1, 1)).item()
    assert 0.4 <= action <= 0.6, (action, logs)
    assert abs(logs["actor/qc"] - 0.25) < 0.08 and logs["actor/lambda"] > 0.3, logs


def test_mmd_is_zero_for_equal_sets_and_grows_with_the_gap():
    from corl.algos.bearl import mmd

    x = torch.randn(3, 8, 2)
    assert torch.allclose(mmd(x, x, 1.0), torch.full((3,), 1e-3), atol=1e-4)
    near, far = mmd(x, x + 0.5, 1.0), mmd(x, x + 2.0, 1.0)
    assert (far > near).all() and (near > 1e-2).all()


SPEC = """
description = "bearl test pipeline"

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

[stages.bearl]
kind = "bearl"
inputs = ["dataset", "vae"]
steps = 40
batch_size = 32
hidden = [16, 16]
num_samples = 4
mmd_samples = 4
"""


def test_bearl_pipeline_resume_is_exact(tmp_path, monkeypatch):
    reference, resumed = interrupted_then_resumed(tmp_path, monkeypatch, SPEC, "bearl", 23)
    assert statuses(resumed) == {"dataset": "cached", "vae": "cached", "bearl": "ran"}
    assert resumed.stages[2].resumed_from == 23
    assert same_policy(reference.stages[2].dir, resumed.stages[2].dir)
