"""MICRO's learners at tiny sizes on real Hopper-v4 transitions (random actions, real physics)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from corl.algos.micro import (
    DynamicsConfig,
    DynamicsLearner,
    MICROConfig,
    MICROPolicyLearner,
    MICROTrainer,
    model_rollout,
    paper_config,
    paper_dynamics_config,
    sample_mixed_batch,
    termination_fn,
)
from corl.algos.micro.termination import hopper_termination
from corl.data.dataset import TransitionDataset
from corl.data.replay import TensorReplayBuffer
from corl.envs import make_env


def collect_random(task: str = "hopper-medium-v2", steps: int = 600, seed: int = 0) -> TransitionDataset:
    """``steps`` transitions of the task's simulator under uniform random actions."""
    env = make_env(task, seed=seed)
    obs, _ = env.reset(seed=seed)
    rows: dict[str, list] = {
        k: [] for k in ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")
    }
    for _ in range(steps):
        act = env.action_space.sample()
        nxt, rew, term, trunc, info = env.step(act)
        for k, v in zip(rows, (obs, act, rew, info["cost"], nxt, term, trunc)):
            rows[k].append(v)
        obs = env.reset()[0] if (term or trunc) else nxt
    env.close()
    return TransitionDataset.from_numpy({k: np.asarray(v) for k, v in rows.items()}, {"task": task})


@pytest.fixture(scope="module")
def hopper_data() -> TransitionDataset:
    return collect_random()


def tiny_dynamics(**kw) -> DynamicsConfig:
    base = dict(
        ensemble_size=4,
        num_elites=2,
        hidden=(32, 32),
        weight_decays=(2.5e-5, 5e-5, 1e-4),
        batch_size=64,
        max_epochs=4,
        max_holdout=120,
    )
    return DynamicsConfig(**{**base, **kw})


def tiny_micro(**kw) -> MICROConfig:
    base = dict(
        hidden=(32, 32),
        batch_size=32,
        real_ratio=0.25,
        num_samples=3,
        rollout_batch_size=64,
        rollout_length=3,
        rollout_freq=5,
        model_retain_epochs=2,
        steps_per_epoch=4,
        lr_schedule_epochs=10,
    )
    return MICROConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def fitted(hopper_data):
    torch.manual_seed(0)
    learner = DynamicsLearner(hopper_data.obs_dim, hopper_data.act_dim, tiny_dynamics())
    metrics = learner.fit(hopper_data, torch.Generator().manual_seed(0))
    return learner, metrics


# ---------------------------------------------------------------------------- dynamics
def test_gaussian_nll_decreases(hopper_data):
    torch.manual_seed(0)
    learner = DynamicsLearner(hopper_data.obs_dim, hopper_data.act_dim, tiny_dynamics())
    batch = {k: getattr(hopper_data, k) for k in ("observations", "actions", "rewards", "costs", "next_observations")}
    learner.fit_scalers(batch)
    before = learner.evaluate(batch)
    for _ in range(40):
        learner.update(batch)
    after = learner.evaluate(batch)
    assert torch.all(after["nll"] < before["nll"] - 0.1), (before["nll"], after["nll"])
    assert torch.all(after["mse"] < before["mse"])


def test_elites_have_lowest_holdout_error(hopper_data, fitted):
    learner, metrics = fitted
    rows = learner.holdout_rows
    assert len(rows) == min(int(len(hopper_data) * 0.2), learner.config.max_holdout)
    holdout = {
        k: getattr(hopper_data, k)[rows] for k in ("observations", "actions", "rewards", "costs", "next_observations")
    }
    mse = learner.evaluate(holdout)["mse"]
    assert torch.allclose(mse, learner.best_holdout, rtol=1e-4)  # snapshots were restored
    elites = set(learner.model.elites.tolist())
    assert elites == set(torch.argsort(mse)[: learner.config.num_elites].tolist())
    assert metrics["dynamics/epochs"] <= learner.config.max_epochs


def test_member_rows_step_matches_all_members(fitted, hopper_data):
    model = fitted[0].model
    obs, act = hopper_data.observations[:50], hopper_data.actions[:50]
    torch.manual_seed(3)
    a = model.step(obs, act, member_rows=True)
    torch.manual_seed(3)
    choice = torch.randint(0, len(model.elites), (50,))
    mean, logvar = model.predict(obs, act)
    mu = mean[model.elites[choice], torch.arange(50)]
    # same member choice, same noise -> same sample as selecting from all members
    b = model.split(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar[model.elites[choice], torch.arange(50)]), obs)
    assert torch.allclose(a["next_observations"], b["next_observations"], atol=1e-5)


def test_dynamics_resume_is_exact(hopper_data):
    cfg = tiny_dynamics()
    torch.manual_seed(0)
    a = DynamicsLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg)
    a.fit_scalers(
        {k: getattr(hopper_data, k) for k in ("observations", "actions", "rewards", "costs", "next_observations")}
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        a.update(hopper_data.sample(64, gen))
    state = copy.deepcopy(a.state_dict())
    gen_state = gen.get_state()
    first = [a.update(hopper_data.sample(64, gen))["dynamics/loss"] for _ in range(3)]
    torch.manual_seed(99)
    b = DynamicsLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg)
    b.load_state_dict(state)
    gen.set_state(gen_state)
    second = [b.update(hopper_data.sample(64, gen))["dynamics/loss"] for _ in range(3)]
    assert first == second


# ---------------------------------------------------------------------------- termination, rollouts
def test_hopper_termination_and_released_one_sided_bound():
    healthy = torch.tensor([[1.25, 0.0] + [0.0] * 9])
    low = healthy.clone()
    low[0, 0] = 0.5
    tilted = healthy.clone()
    tilted[0, 1] = 0.3
    huge_neg = healthy.clone()
    huge_neg[0, 5] = -200.0
    nan = healthy.clone()
    nan[0, 3] = float("nan")
    s = torch.cat([healthy, low, tilted, huge_neg, nan])
    fixed = termination_fn("hopper-medium-v2")(s, None, s)
    released = termination_fn("hopper-medium-v2", two_sided_bound=False)(s, None, s)
    assert fixed.tolist() == [False, True, True, True, True]
    assert released.tolist() == [False, True, True, False, True]
    assert not termination_fn("OfflineCarCircle-v0")(s, None, s).any()


def test_rollouts_stop_at_terminal_states(fitted, hopper_data):
    model = fitted[0].model
    policy = MICROPolicyLearner(hopper_data.obs_dim, hopper_data.act_dim, tiny_micro()).actor
    start = hopper_data.observations[:40].clone()
    start[:20, 0] = 0.3  # fallen: every model step from here predicts height << 0.7
    torch.manual_seed(0)
    out, stats = model_rollout(model, policy, start, horizon=4, termination=termination_fn("hopper"))
    done = out["terminals"].bool()
    assert torch.equal(done, hopper_termination(out["observations"], out["actions"], out["next_observations"]))
    for traj in out["trajectory"].unique():
        rows = out["trajectory"] == traj
        steps, d = out["step"][rows], done[rows]
        assert steps.tolist() == list(range(len(steps)))  # contiguous from step 0
        assert not d[:-1].any()  # a terminal is always the trajectory's last step
        assert d[-1] or len(steps) == 4
    fallen = out["trajectory"] < 20
    assert done[fallen].all() and (out["step"][fallen] == 0).all()
    # each step's rows are exactly the previous step's survivors
    for t in range(1, int(out["step"].max()) + 1):
        prev = (out["step"] == t - 1) & ~done
        assert torch.equal(out["trajectory"][out["step"] == t], out["trajectory"][prev])
        assert torch.equal(out["observations"][out["step"] == t], out["next_observations"][prev])


# ---------------------------------------------------------------------------- policy learner
def mixed_batch(hopper_data, fitted, cfg, gen):
    model = fitted[0].model
    buffer = TensorReplayBuffer.for_transitions(500, hopper_data.obs_dim, hopper_data.act_dim)
    out, _ = model_rollout(
        model,
        MICROPolicyLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg).actor,
        hopper_data.observations[:100],
        2,
        termination_fn("hopper"),
    )
    buffer.add(out)
    return sample_mixed_batch(hopper_data, buffer, cfg.batch_size, cfg.real_ratio, gen)


def test_robust_target_never_above_plain(hopper_data, fitted):
    cfg = tiny_micro(penalty_coef=1.0)
    torch.manual_seed(0)
    learner = MICROPolicyLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg, fitted[0].model)
    for i in range(3):
        batch = mixed_batch(hopper_data, fitted, cfg, torch.Generator().manual_seed(i))
        torch.manual_seed(10 + i)
        robust, u = learner.conservative_target(batch, robust=True)
        torch.manual_seed(10 + i)
        plain, u0 = learner.conservative_target(batch, robust=False)
        assert (robust <= plain + 1e-6).all()
        assert (u >= 0).all() and (u0 == 0).all()
        assert (u[batch["is_model"] == 0] == 0).all()  # real rows are never penalised
        assert (u[batch["is_model"] == 1] > 0).any()
        learner.update(batch)


@pytest.mark.parametrize("cost_limit", [None, 5.0])
def test_policy_resume_is_exact(hopper_data, fitted, cost_limit):
    cfg = tiny_micro(cost_limit=cost_limit)
    torch.manual_seed(0)
    trainer = MICROTrainer(cfg, hopper_data, fitted[0].model, termination_fn("hopper"))
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        trainer.step(gen)
    state = copy.deepcopy(trainer.state_dict())
    gen_state, rng_state = gen.get_state(), torch.get_rng_state()
    first = [trainer.step(gen) for _ in range(6)]  # crosses a rollout (step 10) and an lr step
    torch.manual_seed(123)
    resumed = MICROTrainer(cfg, hopper_data, fitted[0].model, termination_fn("hopper"))
    resumed.load_state_dict(state)
    gen.set_state(gen_state)
    torch.set_rng_state(rng_state)
    second = [resumed.step(gen) for _ in range(6)]
    assert first == second
    assert resumed.learner.total_steps == 12
    assert "rollout/transitions" in first[4]  # step 10
    if cost_limit is not None:
        assert "lagrange/value" in first[-1]


def test_lambda_zero_is_plain_sac(hopper_data, fitted):
    cfg = tiny_micro(penalty_coef=0.0)
    learner = MICROPolicyLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg, fitted[0].model)
    batch = mixed_batch(hopper_data, fitted, cfg, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    y0, _ = learner.conservative_target(batch, robust=True)
    torch.manual_seed(1)
    y1, _ = learner.conservative_target(batch, robust=False)
    assert torch.equal(y0, y1)


def test_paper_presets():
    hm = paper_config("hopper-medium-v2")
    assert (hm.penalty_coef, hm.rollout_length, hm.auto_alpha, hm.alpha) == (1.0, 5, False, 0.1)
    assert paper_dynamics_config("hopper-medium-v2").max_epochs_since_update == 10 and hm.real_batch_size == 12
    wm = paper_config("walker2d-medium-v2")
    assert paper_dynamics_config("walker2d-medium-v2").max_epochs == 30
    assert wm.model_buffer_capacity == 50_000 * 5 * 5
    safe = paper_config("OfflineCarCircle-v0", cost_limit=10.0)
    assert safe.target_clamp_min is None and safe.cost_limit == 10.0
    assert paper_dynamics_config("OfflineCarCircle-v0").predict_cost
    assert paper_dynamics_config("hopper-medium-v2", dyn_max_epochs=3, batch_size=8).max_epochs == 3
    with pytest.raises(ValueError, match="unknown MICRO config keys"):
        paper_config("hopper-medium-v2", dyn_no_such_key=1)
    with pytest.raises(ValueError, match="real_ratio"):  # the learner validates itself, stage or not
        paper_config("hopper-medium-v2", real_ratio=2.0)
    with pytest.raises(ValueError, match="num_elites"):
        paper_dynamics_config("hopper-medium-v2", num_elites=9)


@pytest.mark.parametrize(
    "flags",
    [
        dict(max_q_backup=True),
        dict(deterministic_backup=True, auto_alpha=False),
        dict(target_clamp_min=None, rollout_member_rows=False),
    ],
)
def test_backup_variants_run(hopper_data, fitted, flags):
    cfg = tiny_micro(**flags)
    trainer = MICROTrainer(cfg, hopper_data, fitted[0].model, termination_fn("hopper"))
    gen = torch.Generator().manual_seed(0)
    metrics = [trainer.step(gen) for _ in range(2)][-1]
    assert all(np.isfinite(v) for v in metrics.values())


def test_cost_predicting_model_and_never_terminate(hopper_data):
    cfg = tiny_dynamics(predict_cost=True, max_epochs=1)
    learner = DynamicsLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg)
    learner.fit(hopper_data, torch.Generator().manual_seed(0))
    assert learner.model.target_dim == hopper_data.obs_dim + 2
    policy = MICROPolicyLearner(hopper_data.obs_dim, hopper_data.act_dim, tiny_micro()).actor
    out, stats = model_rollout(
        learner.model, policy, hopper_data.observations[:16], 3, termination_fn("OfflineCarCircle-v0")
    )
    assert out["costs"].shape == (48,) and stats["rollout/terminal_fraction"] == 0.0


def test_dynamics_fit_resumes_after_interruption(hopper_data):
    cfg = tiny_dynamics(max_epochs=3, max_epochs_since_update=10)
    torch.manual_seed(0)
    full = DynamicsLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg)
    full.fit(hopper_data, torch.Generator().manual_seed(5))

    class Interrupt(Exception):
        pass

    saved = {}

    def stop_after_first(epoch, metrics):
        saved["state"] = copy.deepcopy(part.state_dict())
        raise Interrupt

    torch.manual_seed(0)
    part = DynamicsLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg)
    with pytest.raises(Interrupt):
        part.fit(hopper_data, torch.Generator().manual_seed(5), on_epoch_end=stop_after_first)
    resumed = DynamicsLearner(hopper_data.obs_dim, hopper_data.act_dim, cfg)
    resumed.load_state_dict(saved["state"])
    resumed.fit(hopper_data, torch.Generator().manual_seed(5))
    assert resumed.epoch == full.epoch == 3
    assert torch.equal(resumed.best_holdout, full.best_holdout)
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        assert torch.equal(a, b)
