"""CDT: Pareto relabelling, target-conditioned actions on a known speed MDP, the rollout's
memory protocol with evaluation-time targets, and exact resume."""

from __future__ import annotations

import numpy as np
import torch
from _baselines_util import interrupted_then_resumed, same_policy
from _pipeline_util import run, statuses, write_dataset, write_spec

T = 20


def _speed_trajectories(n: int = 200, seed: int = 0):
    """Constant-speed episodes a in {0.2, ..., 1.0} (+ noise): reward a, cost 1[a > 0.5] per step."""
    from corl.algos.cdt import Trajectories

    rng = np.random.default_rng(seed)
    out = Trajectories([], [], [], [], [])
    for ep in range(n):
        a = np.clip((0.2 + 0.2 * (ep % 5)) + 0.02 * rng.normal(size=(T, 1)), 0, 1).astype(np.float32)
        r, c = a[:, 0].astype(np.float64), (a[:, 0] > 0.5).astype(np.float64)
        out.obs.append((np.arange(T)[:, None] / T).astype(np.float32))
        out.act.append(a)
        out.cost.append(c.astype(np.float32))
        out.rtg.append(np.cumsum(r[::-1])[::-1].copy())
        out.ctg.append(np.cumsum(c[::-1])[::-1].copy())
    return out


def test_pareto_front_and_relabelling():
    from corl.algos.cdt import augment, pareto_front

    costs = np.array([0.0, 1.0, 1.0, 2.0, 3.0])
    rewards = np.array([1.0, 3.0, 2.0, 2.5, 4.0])
    assert sorted(pareto_front(costs, rewards).tolist()) == [0, 1, 4]
    trajs = _speed_trajectories()
    aug, n = augment(trajs, np.random.default_rng(0), max_reward=25, min_reward=0.5, max_rew_decrease=5)
    assert n > 0 and len(aug) == len(trajs) + n
    for k in range(len(trajs), len(aug)):  # relabelled copies: shifted to-go, consistent increments
        c0, r0 = aug.ctg[k][0], aug.rtg[k][0]
        base_c = np.cumsum(aug.cost[k][::-1])[::-1]
        assert np.allclose(aug.ctg[k] - aug.ctg[k][0], base_c - base_c[0])
        assert r0 >= 0.5 and np.isfinite(c0)


def test_actions_follow_the_reward_and_cost_targets():
    from corl.algos.cdt import CDTConfig, CDTLearner, CDTModel, CDTPolicy, WindowSampler, augment

    torch.manual_seed(0)
    trajs, _ = augment(
        _speed_trajectories(), np.random.default_rng(0), max_reward=25, min_reward=0.5, max_rew_decrease=5
    )
    model_kw = dict(
        seq_len=5,
        episode_len=T,
        embedding_dim=32,
        num_layers=1,
        num_heads=2,
        cost_transform_offset=20,
        attention_dropout=0.0,
        residual_dropout=0.0,
        embedding_dropout=0.0,
    )
    cfg = CDTConfig(batch_size=64, reward_scale=1.0, warmup_steps=20, lr=1e-3, seq_len=5)
    learner = CDTLearner(cfg, CDTModel(1, 1, **model_kw))
    sampler = WindowSampler(trajs, 5, 1.0, 1.0, cost_sample=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        learner.update(sampler.sample(64, gen))
    policy = CDTPolicy(1, 1, model_kw, 8.0, 0.0, reward_scale=1.0, act_low=[0.0], act_high=[1.0])
    policy.model.load_state_dict(learner.model.state_dict())

    def mean_action(ret: float, cost: float) -> float:
        policy.set_targets(ret, cost)
        policy.reset()
        acts = []
        for t in range(T):
            a = policy.act(torch.full((2, 1), t / T))
            acts.append(float(a[0, 0]))
            policy.observe(a[:, 0], (a[:, 0] > 0.5).float(), torch.zeros(2, dtype=torch.bool))
        return float(np.mean(acts))

    slow, fast, conflict = mean_action(8, 0), mean_action(20, 20), mean_action(20, 0)
    assert slow < 0.5 < fast and fast - slow > 0.25, (slow, fast)
    assert conflict < fast - 0.1, (conflict, fast)  # the cost target wins over an infeasible return


SPEC = """
description = "cdt test pipeline"

[checkpoint]
every_steps = 20
every_seconds = 600.0
log_every = 10

[stages.dataset]
kind = "dataset"

[stages.cdt]
kind = "cdt"
inputs = ["dataset"]
steps = 40
batch_size = 16
seq_len = 4
embedding_dim = 16
num_layers = 1
num_heads = 2
"""


def test_cdt_pipeline_resume_is_exact(tmp_path, monkeypatch):
    reference, resumed = interrupted_then_resumed(tmp_path, monkeypatch, SPEC, "cdt", 23)
    assert statuses(resumed) == {"dataset": "cached", "cdt": "ran"}
    assert resumed.stages[1].resumed_from == 23
    assert same_policy(reference.stages[1].dir, resumed.stages[1].dir)


def test_cdt_evaluates_in_the_simulator_with_given_targets(tmp_path):
    text = SPEC + (
        '\n[stages.evaluate]\nkind = "evaluate"\ninputs = { policy = "cdt" }\nepisodes = 1\n'
        "num_envs = 1\ntarget_return = 300.0\ntarget_cost = 5.0\n"
    )
    result = run(write_spec(tmp_path, text, "cdt.toml"), write_dataset(tmp_path), checkpoints=str(tmp_path / "ck"))
    assert statuses(result)["evaluate"] == "ran"
    assert np.isfinite(result.stages[-1].metrics["final/normalized_reward"])
