"""FISOR: the paper's equations at tiny size (HJ target, reversed expectile, the three weight
regions, the DDPM schedule), a 1-D reachability problem with a known feasible set, resume."""

from __future__ import annotations

import numpy as np
import torch
from _baselines_util import interrupted_then_resumed, same_policy
from _pipeline_util import statuses

from corl.data.dataset import TransitionDataset


def test_schedule_signal_and_weight_regions_follow_the_equations():
    from corl.algos.fisor import FISORConfig, FISORLearner, constraint_signal
    from corl.nn.diffusion import DDPMSchedule

    sched = DDPMSchedule(5)
    assert np.allclose(sched.betas.numpy(), [0.196, 0.459, 0.636, 0.755, 0.835], atol=1e-3)
    assert np.allclose(sched.alpha_bars.numpy(), [0.804, 0.435, 0.159, 0.039, 0.006], atol=1e-3)
    assert constraint_signal(torch.tensor([0.0, 0.5, 1.0]), 25.0).tolist() == [-1.0, 25.0, 25.0]

    learner = FISORLearner(FISORConfig(hidden=[8], width=8, blocks=1, time_dim=4, fourier_features=2), 1, 1)
    obs, act = torch.zeros(3, 1), torch.zeros(3, 1)
    # constant critics per row through the bias: feed row-specific values by monkeypatching forward
    learner.vh.forward = lambda s: torch.tensor([2.0, -1.0, -1.0])  # unsafe, safe, safe
    learner.v.forward = lambda s: torch.tensor([0.0, 0.0, 0.5])
    learner.qh_target.forward = lambda s, a: torch.tensor([[1.0, -0.5, 3.0], [1.5, -0.6, 2.0]])
    learner.q_target.forward = lambda s, a: torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.8, 1.0]])
    w = learner.weights(obs, act)
    # unsafe state: exp(5 (V_h - max Q_h)) = exp(5 (2 - 1.5)); safe/safe: exp(3 (min Q - V)); safe/unsafe action: 0
    assert torch.allclose(w, torch.tensor([np.exp(2.5), np.exp(3 * 0.8), 0.0], dtype=torch.float32), rtol=1e-5)


def test_critic_losses_follow_the_hj_and_expectile_equations():
    """One critic update on a tiny batch against the equations written out by hand: the IQL
    value/Q losses and the reversed-expectile V_h with the HJ backup (terminal: y_h = h)."""
    import copy

    from corl.algos.fisor import FISORConfig, FISORLearner

    torch.manual_seed(0)
    cfg = FISORConfig(
        batch_size=8,
        critic_batch_size=8,
        actor_splits=1,
        gamma=0.9,
        hidden=[8],
        width=8,
        blocks=1,
        time_dim=4,
        fourier_features=2,
    )
    learner = FISORLearner(cfg, 2, 1, reward_factor=0.5)
    gen = torch.Generator().manual_seed(1)
    s, s2 = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen)
    a = torch.rand(8, 1, generator=gen) * 2 - 1
    cost = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    term = torch.tensor([False, False, True, False, False, True, False, False])
    batch = {
        "observations": s,
        "next_observations": s2,
        "actions": a,
        "rewards": torch.randn(8, generator=gen),
        "costs": cost,
        "terminals": term,
        "timeouts": torch.zeros(8, dtype=torch.bool),
    }
    b = learner._prepare(batch)
    with torch.no_grad():  # centre V and V_h on the critics so u takes both signs
        learner.v.net.net[-1].bias += (learner.q_target(s, a).min(0).values - learner.v(s)).median()
        learner.vh.net.net[-1].bias += (learner.qh_target(s, a).max(0).values - learner.vh(s)).median()
    before = copy.deepcopy(learner)
    v_loss, q_loss = learner._value_step(b)
    vh_loss, qh_loss = learner._feasibility_step(b)
    with torch.no_grad():
        h = torch.where(cost > 0, 25.0, -1.0)
        mask = (~term).float()
        # reward V: expectile 0.9 of min_k Q'_k - V; Q: mean over members and rows, target with the new V
        u = before.q_target(s, a).min(0).values - before.v(s)
        want_v = (torch.where(u < 0, 0.1, 0.9) * u**2).mean()
        y = 0.5 * batch["rewards"] + 0.9 * mask * learner.v(s2)
        want_q = ((before.q(s, a) - y) ** 2).mean()
        # feasibility V_h: weight 0.9 below (u_h < 0), 0.1 above, u_h = max_k Q_h'_k - V_h
        uh = before.qh_target(s, a).max(0).values - before.vh(s)
        want_vh = (torch.where(uh < 0, 0.9, 0.1) * uh**2).mean()
        yh = (1 - 0.9) * h + 0.9 * torch.maximum(h, learner.vh(s2))
        yh = torch.where(term, h, yh)
        want_qh = ((before.qh(s, a) - yh) ** 2).mean()
    assert np.allclose([v_loss, q_loss, vh_loss, qh_loss], [want_v, want_q, want_vh, want_qh], rtol=1e-5, atol=1e-7)
    assert (uh < 0).any() and (uh > 0).any() and (u < 0).any() and (u > 0).any(), "both expectile sides"


def _reachability(n: int = 4000, seed: int = 0) -> TransitionDataset:
    """x' = clip(x + 0.1 a, -2, 2), r = x, cost 1[x > 1]; x ~ U(-1.5, 1.5), a ~ U(-1, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, size=(n, 1)).astype(np.float32)
    a = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    return TransitionDataset.from_numpy(
        dict(
            observations=x,
            actions=a,
            rewards=x[:, 0],
            costs=(x[:, 0] > 1).astype(np.float32),
            next_observations=np.clip(x + 0.1 * a, -2, 2),
            terminals=np.zeros(n, bool),
            timeouts=np.zeros(n, bool),
        )
    )


def test_feasible_set_and_recovery_on_a_1d_reachability_problem():
    from corl.algos.fisor import FISORConfig, FISORLearner

    data = _reachability()
    torch.manual_seed(0)
    cfg = FISORConfig(
        batch_size=256,
        critic_batch_size=256,
        gamma=0.9,
        hidden=[32, 32],
        width=32,
        blocks=1,
        time_dim=16,
        fourier_features=8,
        critic_lr=1e-3,
        value_lr=1e-3,
        actor_lr=1e-3,
        tau=0.05,
    )
    learner = FISORLearner(cfg, 1, 1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(500):
        learner.update(data.sample(256, gen))
    vh = learner.vh(torch.tensor([[-1.0], [0.0], [1.2], [1.4]])).detach()
    assert (vh[:2] < 0).all() and (vh[2:] > 0).all(), vh
    near = torch.tensor([[0.95], [0.95]])
    w_cross, w_back = learner.weights(near, torch.tensor([[1.0], [-1.0]])).tolist()
    assert w_cross < 1e-2 * w_back, (w_cross, w_back)  # crossing into x > 1 gets (almost) no weight
    recover = learner.make_policy().act(torch.full((32, 1), 1.3)).mean().item()
    assert recover < -0.3, recover  # outside the feasible set: the action that leaves it fastest


SPEC = """
description = "fisor test pipeline"

[checkpoint]
every_steps = 20
every_seconds = 600.0
log_every = 10

[stages.dataset]
kind = "dataset"

[stages.fisor]
kind = "fisor"
inputs = ["dataset"]
steps = 40
batch_size = 32
critic_batch_size = 16
hidden = [16, 16]
width = 16
blocks = 1
time_dim = 8
fourier_features = 4
num_candidates = 4
"""


def test_fisor_pipeline_resume_is_exact(tmp_path, monkeypatch):
    reference, resumed = interrupted_then_resumed(tmp_path, monkeypatch, SPEC, "fisor", 23)
    assert statuses(resumed) == {"dataset": "cached", "fisor": "ran"}
    assert resumed.stages[1].resumed_from == 23
    assert same_policy(reference.stages[1].dir, resumed.stages[1].dir)
    import json

    from corl.store.policies import load_policy_fn

    art = resumed.stages[1].dir
    spec = json.loads((art / "manifest.json").read_text())["outputs"]["policy"]
    action = load_policy_fn(art, spec)(torch.zeros(3, 8))  # the evaluate stage's loader
    assert action.shape == (3, 2) and bool((action.abs() <= 1).all())
