"""CPQ: the OOD cost penalty (paper mode vs OSRL's no-gradient form) and exact resume.

The bandit known-answer test of baselines.md (safe action in (0.3, 0.5]) does not hold for
OSRL's CPQ: the cost indicator in the actor loss has no gradient, so the stochastic actor's
mean climbs past the boundary until no sample is safe (measured: a = 0.73 after 600 steps at
OSRL's actor lr, 0.86 at lr 1e-3; c = 1 there). The README records it."""

from __future__ import annotations

import torch
from _baselines_util import bandit, fit_vae, interrupted_then_resumed, same_policy, train
from _pipeline_util import statuses


def _learner(vae, q_thres: float, **kw):
    from corl.algos.cpq import CPQConfig, CPQLearner

    torch.manual_seed(0)
    cfg = CPQConfig(hidden=[32, 32], reward_scale=1.0, cost_done_mask=True, **kw)
    return CPQLearner(cfg, 1, 1, vae, q_thres)


def test_ood_penalty_makes_unseen_actions_unsafe_only_in_paper_mode():
    """Data only in a <= 0 (all costs 0): a = 0.9 is OOD. The paper's penalty (gradient through
    the online cost critic) pushes Q_c there above the threshold; OSRL's no-gradient form does not."""
    data = bandit(cost="step", low=-1.0, high=0.0)
    vae = fit_vae(data)
    probe = torch.tensor([[-0.5], [0.9]])
    paper = _learner(vae, 0.5, osrl_compat=False)
    train(paper, data, 200)
    qc_seen, qc_ood = paper.cost_critic.reduced(torch.zeros(2, 1), probe).tolist()
    assert qc_ood > 0.5 > abs(qc_seen), (qc_seen, qc_ood)
    osrl = _learner(vae, 0.5, osrl_compat=True)
    train(osrl, data, 200)
    assert abs(osrl.cost_critic.reduced(torch.zeros(1, 1), probe[1:]).item()) < 0.25


SPEC = """
description = "cpq test pipeline"

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

[stages.cpq]
kind = "cpq"
inputs = ["dataset", "vae"]
steps = 40
batch_size = 32
hidden = [16, 16]
num_samples = 4
"""


def test_cpq_pipeline_resume_is_exact(tmp_path, monkeypatch):
    reference, resumed = interrupted_then_resumed(tmp_path, monkeypatch, SPEC, "cpq", 23)
    assert statuses(resumed) == {"dataset": "cached", "vae": "cached", "cpq": "ran"}
    assert resumed.stages[2].resumed_from == 23
    assert same_policy(reference.stages[2].dir, resumed.stages[2].dir)
