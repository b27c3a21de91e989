"""DRCORL learners at tiny sizes: losses fall, the switch and PCGrad follow the spec, resume is exact."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from corl.algos.drcorl import (
    BehaviorConfig,
    BehaviorLearner,
    CriticConfig,
    CriticLearner,
    PolicyConfig,
    PolicyLearner,
    critic_episodic_cost,
    initial_observations,
    iql_reward_scale,
    normalised_cost,
    paper_config,
    reproduce_code_bugs,
    switch_branch,
)
from corl.algos.drcorl.critics import iql_q_loss
from corl.algos.drcorl.policy import score_regularised_loss
from corl.data.dataset import TransitionDataset
from corl.nn.diffusion import ScoreNet, VPSchedule, sample_actions
from corl.nn.losses import expectile_loss, pcgrad_merge, stepwise_threshold

OBS, ACT = 4, 2
TINY_B = BehaviorConfig(width=32, blocks=1, time_dim=16, fourier_features=8, dropout=0.1)
TINY_C = CriticConfig(hidden=(32, 32))


def tiny_dataset(n: int = 300, seed: int = 0) -> TransitionDataset:
    """Actions a deterministic function of the state; cost 1 where obs[0] > 0.5."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = np.tanh(obs[:, :ACT] + 0.05 * rng.normal(size=(n, ACT))).astype(np.float32)
    timeouts = np.arange(n) % 50 == 49
    terminals = np.zeros(n, dtype=bool)
    terminals[124] = True
    return TransitionDataset.from_numpy(
        dict(
            observations=obs,
            actions=act,
            rewards=obs[:, 1].copy(),
            costs=(obs[:, 0] > 0.5).astype(np.float32),
            next_observations=np.roll(obs, -1, 0),
            terminals=terminals,
            timeouts=timeouts,
        )
    )


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # what the pipeline's checkpoints use


def make_policy_learner(ds, cfg: PolicyConfig, **kw) -> PolicyLearner:
    torch.manual_seed(0)
    behavior = BehaviorLearner(OBS, ACT, TINY_B).net
    critics = CriticLearner(OBS, ACT, TINY_C, reward_scale=iql_reward_scale(ds))
    return PolicyLearner(OBS, ACT, behavior, critics, cfg, **kw)


# ----------------------------------------------------------------------------- shared blocks
def test_vp_schedule_acceptance():
    sched = VPSchedule()
    t = torch.linspace(1e-3, 1.0, 50)
    alpha, sigma = sched.alpha_sigma(t)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(t), atol=1e-6)
    assert float(alpha[-1]) == pytest.approx(math.exp(-5.025), rel=1e-4)
    assert stepwise_threshold(10, 0.99, 300) == pytest.approx(3.17, abs=5e-3)


def test_expectile_loss_weights():
    diff = torch.tensor([1.0, -1.0])
    assert float(expectile_loss(diff, 0.7)) == pytest.approx((0.7 + 0.3) / 2)


def test_pcgrad_merge_known_vectors():
    r, c = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    merged = pcgrad_merge(r, c)
    # each projected on the other's normal plane: r_perp = (0.5, 0.5), c_perp = (0, 1)
    assert torch.allclose(merged, torch.tensor([0.25, 0.75]))
    assert float(torch.dot(merged, r)) >= 0 and float(torch.dot(merged, c)) >= 0
    r_perp = r - torch.dot(r, c) / c.pow(2).sum() * c
    assert float(torch.dot(r_perp, c)) == pytest.approx(0.0, abs=1e-7)  # conflicting part removed
    agree = torch.tensor([1.0, 2.0])
    assert torch.allclose(pcgrad_merge(r, agree), 0.5 * (r + agree))


def test_sampler_shapes_and_clip():
    net = ScoreNet(OBS, ACT, width=16, blocks=1, time_dim=8, fourier_features=4)
    out = sample_actions(net, VPSchedule(), torch.randn(7, OBS), steps=5, generator=gen())
    assert out.shape == (7, ACT) and float(out.abs().max()) <= 1.0


# ----------------------------------------------------------------------------- stage 1
def test_behavior_loss_decreases_on_fixed_batch():
    ds = tiny_dataset()
    learner = BehaviorLearner(OBS, ACT, TINY_B)
    batch = ds.sample(32, gen(1))
    losses = [learner.update(batch)["behavior/loss"] for _ in range(100)]
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:10])
    assert learner.evaluate_loss(batch) < ACT  # well below the loss of predicting zero noise


# ----------------------------------------------------------------------------- stage 2
def test_critic_losses_decrease():
    ds = tiny_dataset()
    learner = CriticLearner(OBS, ACT, TINY_C, reward_scale=1.0)
    batch = ds.sample(32, gen(2))
    first = learner.update(batch)
    for _ in range(100):
        last = learner.update(batch)
    for key in ("critic/q_r_loss", "critic/q_c_loss"):
        assert last[key] < 0.7 * first[key], key
    td = [learner.td_update(batch, lambda s: torch.zeros(s.shape[0], ACT))["critic/td_q_c_loss"] for _ in range(60)]
    assert td[-1] < td[0]


def test_cost_broadcast_fix_and_bug():
    q = CriticLearner(OBS, ACT, TINY_C).q_c
    v = CriticLearner(OBS, ACT, TINY_C).v_c
    obs, act = torch.randn(5, OBS), torch.randn(5, ACT)
    y, nd = torch.rand(5), torch.ones(5)
    nxt = torch.randn(5, OBS)
    with torch.no_grad():
        qs, boot = q(obs, act), 0.9 * v(nxt)
        fixed = ((qs - (y + boot)) ** 2).mean()
        bug = ((qs[:, :, None] - (y[None, None, :] + boot[None, :, None])) ** 2).mean()
    with torch.no_grad():
        fixed_loss = float(iql_q_loss(q, v, obs, act, y, nxt, nd, 0.9))
        bug_loss = float(iql_q_loss(q, v, obs, act, y, nxt, nd, 0.9, broadcast_bug=True))
    assert fixed_loss == pytest.approx(float(fixed), rel=1e-5)
    assert bug_loss == pytest.approx(float(bug), rel=1e-5)


def test_cost_critic_ranks_costly_states_only_with_fix():
    ds = tiny_dataset()
    result = {}
    for fix in (True, False):
        torch.manual_seed(0)
        learner = CriticLearner(OBS, ACT, CriticConfig(hidden=(32, 32), gamma=0.5, fix_cost_broadcast=fix))
        g = gen(3)
        for _ in range(120):
            learner.update(ds.sample(64, g))
        with torch.no_grad():
            pred = learner.q_c.reduced(ds.observations, ds.actions, "mean")
        result[fix] = float(np.corrcoef(pred.numpy(), ds.costs.numpy())[0, 1])
    assert result[True] > 0.5 and result[True] > result[False] + 0.3, result


def test_reward_scale_uses_terminal_or_1000_step_episodes():
    ds = tiny_dataset()
    # terminal at row 124 -> one finished episode [0, 124]; the trailing segment is dropped
    assert iql_reward_scale(ds) == 1.0  # a single finished return: zero spread -> 1
    assert iql_reward_scale(ds, episode_steps=50) == pytest.approx(
        1000.0
        / float(
            np.ptp(
                [ds.rewards[i:j].sum() for i, j in [(0, 50), (50, 100), (100, 125), (125, 175), (175, 225), (225, 275)]]
            )
        ),
        rel=1e-5,
    )


# ----------------------------------------------------------------------------- stage 3: rules
def test_switch_rule():
    l, h = 1.0, 0.5
    assert switch_branch(5.0, l, h, iteration=500, warmup_iters=500) == "reward"  # warm-up
    assert switch_branch(0.4, l, h, 501) == "reward"
    assert switch_branch(0.5, l, h, 501) == "reward"  # C <= l - h
    assert switch_branch(0.51, l, h, 501) == "merge"
    assert switch_branch(1.5, l, h, 501) == "merge"  # C <= l + h
    assert switch_branch(1.51, l, h, 501) == "cost"


def test_cost_normalisation_rules():
    assert normalised_cost(10.0, 10.0) == 1.0
    assert normalised_cost(0.0, 0.0) == 1.0  # eps = 1 when kappa = 0
    assert normalised_cost(10.0, 10.0, dsrl_rule=False) == pytest.approx(10 / 10.1)


def test_pid_lagrangian_relu_terms():
    from corl.nn.lagrange import PIDLagrangeMultiplier

    pid = PIDLagrangeMultiplier(1.0, 0.1, 0.003, 0.001, form="drcorl")  # DRCORL's update
    assert pid.update(3.0) == pytest.approx(0.1 * 2 + 0.003 * 2 + 0.001 * 2)
    assert pid.update(0.0) == pytest.approx(0.003 * 1)  # P and D clipped at 0, I = max(0, 2 - 1)
    assert pid.update(4.0) == 0.1 * 3.0 + 0.003 * 4.0 + 0.001 * 4.0  # the authors' order of operations


def test_score_regularised_loss_gradient_is_injected_vector():
    a = torch.zeros(3, ACT, requires_grad=True)
    eps, g, w = torch.randn(3, ACT), torch.randn(3, ACT), torch.rand(3)
    score_regularised_loss(eps, w, a, g, beta=0.5).backward()
    assert torch.allclose(a.grad, (w[:, None] * eps - 0.5 * g) / 3)


# ----------------------------------------------------------------------------- stage 3: learner
def test_policy_actions_within_bounds():
    ds = tiny_dataset()
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([0.5, 3.0])
    learner = make_policy_learner(
        ds, PolicyConfig(hidden=(32, 32), pretrain_epochs=0, train_epochs=5, warmup_iters=0), act_low=low, act_high=high
    )
    g = gen(4)
    for _ in range(5):
        learner.update(ds.sample(32, g))
    acts = learner.act(100.0 * torch.randn(256, OBS))
    assert bool((acts >= low).all() and (acts <= high).all())


@pytest.mark.parametrize("cost,branch", [(0.0, 1.0), (10.0, 2.0), (30.0, 3.0)])
def test_online_estimator_drives_switch(cost, branch):
    ds = tiny_dataset()
    calls = []

    def estimator(policy, n_episodes):
        calls.append(n_episodes)
        return cost

    cfg = PolicyConfig(
        hidden=(32, 32),
        pretrain_epochs=0,
        train_epochs=3,
        warmup_iters=0,
        switch_estimator="online",
        cost_threshold=10.0,
        estimate_episodes=4,
    )
    learner = make_policy_learner(ds, cfg, cost_estimator=estimator)
    learner.update(ds.sample(32, gen()))  # k = 0 <= warmup 0: reward
    m = learner.update(ds.sample(32, gen(1)))
    assert m["policy/branch"] == branch and calls == [4, 4]
    adam_steps = int(next(iter(learner.optimizer.state.values()))["step"])
    assert adam_steps == (3 if branch == 2.0 else 2)  # the merge advances Adam twice
    bug = make_policy_learner(ds, dataclasses.replace(cfg, fix_single_episode_eval=False), cost_estimator=estimator)
    bug.update(ds.sample(32, gen()))
    assert calls[-1] == 1  # the authors' one-episode evaluation


def test_merge_equals_pcgrad_of_deltas(monkeypatch):
    import corl.algos.drcorl.policy as policy_module

    seen = {}

    def spy(delta_r, delta_c):
        seen["r"], seen["c"] = delta_r.clone(), delta_c.clone()
        seen["out"] = pcgrad_merge(delta_r, delta_c)
        return seen["out"]

    monkeypatch.setattr(policy_module, "pcgrad_merge", spy)
    ds = tiny_dataset()
    cfg = PolicyConfig(
        hidden=(32, 32),
        pretrain_epochs=0,
        train_epochs=2,
        warmup_iters=0,
        td_finetune=False,
        switch_estimator="online",
        beta_schedule="const",
        beta=1.0,
    )
    batch = ds.sample(32, gen(5))
    runs = {}
    for est in (0.0, 30.0, 10.0):  # reward, cost, merge from identical starts
        learner = make_policy_learner(ds, cfg, cost_estimator=lambda p, n, c=est: c)
        learner.update(batch)  # k = 0: reward warm-up step (same for all three)
        theta0 = torch.nn.utils.parameters_to_vector(learner.policy.parameters()).detach().clone()
        learner.update(batch)
        runs[est] = torch.nn.utils.parameters_to_vector(learner.policy.parameters()).detach() - theta0
    # the merge's reward delta is the reward run's step (same theta_0, Adam state and noise)
    assert torch.allclose(seen["r"], runs[0.0], atol=1e-7)
    assert torch.allclose(runs[10.0], seen["out"], atol=1e-6)  # theta <- theta_0 + PCGrad(delta_r, delta_c)
    assert float(torch.dot(runs[10.0], seen["r"])) >= -1e-9 and float(torch.dot(runs[10.0], seen["c"])) >= -1e-9


def test_critic_cost_estimate_and_initial_states():
    ds = tiny_dataset()
    learner = make_policy_learner(ds, PolicyConfig(hidden=(32, 32)))
    s0 = initial_observations(ds)
    assert s0.shape[0] == ds.num_episodes
    q = learner.critics.q_c_target
    with torch.no_grad():
        qv = q(s0, learner.policy(s0)).mean()
    est = critic_episodic_cost(q, learner.policy, s0, 0.99, 300, initial_states=True)
    assert float(est) == pytest.approx(float(qv) * 0.01 * 300 / (1 - 0.99**300), rel=1e-5)


def test_paper_config_and_bug_switches():
    cfg = paper_config("OfflinePointGoal1Gymnasium-v0")
    assert cfg.policy.batch_size == 512 and cfg.policy.lr == 1e-5 and cfg.critics.q_lr == 1e-4
    assert paper_config("OfflinePointGoal1Gymnasium-v0", reproduce_batch_typo=True).policy.batch_size == 256
    assert paper_config("OfflineCarCircle-v0").policy.use_lagrangian
    bug = reproduce_code_bugs(cfg)
    assert not (
        bug.critics.fix_cost_broadcast
        or bug.policy.fix_single_episode_eval
        or bug.policy.fix_cost_normalisation
        or bug.policy.fix_pid_threshold
    )


# ----------------------------------------------------------------------------- exact resume
def _continue(learner, ds, seed, n):
    g = gen(seed)
    return [learner.update(ds.sample(32, g)) for _ in range(n)]


def test_behavior_resume_is_exact():
    ds = tiny_dataset()
    a = BehaviorLearner(OBS, ACT, TINY_B, seed=1)
    _continue(a, ds, 0, 5)
    state = roundtrip(a.state_dict())
    b = BehaviorLearner(OBS, ACT, TINY_B, seed=99)
    b.load_state_dict(state)
    assert _continue(a, ds, 7, 4) == _continue(b, ds, 7, 4)


def test_critic_resume_is_exact():
    ds = tiny_dataset()
    torch.manual_seed(0)
    a = CriticLearner(OBS, ACT, TINY_C, reward_scale=0.5)
    _continue(a, ds, 0, 5)
    state = roundtrip(a.state_dict())
    torch.manual_seed(1)
    b = CriticLearner(OBS, ACT, TINY_C)
    b.load_state_dict(state)
    assert _continue(a, ds, 7, 4) == _continue(b, ds, 7, 4)


def test_policy_resume_is_exact_across_phases():
    ds = tiny_dataset()
    cfg = PolicyConfig(
        hidden=(32, 32),
        pretrain_epochs=1,
        steps_per_pretrain_epoch=3,
        train_epochs=20,
        warmup_iters=2,
        use_lagrangian=True,
        slack_bound=0.0,
        cost_threshold=0.01,
    )
    a = make_policy_learner(ds, cfg)  # 3 warm-start steps, then the safe phase
    _continue(a, ds, 0, 4)
    state = roundtrip(a.state_dict())
    b = make_policy_learner(ds, cfg, seed=5)
    b.load_state_dict(state)
    ma, mb = _continue(a, ds, 7, 5), _continue(b, ds, 7, 5)
    assert ma == mb
    assert ma[-1]["policy/branch"] == 3.0 and ma[-1]["policy/lambda"] > 0  # Lagrangian cost branch ran


def test_warm_start_policy_moves_to_behaviour_actions():
    """Acceptance (iii): with beta = 0, L_bc pulls the Dirac policy onto the behaviour's actions."""
    ds = tiny_dataset(n=400)
    torch.manual_seed(0)
    behavior = BehaviorLearner(
        OBS, ACT, BehaviorConfig(width=64, blocks=1, time_dim=16, fourier_features=8, dropout=0.0, lr=3e-3)
    )
    g = gen(0)
    for _ in range(250):
        behavior.update(ds.sample(128, g))
    learner = PolicyLearner(
        OBS,
        ACT,
        behavior.net,
        CriticLearner(OBS, ACT, TINY_C),
        PolicyConfig(hidden=(32, 32), lr=3e-3, pretrain_epochs=1, steps_per_pretrain_epoch=400),
    )
    before = float((learner.act(ds.observations) - ds.actions).abs().mean())
    for _ in range(200):
        assert learner.update(ds.sample(128, g))["policy/branch"] == 0.0  # warm start only
    after = float((learner.act(ds.observations) - ds.actions).abs().mean())
    assert after < 0.5 * before, (before, after)


def test_bc_warm_start_fits_the_dataset_actions_not_the_behaviour_model():
    """``warm_start = "bc"``: the warm start regresses onto the batch's own actions (an untrained
    behaviour model cannot lead it there), clipped into the box; then the safe phase runs."""
    ds = tiny_dataset(n=400)
    cfg = PolicyConfig(hidden=(32, 32), lr=3e-3, pretrain_epochs=1, steps_per_pretrain_epoch=300, train_epochs=2)
    fits = {}
    for mode in ("score", "bc"):
        learner = make_policy_learner(ds, dataclasses.replace(cfg, warm_start=mode))
        g = gen(0)
        for _ in range(300):
            assert learner.update(ds.sample(128, g))["policy/branch"] == 0.0
        fits[mode] = float((learner.act(ds.observations) - ds.actions).pow(2).sum(-1).mean())
        assert learner.update(ds.sample(128, g))["policy/branch"] == 1.0  # the safe phase follows
    assert fits["bc"] < 0.05 < fits["score"], fits
    wide = dataclasses.replace(cfg, warm_start="bc")
    learner = make_policy_learner(ds, wide)
    g = gen(2)
    for _ in range(300):
        learner.update({**ds.sample(64, g), "actions": torch.full((64, ACT), 5.0)})
    assert torch.allclose(learner.act(ds.observations), torch.ones(1), atol=0.05)
    with pytest.raises(ValueError, match="warm_start"):
        PolicyConfig(warm_start="diffusion")
    with pytest.raises(ValueError, match="warm_start_episodes"):
        PolicyConfig(warm_start_episodes="unsafe")


def test_pretrain_lr_gives_the_warm_start_its_own_optimizer_and_resumes_exactly():
    """``pretrain_lr``: warm-start steps move at their own rate; the safe phase starts a fresh
    Adam at ``lr``; a resume in either phase continues bit-identically."""
    ds = tiny_dataset()
    cfg = PolicyConfig(
        hidden=(32, 32),
        pretrain_epochs=1,
        steps_per_pretrain_epoch=4,
        train_epochs=6,
        warmup_iters=2,
        lr=1e-5,
        pretrain_lr=1e-2,
    )
    a = make_policy_learner(ds, cfg)
    metrics = _continue(a, ds, 0, 4)
    assert {m["policy/lr"] for m in metrics} == {1e-2}  # the warm start's optimizer
    assert not a.optimizer.state  # the safe phase's optimizer has not stepped yet
    state = roundtrip(a.state_dict())
    b = make_policy_learner(ds, cfg, seed=5)
    b.load_state_dict(state)
    ma, mb = _continue(a, ds, 9, 4), _continue(b, ds, 9, 4)
    assert ma == mb and all(m["policy/lr"] == pytest.approx(1e-5) for m in ma)
    slow = make_policy_learner(
        ds, PolicyConfig(hidden=(32, 32), pretrain_epochs=1, steps_per_pretrain_epoch=4, train_epochs=6, lr=1e-5)
    )
    before = [p.detach().clone() for p in slow.policy.parameters()]
    _continue(slow, ds, 0, 4)
    moved_slow = sum(float((p.detach() - q).abs().sum()) for p, q in zip(slow.policy.parameters(), before))
    fresh = make_policy_learner(ds, cfg)
    before = [p.detach().clone() for p in fresh.policy.parameters()]
    _continue(fresh, ds, 0, 4)
    moved_fast = sum(float((p.detach() - q).abs().sum()) for p, q in zip(fresh.policy.parameters(), before))
    assert moved_fast > 100 * moved_slow
    with pytest.raises(ValueError, match="pretrain_lr"):
        PolicyConfig(pretrain_lr=0.0)


def test_discounted_cost_to_go_and_calibration_rows():
    """G_c restarts at every episode end; calibration rows avoid returns cut short by a time-out."""
    from corl.algos.drcorl.policy import calibration_rows, discounted_cost_to_go

    costs = np.array([1, 0, 1, 1, 0, 0, 1, 1], dtype=np.float32)
    n = len(costs)
    ds = TransitionDataset.from_numpy(
        dict(
            observations=np.arange(n, dtype=np.float32).reshape(-1, 1),
            actions=np.zeros((n, 1), np.float32),
            rewards=np.zeros(n, np.float32),
            costs=costs,
            next_observations=np.zeros((n, 1), np.float32),
            terminals=np.array([0, 0, 0, 1, 0, 0, 0, 0], bool),
            timeouts=np.array([0] * 7 + [1], bool),
        )
    )
    g = discounted_cost_to_go(ds, 0.5).numpy()
    np.testing.assert_allclose(g[:4], [1 + 0.5 * 0 + 0.25 * 1 + 0.125 * 1, 0 + 0.5 + 0.25, 1.5, 1.0])
    np.testing.assert_allclose(g[4:], [0.25 + 0.125, 0.5 + 0.25, 1.5, 1.0])
    rows = calibration_rows(ds, 0.5, 64, seed=0)  # horizon ceil(log 0.1 / log 0.5) = 4
    obs = set(rows["observations"].reshape(-1).tolist())
    assert obs <= {0.0, 1.0, 2.0, 3.0}  # the terminal episode only: the time-out one is too short
    np.testing.assert_allclose(rows["cost_to_go"].numpy(), g[rows["observations"].reshape(-1).long().numpy()])


SWITCH_TEST = dict(  # a policy learner that reaches the safe phase (and its switch) at once
    hidden=(32, 32), pretrain_epochs=1, steps_per_pretrain_epoch=1, train_epochs=3, warmup_iters=0, cost_threshold=5.0
)


def test_critic_calibration_rescales_the_switch_estimate():
    """With ``critic_calibration`` the estimate is the critic's times mean G_c / mean Q_c(s, a)."""
    from corl.algos.drcorl.policy import calibration_rows

    ds = tiny_dataset()
    base = SWITCH_TEST
    rows = calibration_rows(ds, 0.99, 256, seed=0)
    plain = make_policy_learner(ds, PolicyConfig(**base))
    calib = make_policy_learner(ds, PolicyConfig(**base, critic_calibration=True), calibration=rows)
    calib.policy.load_state_dict(plain.policy.state_dict())  # the critics are equal already (same seed)
    obs = ds.observations[:64]
    c_plain, c_calib = plain._estimate_cost(obs, 0), calib._estimate_cost(obs, 0)
    q = float(calib.critics.q_c_target(rows["observations"], rows["actions"]).mean())
    assert q > 1e-6  # the untrained critic of this seed reads a positive cost
    factor = float(rows["cost_to_go"].mean()) / q
    assert calib.calibration_factor == pytest.approx(factor)
    assert c_calib == pytest.approx(c_plain * factor, rel=1e-5)
    with pytest.raises(ValueError, match="calibration rows"):
        make_policy_learner(ds, PolicyConfig(**base, critic_calibration=True))


def _anchored_learner(anchor: str, train_epochs: int):
    """A ``bc`` warm-started learner with ``estimate_anchor=anchor`` (``C_ref`` = 2, kappa = 5),
    run through its 2 warm-start steps and first safe iteration, whose estimate is ``C_ref``."""
    from corl.algos.drcorl.policy import calibration_rows

    ds = tiny_dataset()
    cfg = PolicyConfig(
        **{**SWITCH_TEST, "steps_per_pretrain_epoch": 2, "train_epochs": train_epochs},
        warm_start="bc",
        estimate_anchor=anchor,
        lr=1e-2,
    )
    rows = calibration_rows(ds, 0.99, 256, seed=0)
    learner = make_policy_learner(ds, cfg, calibration=rows, reference_cost=2.0)
    metrics = _continue(learner, ds, 0, 3)
    assert metrics[-1]["policy/cost_estimate"] == pytest.approx(2.0 / 5.0)  # C_ref / kappa
    return ds, cfg, rows, learner, metrics


def test_estimate_anchor_reads_the_reference_cost_for_the_warm_start_and_moves_with_the_critic():
    """``estimate_anchor = "warm_start"``: the first safe estimate is the warm start's episodes'
    cost; later ones add the critic estimate's change since then (on one fixed state set); the
    anchor survives a checkpoint round trip."""
    from corl.algos.drcorl.policy import critic_episodic_cost

    ds, cfg, rows, learner, metrics = _anchored_learner("warm_start", train_epochs=6)
    raw0 = learner.anchor_raw
    state = roundtrip(learner.state_dict())
    more = _continue(learner, ds, 1, 2)
    raw = float(critic_episodic_cost(learner.critics.q_c_target, learner.policy, rows["observations"], 0.99, 300))
    learner._estimate_cost(ds.observations[:8], 99)  # the batch states are not what it reads
    assert learner.cost_estimate == pytest.approx((2.0 + raw - raw0) / 5.0, rel=1e-4)
    assert more[-1]["policy/cost_estimate"] != metrics[-1]["policy/cost_estimate"]
    resumed = make_policy_learner(ds, cfg, calibration=rows, reference_cost=2.0)
    resumed.load_state_dict(state)
    assert resumed.anchor_raw == raw0
    with pytest.raises(ValueError, match="reference_cost"):
        make_policy_learner(ds, cfg, calibration=rows)
    with pytest.raises(ValueError, match="estimate_anchor"):
        PolicyConfig(estimate_anchor="data")


def test_paired_anchor_reads_the_warm_start_policy_again_with_the_current_critic():
    """``estimate_anchor = "paired"``: ``C = C_ref + C_k(pi_k) - C_k(pi_0)``, both read by the
    critic of the moment on the same fixed states, so a change of the critic alone (its TD
    fine-tuning) does not move the estimate; ``pi_0`` survives a checkpoint round trip."""
    from corl.algos.drcorl.policy import critic_episodic_cost

    ds, cfg, rows, learner, metrics = _anchored_learner("paired", train_epochs=8)
    _continue(learner, ds, 1, 3)
    states = rows["observations"]

    def raw(policy):
        return float(critic_episodic_cost(learner.critics.q_c_target, policy, states, 0.99, 300))

    learner._estimate_cost(ds.observations[:8], 0)
    expected = (2.0 + raw(learner.policy) - raw(learner.start_policy)) / 5.0
    assert learner.cost_estimate == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert learner.cost_estimate != pytest.approx(2.0 / 5.0)  # the policy moved
    before = raw(learner.policy)
    with torch.no_grad():  # the critic alone drifts by a constant: both reads move, the estimate does not
        dict(learner.critics.q_c_target.named_parameters())["net.net.4.bias"].add_(5.0)
    assert raw(learner.policy) == pytest.approx(before + 5.0 * (1 - 0.99) * 300, rel=1e-4)
    assert learner._estimate_cost(ds.observations[:8], 0) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    resumed = make_policy_learner(ds, cfg, calibration=rows, reference_cost=2.0)
    resumed.load_state_dict(roundtrip(learner.state_dict()))
    assert torch.equal(resumed.start_policy(states), learner.start_policy(states))
    with pytest.raises(ValueError, match="reference_cost"):
        make_policy_learner(ds, cfg, calibration=rows)


def test_always_merge_takes_the_middle_branch_whatever_the_estimate_reads():
    """``switch_rule = "always_merge"``: after the warm-up every safe iteration is the PCGrad merge
    (branch code 2), the same updates the paper's rule makes when the estimate sits in the merge
    band (``l - h < C <= l + h``); an unknown rule is refused."""
    ds = tiny_dataset()
    base = dict(SWITCH_TEST, train_epochs=6, warmup_iters=2, lr=1e-2)
    ruled = make_policy_learner(ds, PolicyConfig(**base, switch_rule="always_merge", cost_limit=-50.0))
    banded = make_policy_learner(ds, PolicyConfig(**base, cost_limit=0.0, slack_bound=1e9))
    a, b = _continue(ruled, ds, 0, 7), _continue(banded, ds, 0, 7)
    assert [m["policy/branch"] for m in a] == [0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    assert [m["policy/loss"] for m in a[1:]] == [m["policy/loss"] for m in b[1:]]
    for p_, q_ in zip(ruled.policy.parameters(), banded.policy.parameters()):
        assert torch.equal(p_, q_)
    with pytest.raises(ValueError, match="switch_rule"):
        PolicyConfig(switch_rule="never")


def test_proximal_coef_keeps_the_safe_phase_near_the_warm_start_and_resumes_exactly():
    """``proximal_coef``: ``pi_0`` is frozen at the first safe iteration; with a large coefficient
    the safe phase stays near it where the plain one drifts; a resume continues bit-identically."""
    ds = tiny_dataset(n=400)
    base = dict(SWITCH_TEST, steps_per_pretrain_epoch=50, train_epochs=200, warm_start="bc", lr=3e-3, pretrain_lr=3e-3)
    drift = {}
    for coef in (0.0, 100.0):
        learner = make_policy_learner(ds, PolicyConfig(**base, cost_limit=1e6, beta_coef=1.0, proximal_coef=coef))
        _continue(learner, ds, 0, 50)  # the warm start
        start = learner.act(ds.observations)
        _continue(learner, ds, 1, 150)  # the first safe iteration freezes pi_0
        drift[coef] = float((learner.act(ds.observations) - start).pow(2).sum(-1).mean())
        assert (learner.start_policy is not None) == (coef > 0)
        if coef:
            assert torch.equal(learner.start_policy(ds.observations), start)
    assert drift[100.0] < 0.2 * drift[0.0], drift
    cfg = PolicyConfig(**base, proximal_coef=1.0)
    a = make_policy_learner(ds, cfg)
    _continue(a, ds, 0, 53)
    b = make_policy_learner(ds, cfg, seed=3)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert _continue(a, ds, 4, 5) == _continue(b, ds, 4, 5)
    with pytest.raises(ValueError, match="proximal_coef"):
        PolicyConfig(proximal_coef=-1.0)


def test_guidance_norm_batch_keeps_the_relative_slopes():
    """``regq`` with ``guidance_norm = "batch"``: one scale for the whole batch (unit RMS overall),
    so a state where the critic is twice as steep gets twice the push; ``sample`` equalises them."""
    from corl.algos.drcorl.policy import critic_guidance

    torch.manual_seed(0)
    q = CriticLearner(OBS, ACT, TINY_C).q_r_target
    obs, act = torch.randn(64, OBS), torch.rand(64, ACT) * 2 - 1
    raw, _ = critic_guidance([(q, 1.0, 0.0)], obs, act)
    per_sample, _ = critic_guidance([(q, 1.0, 0.0)], obs, act, regq=True)
    batch, _ = critic_guidance([(q, 1.0, 0.0)], obs, act, regq=True, norm="batch")
    assert torch.allclose(per_sample.pow(2).mean(-1), torch.ones(64), atol=1e-4)
    assert float(batch.pow(2).mean()) == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(batch, raw / raw.pow(2).mean().sqrt(), atol=1e-6)
    assert float(batch.norm(dim=-1).std()) > 0.05  # the slopes still differ between states
    with pytest.raises(ValueError, match="guidance_norm"):
        PolicyConfig(guidance_norm="global")


def _expectile(x: np.ndarray, tau: float) -> float:
    """The tau-expectile of samples x (root of the asymmetric least-squares condition)."""
    from scipy.optimize import brentq

    return brentq(lambda m: np.sum(np.where(x > m, tau, 1 - tau) * (x - m)), x.min(), x.max())


def test_cost_expectile_sets_v_c_alone():
    """``cost_expectile`` changes V_c's expectile only. At one state with many data actions, V_c
    converges to the 0.5-expectile (the mean) of ``min_j Qbar_c(s, a)`` over those actions instead
    of the 0.7 one; V_r follows the same path bit for bit; out-of-range values are refused."""
    obs = torch.zeros(256, OBS)
    act = torch.rand(256, ACT, generator=gen(5)) * 2 - 1
    result = {}
    for ce in (None, 0.5):
        torch.manual_seed(0)
        learner = CriticLearner(OBS, ACT, CriticConfig(hidden=(32, 32), v_lr=1e-2, cost_expectile=ce))
        for _ in range(400):
            learner._update_values(obs, act)
        with torch.no_grad():
            q_c = learner.q_c_target(obs, act).min(0).values.reshape(-1).numpy()
            result[ce] = (float(learner.v_c(obs[:1])), q_c, [p.clone() for p in learner.v_r.parameters()])
    assert result[None][0] == pytest.approx(_expectile(result[None][1], 0.7), abs=2e-3)
    assert result[0.5][0] == pytest.approx(float(result[0.5][1].mean()), abs=2e-3)
    assert result[0.5][0] < result[None][0] - 0.01
    assert all(torch.equal(a, b) for a, b in zip(result[0.5][2], result[None][2]))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="cost_expectile"):
            CriticConfig(cost_expectile=bad)


def test_cost_pessimism_is_the_larger_twin_in_estimate_and_guidance():
    """``cost_pessimism = 1`` on a twin reads the larger member (mean + std of two values), in
    the episodic estimate and in the guidance's gradient; 0 is the members' mean (the paper)."""
    from corl.algos.drcorl.policy import critic_guidance, member_value

    torch.manual_seed(0)
    q = CriticLearner(OBS, ACT, TINY_C).q_c_target
    obs, act = torch.randn(64, OBS), torch.rand(64, ACT) * 2 - 1
    with torch.no_grad():
        both = q(obs, act)
    torch.testing.assert_close(member_value(q, obs, act, 1.0), both.max(0).values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(member_value(q, obs, act, 0.0), both.mean(0))
    policy = lambda s: act  # noqa: E731 - a fixed action per state
    est = {k: float(critic_episodic_cost(q, policy, obs, 0.99, 300, pessimism=k)) for k in (0.0, 1.0)}
    assert est[1.0] == pytest.approx(float(both.max(0).values.mean()) * 0.01 * 300, rel=1e-5)
    assert est[1.0] > est[0.0]
    g, _ = critic_guidance([(q, -1.0, 1.0)], obs, act)
    a = act.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(-q(obs, a).max(0).values.sum(), a)
    torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="cost_pessimism"):
        PolicyConfig(cost_pessimism=-1.0)
