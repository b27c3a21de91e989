"""CVPO (algorithms.md §3): threshold, E-step dual (both solvers), M-step trust regions, a real run."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from corl.algos.cvpo import (
    CVPOConfig,
    CVPOLearner,
    CVPOTrainer,
    estep_dual,
    estep_weights,
    original_config,
    solve_dual_adam,
    solve_dual_slsqp,
    stepwise_threshold,
)
from corl.algos.online import train_online
from corl.envs.factory import make_env

TASK = "SafetyCarCircle-v0"


def _save_load(state: dict) -> dict:
    """A checkpoint round trip through bytes (``weights_only=True``: plain tensors and Python values)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------ §3.4 step-wise threshold
def test_stepwise_threshold_known_values():
    assert stepwise_threshold(10, 0.99, 400) == pytest.approx(10 * (1 - 0.99**400) / (0.01 * 400), rel=1e-12)
    assert stepwise_threshold(10, 0.99, 400) == pytest.approx(2.455, abs=1e-3)
    assert stepwise_threshold(20, 0.99, 300) == pytest.approx(6.33, abs=1e-2)
    assert stepwise_threshold(25, 0.99, 1000) == pytest.approx(2.50, abs=1e-2)
    cfg = CVPOConfig(cost_limit=10.0, gamma=0.99)
    assert cfg.threshold(300) == pytest.approx(stepwise_threshold(10, 0.99, 300))
    # optional decay κ_k = κ_end + (κ_start − κ_end) e^{−5k/K}
    decay = CVPOConfig(cost_limit=10.0, cost_limit_start=40.0, cost_decay_rounds=10)
    assert decay.cost_limit_at(0) == pytest.approx(40.0)
    assert decay.cost_limit_at(4) == pytest.approx(10 + 30 * math.exp(-2.0))
    assert decay.cost_limit_at(50) == pytest.approx(10 + 30 * math.exp(-5.0))


# ------------------------------------------------------------------ §3.5 E-step
def _known_values(k: int = 6, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(n, dtype=torch.float32)
    j = torch.arange(k, dtype=torch.float32)[:, None]
    q = torch.sin(0.7 * i + j) + 0.1 * j  # (K, N)
    c = 2.0 + torch.cos(0.3 * i - j)  # costs positive, mean 2 > eps_c: the constraint binds
    return q, c


def test_estep_dual_solvers_agree_nonnegative_and_weights_normalised():
    q, c = _known_values()
    eps, eps_c = 0.1, 1.8
    duals = torch.nn.Parameter(torch.tensor([0.1, 0.1]))
    opt = torch.optim.Adam([duals], lr=0.1)
    g_adam = solve_dual_adam(duals, opt, q, c, eps, eps_c, iters=400, dual_max=20.0)
    x, g_slsqp = solve_dual_slsqp(np.array([0.1, 0.1]), q, c, eps, eps_c, maxiter=200, tol=1e-10)
    eta_a, lam_a = float(duals[0].detach()), float(duals[1].detach())
    for eta, lam in ((eta_a, lam_a), (x[0], x[1])):
        assert eta > 0 and lam >= 0
        w = estep_weights(q, c, eta, lam)
        assert w.shape == q.shape and (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(q.shape[0]))
    assert lam_a > 0.01  # the cost constraint is active
    assert g_adam == pytest.approx(g_slsqp, abs=1e-2)
    assert eta_a == pytest.approx(x[0], abs=1e-2) and lam_a == pytest.approx(x[1], abs=1e-2)
    # the dual at the optimum is the Monte-Carlo g(η, λ) of §3.5, written with the max stabiliser
    adv = q - x[1] * c
    m = adv.max(-1, keepdim=True).values
    g_ref = x[0] * eps + x[1] * eps_c + (m.squeeze(-1) + x[0] * torch.log(torch.exp((adv - m) / x[0]).mean(-1))).mean()
    assert float(
        estep_dual(torch.tensor(x[0]), torch.tensor(x[1]), q.double(), c.double(), eps, eps_c)
    ) == pytest.approx(float(g_ref), rel=1e-5)


def test_estep_reduces_to_mpo_without_constraint():
    q, c = _known_values()
    w = estep_weights(q, c, 0.5, 0.0)
    torch.testing.assert_close(w, torch.softmax(q / 0.5, -1))
    # with ε_c huge the optimal λ is at its lower bound
    x, _ = solve_dual_slsqp(np.array([0.1, 0.1]), q, c, 0.1, 1e6, maxiter=100, tol=1e-10)
    assert x[1] == pytest.approx(1e-6, abs=1e-5)


@pytest.mark.parametrize("solver", ["adam", "slsqp"])
def test_learner_estep_both_solvers(solver):
    torch.manual_seed(0)
    learner = CVPOLearner(8, 2, CVPOConfig(hidden=(16, 16), estep_solver=solver, sample_action_num=8), horizon=300)
    obs = torch.randn(32, 8)
    actions, weights, logs = learner._e_step(obs)
    assert actions.shape == (8, 32, 2) and weights.shape == (32, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(32))
    assert logs["eta"] > 0 and logs["lambda"] >= 0
    assert (learner.estep_duals.detach() >= 0).all()


# ------------------------------------------------------------------ §3.6 M-step trust regions
def _mstep_after(cfg: CVPOConfig) -> dict[str, float]:
    torch.manual_seed(0)
    learner = CVPOLearner(8, 2, cfg, horizon=300)
    learner.begin_round()
    obs = torch.randn(64, 8)
    actions = learner.behaviour.distribution(obs).sample((16,))
    weights = torch.softmax(5.0 * actions[..., 0].t(), -1)  # a strong pull toward large a_0
    return learner._m_step(obs, actions, weights)


def test_mstep_kl_constraints_respected():
    base = dict(hidden=(32, 32), mstep_iter_num=200, actor_lr=3e-3)
    free = _mstep_after(CVPOConfig(**base, mstep_dual_max=0.0))  # multipliers pinned at 0
    assert free["kl_mu"] > 10 * 0.005 and free["kl_sigma"] > 10 * 0.0005  # the pull is strong
    held = _mstep_after(CVPOConfig(**base, mstep_dual_max=1e3, mstep_dual_lr=1.0))
    assert held["kl_mu"] <= 1.5 * 0.005 and held["kl_sigma"] <= 1.5 * 0.0005
    assert held["alpha_mu"] > 0 and held["alpha_sigma"] > 0
    proj = _mstep_after(
        CVPOConfig(
            **base,
            mstep_dual_mode="projected",
            mstep_kl_mu=0.005,
            mstep_kl_std=0.0005,
            mstep_step_mu=1e3,
            mstep_step_sigma=1e5,
            mstep_alpha_mu_max=1e3,
            mstep_alpha_sigma_max=1e4,
        )
    )
    assert proj["kl_mu"] <= 2.0 * 0.005 and proj["kl_sigma"] <= 2.0 * 0.0005


def test_cholesky_policy_update_runs():
    torch.manual_seed(0)
    learner = CVPOLearner(8, 2, original_config(hidden=(16, 16), sample_action_num=8, mstep_iter_num=2), horizon=300)
    batch = {
        "observations": torch.randn(16, 8),
        "actions": torch.rand(16, 2) * 2 - 1,
        "rewards": torch.randn(16),
        "costs": torch.rand(16),
        "next_observations": torch.randn(16, 8),
        "terminals": torch.zeros(16),
    }
    logs = learner.update(batch)
    assert all(math.isfinite(v) for v in logs.values())


# ------------------------------------------------------------------ a real run + resume
def test_cvpo_short_real_run_dataset_and_resume():
    torch.manual_seed(0)
    cfg = CVPOConfig(
        hidden=(16, 16), batch_size=32, sample_action_num=8, episodes_per_round=1, update_per_step=0.02, cost_limit=10.0
    )
    trainer = CVPOTrainer.for_task(TASK, cfg)
    seen = []
    res = train_online(trainer, TASK, 600, num_envs=1, seed=3, fixed_horizon=True, on_episode=seen.append)
    ds = res.dataset
    assert len(ds) == 600 and ds.num_episodes == 2 and len(seen) == 2
    assert ds.timeouts.nonzero().flatten().tolist() == [299, 599] and not ds.terminals.any()
    assert len(res.logs) == 2 and trainer.learner.total_steps == 12 and trainer.learner.rounds == 2
    meta = ds.metadata["episode_info"]
    assert [m["training_step"] for m in meta] == [0, 6] and meta[0]["cost_limit"] == 10.0 and meta[0]["seed"] == 3
    # the costs recorded are the env's: replay episode 0's actions in a fresh env with the same seed
    env = make_env(TASK)
    obs, _ = env.reset(seed=3)
    rewards, costs = [], []
    for a in ds.actions[:300].numpy():
        obs, r, _, _, info = env.step(a)
        rewards.append(r)
        costs.append(info["cost"])
    env.close()
    np.testing.assert_allclose(ds.costs[:300].numpy(), costs)
    np.testing.assert_allclose(ds.rewards[:300].numpy(), rewards, rtol=1e-5, atol=1e-6)
    assert ds.episode_returns()["cost"].tolist() == pytest.approx([e.cost for e in seen])
    np.testing.assert_allclose(trainer.buffer.storage["costs"][:600].numpy(), ds.costs.numpy())
    # exact resume: a round from a restored copy equals the round of the original
    state = _save_load(trainer.state_dict())
    trainer.run_updates(3)
    clone = CVPOTrainer.for_task(TASK, cfg)
    clone.load_state_dict(state)
    clone.run_updates(3)
    for a, b in zip(trainer.learner.state_dict().values(), clone.learner.state_dict().values()):
        if isinstance(a, dict) and all(torch.is_tensor(v) for v in a.values()):
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    torch.testing.assert_close(trainer.learner.estep_duals, clone.learner.estep_duals, rtol=0, atol=0)


def test_fixed_horizon_wrapper_cuts_episodes_at_T():
    import gymnasium as gym

    from corl.algos.online import FixedHorizon, OnlineCollector

    env = gym.vector.SyncVectorEnv([lambda: FixedHorizon(make_env(TASK), 40)])
    col = OnlineCollector(TASK, 1, seed=0, env=env)
    for _ in range(100):
        col.step(actions=np.zeros((1, 2), dtype=np.float32))
    ds = col.dataset(include_partial=True)
    assert len(ds) == 100 and ds.timeouts.nonzero().flatten().tolist() == [39, 79, 99]
    assert [e.length for e in col.episodes] == [40, 40] and ds.metadata["partial_episodes"] == 1


def test_nstep_rows_known_values():
    from corl.algos.online import VectorStep

    trainer = CVPOTrainer(3, 1, CVPOConfig(hidden=(8, 8), n_step=3, gamma=0.5, episodes_per_round=99), horizon=5)
    rewards, costs = [1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 0.0, 1.0, 0.0]
    for t in range(5):
        obs = np.full((1, 3), t, dtype=np.float32)
        step = VectorStep(
            obs,
            np.zeros((1, 1), np.float32),
            np.zeros((1, 1), np.float32),
            np.array([rewards[t]], np.float32),
            np.array([costs[t]], np.float32),
            obs + 1,
            np.array([False]),
            np.array([t == 4]),
        )
        trainer.observe(step)
    buf = {k: v[: len(trainer.buffer)] for k, v in trainer.buffer.storage.items()}
    assert len(trainer.buffer) == 5
    torch.testing.assert_close(buf["rewards"], torch.tensor([2.75, 4.5, 6.25, 6.5, 5.0]))
    torch.testing.assert_close(buf["costs"], torch.tensor([0.5, 1.25, 0.5, 1.0, 0.0]))
    torch.testing.assert_close(buf["discounts"], torch.tensor([0.125, 0.125, 0.125, 0.25, 0.5]))
    torch.testing.assert_close(buf["next_observations"][:, 0], torch.tensor([3.0, 4.0, 5.0, 5.0, 5.0]))
    torch.testing.assert_close(buf["observations"][:, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))


def test_decoupled_kl_closed_forms():
    from corl.algos.cvpo import decoupled_kl
    from corl.nn.policies import CholeskyGaussianPolicy, DiagGaussianPolicy

    mb, sb = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.5]])
    mt, st = torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.5]])
    kl_mu, kl_sigma = decoupled_kl(DiagGaussianPolicy.make_distribution, mb, sb, mt, st)
    assert float(kl_mu) == pytest.approx(0.5 * (0.25 / 1.0 + 1.0 / 0.25))
    assert float(kl_sigma) == pytest.approx(0.5 * (math.log(4.0) + 1 / 4.0 - 1) + 0.0)
    # full covariance: ½ Δμᵀ Σ_b⁻¹ Δμ and ½[tr(Σ_θ⁻¹ Σ_b) − n + log det Σ_θ / det Σ_b]
    lb = torch.tensor([[[1.0, 0.0], [0.5, 1.0]]])
    lt = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    kl_mu, kl_sigma = decoupled_kl(CholeskyGaussianPolicy.make_distribution, mb, lb, mt, lt)
    cov_b, cov_t = lb[0] @ lb[0].T, lt[0] @ lt[0].T
    d = (mt - mb)[0]
    assert float(kl_mu) == pytest.approx(float(0.5 * d @ torch.linalg.solve(cov_b, d)), rel=1e-5)
    ref = 0.5 * (torch.trace(torch.linalg.solve(cov_t, cov_b)) - 2 + torch.logdet(cov_t) - torch.logdet(cov_b))
    assert float(kl_sigma) == pytest.approx(float(ref), rel=1e-5)


def test_fsrl_preset_is_fsrls_carcircle_work_per_step():
    """``pipelines/cvpo.toml``'s ``fsrl`` preset: FSRL's CarCircle TrainCfg (bench_cvpo_fsrl.py times it)."""
    import corl.pipeline.stages  # noqa: F401
    from corl.pipeline.spec import load_spec

    cfg = load_spec("cvpo").resolve("SafetyCarCircle-v0", "fsrl")["train"]
    assert (cfg.num_envs, cfg.episodes_per_round, cfg.update_per_step, cfg.batch_size) == (10, 10, 0.2, 256)
    assert (cfg.estep_solver, cfg.estep_iter_num, cfg.estep_dual_lr, cfg.estep_dual_max) == ("adam", 1, 0.02, 20.0)
    assert (cfg.num_q, cfg.n_step, cfg.gamma, cfg.tau, list(cfg.hidden)) == (1, 2, 0.97, 0.05, [128, 128])
    assert cfg.eval_every == 0 and cfg.warmup_steps == 0 and cfg.behaviour == "snapshot" and cfg.cost_limit == 10.0
