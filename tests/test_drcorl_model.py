"""DRCORL's model-based extension at tiny sizes, with real components: MICRO's ensemble fitted
on simulator data collected here, the model estimate, the offline selector, the model-driven
switch and the dynamics stage shared with the micro pipeline."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from corl.algos.drcorl import (
    BehaviorConfig,
    BehaviorLearner,
    CriticConfig,
    CriticLearner,
    PolicyConfig,
    PolicyLearner,
    initial_observations,
    iql_reward_scale,
    normalised_cost,
    switch_branch,
)
from corl.algos.drcorl.model_estimate import (
    ModelEstimateConfig,
    PolicyModelEstimator,
    model_episodic_estimate,
    observation_bounds,
)
from corl.algos.drcorl.selection import IterateLabel, OfflineSelector
from corl.algos.micro import DynamicsConfig, DynamicsLearner
from corl.data.dataset import TransitionDataset

TASK = "OfflineCarCircle-v0"


class ConstantPolicy(nn.Module):
    """The same action everywhere: (1, 0) drives straight ahead, (0, 0) stands still."""

    def __init__(self, action) -> None:
        super().__init__()
        self.register_buffer("action", torch.tensor(action, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action.expand(obs.shape[0], -1)


def fit_dynamics(ds: TransitionDataset, hidden=(64, 64), epochs: int = 15, seed: int = 0):
    cfg = DynamicsConfig(
        ensemble_size=4,
        num_elites=3,
        hidden=tuple(hidden),
        weight_decays=(2.5e-5,) * len(hidden) + (1e-4,),
        max_epochs=epochs,
        predict_cost=True,
    )
    torch.manual_seed(seed)
    learner = DynamicsLearner(ds.obs_dim, ds.act_dim, cfg)
    learner.fit(ds, torch.Generator().manual_seed(seed))
    return learner.model.eval()


@pytest.fixture(scope="module")
def carcircle():
    """8 scripted CarCircle episodes (controllers of varied aggressiveness: some leave the
    safe band, some do not) and MICRO's ensemble fitted on them."""
    from corl.collect.recorder import CollectConfig, collect_episodes
    from corl.tasks import get_task

    ds = collect_episodes(get_task(TASK), CollectConfig(episodes=8, policy="scripted", seed=0))
    costs = ds.episode_returns()["cost"]
    assert (costs > 10).any() and (costs <= 10).any()  # both kinds of behaviour are in the data
    return ds, fit_dynamics(ds)


@pytest.mark.parametrize("start_states", ["dataset", "initial"])
def test_model_estimate_ranks_driving_out_above_standing_still(carcircle, start_states):
    """In the simulator, full throttle straight ahead leaves the band |x| <= 6 (cost ~260 per
    episode on most seeds) and standing still costs 0; the model estimate must rank them so."""
    ds, model = carcircle
    cfg = ModelEstimateConfig(horizon=10, start_states=start_states, num_starts=300, pessimism=1.0)
    est = PolicyModelEstimator(model, cfg, 0.99, 300, ds.observations, initial_observations(ds), seed=0)
    straight, still = est.estimate(ConstantPolicy([1.0, 0.0])), est.estimate(ConstantPolicy([0.0, 0.0]))
    assert straight.cost > 1.3 * still.cost, (straight, still)
    assert straight.steps == (300 if start_states == "initial" else 10)


def test_model_estimate_is_deterministic_given_seed_and_pessimism_is_monotone(carcircle):
    ds, model = carcircle
    pol = ConstantPolicy([0.5, 0.3])
    cfg = ModelEstimateConfig(horizon=5, num_starts=200)
    a = PolicyModelEstimator(model, cfg, 0.99, 300, ds.observations, seed=3).estimate(pol)
    b = PolicyModelEstimator(model, cfg, 0.99, 300, ds.observations, seed=3).estimate(pol)
    c = PolicyModelEstimator(model, cfg, 0.99, 300, ds.observations, seed=4).estimate(pol)
    assert a == b and a != c
    lo = PolicyModelEstimator(
        model, ModelEstimateConfig(horizon=5, num_starts=200, pessimism=0.0), 0.99, 300, ds.observations, seed=3
    ).estimate(pol)
    hi = PolicyModelEstimator(
        model, ModelEstimateConfig(horizon=5, num_starts=200, pessimism=2.0), 0.99, 300, ds.observations, seed=3
    ).estimate(pol)
    assert hi.cost > a.cost > lo.cost and hi.reward < a.reward < lo.reward
    assert math.isfinite(a.cost_disagreement) and a.cost_disagreement > 0


def test_critic_tail_is_mve_bootstrap(carcircle):
    """With Qbar_c = 5 and Qbar_r = 40 (reward scale 2) everywhere, the tail adds exactly
    (1 - gamma) T gamma^H 5 to the cost and (1 - gamma) T gamma^H 20 to the reward."""
    ds, model = carcircle
    gamma, T, H = 0.99, 300, 7
    cfg = ModelEstimateConfig(horizon=H, num_starts=100)
    pol = ConstantPolicy([0.2, -0.4])

    def q(value):
        return lambda obs, act: torch.full((2, obs.shape[0]), value)

    def run(**kw):
        return model_episodic_estimate(
            model,
            pol,
            ds.observations,
            cfg,
            gamma,
            T,
            torch.Generator().manual_seed(0),
            obs_bounds=observation_bounds(ds.observations),
            **kw,
        )

    bare, tailed = run(), run(q_c=q(5.0), q_r=q(40.0), reward_scale=2.0)
    factor = (1 - gamma) * T * gamma**H
    assert tailed.cost_model == pytest.approx(bare.cost)
    assert tailed.cost - bare.cost == pytest.approx(factor * 5.0, rel=1e-4)
    assert tailed.reward - bare.reward == pytest.approx(factor * 20.0, rel=1e-4)


def test_offline_selector_prefers_estimated_reward_within_limit_else_lowest_cost():
    sel = OfflineSelector(cost_limit=1.0)
    assert sel.best() is None
    sel.add(IterateLabel(100, 30.0, 200.0, 3.0))
    sel.add(IterateLabel(200, 12.0, 150.0, 1.2))
    assert sel.best().iteration == 200  # none within the limit: the lowest cost
    sel.add(IterateLabel(300, 8.0, 90.0, 0.8))
    sel.add(IterateLabel(400, 9.0, 120.0, 0.9))
    sel.add(IterateLabel(500, 2.0, 60.0, 0.2))
    assert sel.best().iteration == 400  # the highest reward among the safe ones
    other = OfflineSelector(0.0)
    other.load_state_dict(sel.state_dict())
    assert other.best() == sel.best() and other.cost_limit == 1.0


# ----------------------------------------------------------------------------- the model-driven switch
def _tiny_data(n: int = 300, seed: int = 0) -> TransitionDataset:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    act = np.tanh(obs[:, :2] + 0.05 * rng.normal(size=(n, 2))).astype(np.float32)
    return TransitionDataset.from_numpy(
        dict(
            observations=obs,
            actions=act,
            rewards=obs[:, 1].copy(),
            costs=(obs[:, 0] > 0.5).astype(np.float32),
            next_observations=np.roll(obs, -1, 0),
            terminals=np.zeros(n, dtype=bool),
            timeouts=np.arange(n) % 50 == 49,
        )
    )


def test_model_switch_estimator_drives_the_switch():
    """switch_estimator='model': C_hat is the normalised model estimate of the pre-update policy."""
    ds = _tiny_data()
    model = fit_dynamics(ds, hidden=(16, 16), epochs=2)
    torch.manual_seed(0)
    critics = CriticLearner(4, 2, CriticConfig(hidden=(16, 16)), reward_scale=iql_reward_scale(ds))
    estimator = PolicyModelEstimator(
        model, ModelEstimateConfig(horizon=3, num_starts=64), 0.99, 50, ds.observations, critics=critics, seed=1
    )
    cfg = PolicyConfig(
        hidden=(16, 16),
        pretrain_epochs=0,
        train_epochs=3,
        warmup_iters=0,
        switch_estimator="model",
        cost_threshold=2.0,
        episode_len=50,
    )
    behavior = BehaviorLearner(4, 2, BehaviorConfig(width=16, blocks=1, time_dim=8, fourier_features=4)).net
    learner = PolicyLearner(4, 2, behavior, critics, cfg, cost_estimator=estimator)
    g = torch.Generator().manual_seed(0)
    learner.update(ds.sample(32, g))  # k = 0: warm-up, reward branch
    before = copy.deepcopy(learner.policy)
    critics_before = copy.deepcopy(critics)
    m = learner.update(ds.sample(32, g))
    ref = PolicyModelEstimator(model, estimator.config, 0.99, 50, ds.observations, critics=critics_before, seed=1)
    expected = normalised_cost(ref.estimate(before).cost, 2.0)
    assert m["policy/cost_estimate"] == pytest.approx(expected, rel=1e-6)
    assert m["policy/branch"] == {"reward": 1.0, "merge": 2.0, "cost": 3.0}[switch_branch(expected, 1.0, 0.5, 1, 0)]
    with pytest.raises(ValueError, match="cost_estimator"):
        PolicyLearner(4, 2, behavior, critics, cfg)
