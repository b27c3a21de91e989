"""COptiDICE: the closed-form stationary-distribution correction of a constrained bandit,
the upper-bound (chi, tau) path, and exact resume of the pipeline stage."""

from __future__ import annotations

import numpy as np
import torch
from _baselines_util import interrupted_then_resumed, same_policy
from _pipeline_util import statuses

from corl.data.dataset import TRANSITION_KEYS, TransitionDataset


def _clusters(n: int = 2000, seed: int = 0) -> TransitionDataset:
    """One state; half the actions at -0.5 (r = 0, c = 0), half at +0.5 (r = 1, c = 1)."""
    rng = np.random.default_rng(seed)
    plus = rng.random(n) < 0.5
    a = (np.where(plus, 0.5, -0.5) + 0.02 * rng.normal(size=n)).astype(np.float32)[:, None]
    obs = np.zeros((n, 1), np.float32)
    flag = plus.astype(np.float32)
    return TransitionDataset.from_numpy(
        dict(
            observations=obs,
            actions=a,
            rewards=flag,
            costs=flag,
            next_observations=obs,
            terminals=np.ones(n, bool),
            timeouts=np.zeros(n, bool),
        )
    )


def _train(limit: float, steps: int = 400, **kw):
    from corl.algos.coptidice import COptiDICEConfig, COptiDICELearner

    data = _clusters()
    torch.manual_seed(0)
    cfg = COptiDICEConfig(
        hidden=[32, 32], gamma=0.0, reward_scale=1.0, actor_lr=1e-3, critic_lr=1e-3, scalar_lr=1e-2, **kw
    )
    learner = COptiDICELearner(cfg, 1, 1, limit, 1.0, torch.ones(1), torch.tensor([0.5]))
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = data.sample(128, gen)
        batch["is_init"] = torch.ones(128)
        logs = learner.update(batch)
    w = learner.weights({k: getattr(data, k) for k in TRANSITION_KEYS})
    plus = data.costs > 0
    return learner, logs, float(w[plus].mean()), float(w[~plus].mean()), float((w * data.costs).mean())


def test_constraint_active_gives_the_closed_form_correction():
    """gamma = 0, limit 0.3: pi(+) = 0.3, so w(+) = 0.6, w(-) = 1.4, E_D[w c] = 0.3, lambda > 0;
    the extracted policy leans to the safe action."""
    learner, logs, w_plus, w_minus, cost = _train(0.3, cost_ub_epsilon=0.0)
    assert abs(cost - 0.3) < 0.05 and logs["lambda"] > 0.5, (cost, logs)
    assert 0.45 < w_plus < 0.75 and 1.25 < w_minus < 1.55, (w_plus, w_minus)
    assert learner.act(torch.zeros(1, 1)).item() < 0.0


def test_constraint_inactive_prefers_the_rewarding_action():
    learner, logs, w_plus, w_minus, _ = _train(0.8, cost_ub_epsilon=0.0)
    assert w_plus > w_minus + 0.5 and logs["lambda"] < 1.0, (w_plus, w_minus, logs)
    assert learner.act(torch.zeros(1, 1)).item() > 0.0


def test_upper_bound_path_is_conservative():
    """With the chi/tau upper bound the constraint is enforced on the bound: E_D[w c] <= limit."""
    _, logs, _, _, cost = _train(0.3, steps=300, cost_ub_epsilon=0.01)
    assert cost < 0.35 and np.isfinite(logs["chi/loss"]), (cost, logs)


SPEC = """
description = "coptidice test pipeline"

[checkpoint]
every_steps = 20
every_seconds = 600.0
log_every = 10

[stages.dataset]
kind = "dataset"

[stages.coptidice]
kind = "coptidice"
inputs = ["dataset"]
steps = 40
batch_size = 32
hidden = [16, 16]
"""


def test_coptidice_pipeline_resume_is_exact(tmp_path, monkeypatch):
    reference, resumed = interrupted_then_resumed(tmp_path, monkeypatch, SPEC, "coptidice", 23)
    assert statuses(resumed) == {"dataset": "cached", "coptidice": "ran"}
    assert resumed.stages[1].resumed_from == 23
    assert same_policy(reference.stages[1].dir, resumed.stages[1].dir)
