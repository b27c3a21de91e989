"""MICE (algorithms.md §4): memory, intrinsic cost, bias-corrected cost value, CPO step, a real run."""

from __future__ import annotations

import io
import math

import pytest
import torch

from corl.algos.mice import (
    FlashbulbMemory,
    IntrinsicCostModule,
    MICEConfig,
    MICETrainer,
    bias_corrected_cost_value,
    conjugate_gradient,
    cpo_step_direction,
    discounted_cumsum,
    gae,
    kernel_pseudo_count,
)
from corl.algos.online import OnlineCollector, train_online

TASK = "SafetyCarCircle-v0"


def _save_load(state: dict) -> dict:
    """A checkpoint round trip through bytes (``weights_only=True``: plain tensors and Python values)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------ §4.3 memory
def test_memory_insert_and_fifo_evict():
    mem = FlashbulbMemory(num_envs=2, emb_dim=2, capacity=3)
    for v in range(5):  # env 0 gets 0..4, env 1 only the even ones
        emb = torch.tensor([[v, -v], [10 + v, 0]], dtype=torch.float32)
        mem.insert(torch.tensor([True, v % 2 == 0]), emb)
    torch.testing.assert_close(mem.entries(0), torch.tensor([[2.0, -2.0], [3.0, -3.0], [4.0, -4.0]]))  # 0, 1 evicted
    torch.testing.assert_close(mem.entries(1), torch.tensor([[10.0, 0.0], [12.0, 0.0], [14.0, 0.0]]))
    assert mem.count.tolist() == [3, 3] and len(mem) == 6
    mem.insert(torch.tensor([False, True]), torch.tensor([[0.0, 0.0], [16.0, 0.0]]))
    torch.testing.assert_close(mem.entries(1), torch.tensor([[12.0, 0.0], [14.0, 0.0], [16.0, 0.0]]))
    torch.testing.assert_close(mem.entries(0)[0], torch.tensor([2.0, -2.0]))  # untouched


# ------------------------------------------------------------------ §4.3 intrinsic cost
def test_kernel_pseudo_count_hand_computed():
    # env 0: memory at distances 0, 1, 3 from the query; k = 2 -> δ = (0, 1), mean 0.5
    memory = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]], [[5.0, 5.0], [6.0, 6.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True, True], [True, True, False]])  # env 1 holds only k = 2 entries
    query = torch.zeros(2, 2)
    c = kernel_pseudo_count(query, memory, valid, k=2, xi=0.008, eps_kernel=1e-4)
    scaled = [0.0, max(1.0 / 0.5 - 0.008, 0.0)]  # (0/0.5 - ξ)^+ = 0, 2 - ξ = 1.992
    expected = math.sqrt(sum(1e-4 / (d + 1e-4) for d in scaled))  # sqrt(1 + 1e-4/1.9921)
    assert float(c[0]) == pytest.approx(expected, rel=1e-6)
    assert float(c[0]) == pytest.approx(1.0000251, abs=1e-6)
    assert float(c[1]) == 0.0  # |M| ≤ k → 0
    # all k nearest distances 0 (0/0) → 0
    same = kernel_pseudo_count(torch.zeros(1, 2), torch.zeros(1, 3, 2), torch.ones(1, 3, dtype=torch.bool), k=2)
    assert float(same[0]) == 0.0


def test_intrinsic_module_fresh_unsafe_state_and_decay():
    torch.manual_seed(0)
    module = IntrinsicCostModule(obs_dim=4, num_envs=1, k=10, intrinsic_factor=5.0, decay=0.99)
    rng = torch.Generator().manual_seed(1)
    for i in range(10):  # 10 unsafe states: |M| = 10 = k, still no intrinsic cost
        c_i = module.step(torch.randn(1, 4, generator=rng) * 10, torch.ones(1), epoch=0)
        assert float(c_i) == 0.0
    # 11th unsafe state: pushed first, so its nearest distance is 0 and ĉ ≈ 1
    c_i = module.step(torch.randn(1, 4, generator=rng) * 10, torch.ones(1), epoch=3)
    assert float(c_i) == pytest.approx(5.0 * 0.99**3, rel=1e-3)
    assert module.scale(3) == pytest.approx(5.0 * 0.99**3)
    far = module.step(torch.full((1, 4), 1e3), torch.zeros(1), epoch=0)  # a safe state far from memory
    assert 0.0 < float(far) < 5.0 * 0.05
    assert len(module.memory) == 11
    off = IntrinsicCostModule(obs_dim=4, num_envs=1, intrinsic_factor=0.0)
    assert float(off.step(torch.randn(1, 4), torch.ones(1), epoch=0)) == 0.0


# ------------------------------------------------------------------ §4.4 bias-corrected value
def test_bias_corrected_cost_value_known_trajectory():
    costs = torch.tensor([0.0, 1.0, 0.0])
    intrinsic = torch.tensor([0.0, 0.5, 2.0])
    values = torch.tensor([1.0, 2.0, 0.5])
    out = bias_corrected_cost_value(
        costs, intrinsic, values, last_value=0.0, beta=1.0, gamma=0.9, lam=0.5, beta_lr=0.1, beta_ema=0.1
    )
    # by hand: td = (0.8, -1.55, -0.5); δ⁰ = (0.8, -0.05, 1.5); β_t = (1, 1.01, 0.925)
    torch.testing.assert_close(out.beta_t, torch.tensor([1.0, 1.01, 0.925]))
    # δ = (0.8, -0.045, 1.35); A = (0.8 + .45·0.5625, -0.045 + .45·1.35, 1.35)
    torch.testing.assert_close(out.advantages, torch.tensor([1.053125, 0.5625, 1.35]))
    torch.testing.assert_close(out.targets, torch.tensor([2.053125, 2.5625, 1.85]))
    assert out.intrinsic_return == pytest.approx(0.9 * 1.01 * 0.5 + 0.81 * 0.925 * 2.0)
    assert out.beta == pytest.approx(0.9 + 0.1 * (1.0 + 1.01 + 0.925) / 3)
    # no intrinsic cost: β unchanged, Ĵ^I = 0, plain cost GAE
    plain = bias_corrected_cost_value(costs, torch.zeros(3), values, 0.0, 1.0, 0.9, 0.5, 0.1)
    adv, target = gae(costs, values, 0.0, 0.9, 0.5)
    torch.testing.assert_close(plain.advantages, adv)
    assert plain.beta == 1.0 and plain.intrinsic_return == 0.0


# ------------------------------------------------------------------ §4.5 CPO pieces
def test_conjugate_gradient_and_cpo_cases():
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
    b = torch.tensor([1.0, 2.0])
    x = conjugate_gradient(lambda v: a @ v, b, iters=10)
    torch.testing.assert_close(a @ x, b, atol=1e-5, rtol=0)
    g, bc = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])  # H = I
    # far from the boundary (c ≪ 0): case 3, a pure reward step of KL exactly δ
    step, case, _, nu = cpo_step_direction(g, bc, 1.0, 0.0, 1.0, -10.0, 1.0, target_kl=0.01)
    assert case == 3 and nu == 0.0
    torch.testing.assert_close(step, math.sqrt(0.02) * g)
    # infeasible and the trust region cannot reach feasibility: recovery along −p
    step, case, _, _ = cpo_step_direction(g, bc, 1.0, 0.0, 1.0, 10.0, 1.0, target_kl=0.01)
    assert case == 0
    torch.testing.assert_close(step, -math.sqrt(0.02) * bc)
    # violated but recoverable (c ≥ 0, B ≥ 0): case 1, the step lowers the cost by at least c
    step, case, _, _ = cpo_step_direction(g, bc, 1.0, 0.0, 1.0, 0.05, 1.0, target_kl=0.01)
    assert case == 1 and float(bc @ step) <= -0.05 + 1e-6 and 0.5 * float(step @ step) <= 0.01 + 1e-6


def _cg_early_exit(avp, b, iters, residual_tol=1e-10):
    """The textbook CG with a Python-side early exit (the form the branch-free one replaced)."""
    x, r, p = torch.zeros_like(b), b.clone(), b.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        if float(rr) < residual_tol:
            break
        ap = avp(p)
        alpha = rr / (torch.dot(p, ap) + 1e-8)
        x += alpha * p
        r -= alpha * ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def test_branch_free_cg_and_scan_match_the_loops_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(30, 30, generator=g)
    a = m @ m.t() + 0.1 * torch.eye(30)
    b = torch.randn(30, generator=g)
    for iters in (5, 15):  # not converged: every iteration runs in both forms
        assert torch.equal(conjugate_gradient(lambda v: a @ v, b, iters), _cg_early_exit(lambda v: a @ v, b, iters))
    small = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # converges in 2 steps: the masked tail keeps x
    torch.testing.assert_close(
        conjugate_gradient(lambda v: small @ v, torch.tensor([1.0, 1.0]), 15), torch.tensor([0.5, 1.0 / 3.0])
    )
    x = torch.randn(257, generator=g) * 5
    running, ref = 0.0, torch.empty(257, dtype=torch.float64)
    for t in range(256, -1, -1):  # the per-step Python scan it replaced
        running = float(x.double()[t]) + 0.9405 * running
        ref[t] = running
    assert torch.equal(discounted_cumsum(x, 0.9405), ref.float())


# ------------------------------------------------------------------ a real run + resume
def _params(trainer: MICETrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.learner.actor.parameters()] + [
        p.detach().clone() for p in trainer.learner.cost_critic.parameters()
    ]


def test_mice_short_real_run_dataset_and_resume():
    torch.manual_seed(0)
    cfg = MICEConfig(hidden=(16, 16), steps_per_epoch=300, cost_limit=10.0, update_iters=1, batch_size=150)
    trainer = MICETrainer.for_task(TASK, num_envs=1, config=cfg)
    res = train_online(trainer, TASK, 600, num_envs=1, seed=7)
    ds = res.dataset
    assert len(ds) == 600 and ds.num_episodes == 2
    assert ds.timeouts.nonzero().flatten().tolist() == [299, 599] and not ds.terminals.any()
    assert len(res.logs) == 2 and trainer.epoch == 2 and trainer.learner.total_steps == 2
    assert [m["training_step"] for m in ds.metadata["episode_info"]] == [0, 1]
    assert all(math.isfinite(v) for log in res.logs for v in log.values())
    assert res.logs[1]["intrinsic_scale"] == pytest.approx(5.0 * 0.99)
    n_unsafe = int((ds.costs > 0).sum())
    assert len(trainer.intrinsic.memory) == min(n_unsafe, cfg.memory_capacity)
    assert ds.episode_returns()["cost"].tolist() == pytest.approx([e.cost for e in res.episodes])
    # exact resume mid-epoch: continue 150 steps from a state_dict copy on an identically seeded env
    col_a = OnlineCollector(TASK, 1, seed=11)
    for _ in range(150):
        trainer.observe(col_a.step(trainer.act))
    state = _save_load(trainer.state_dict())
    col_a2 = OnlineCollector(TASK, 1, seed=13)
    col_b2 = OnlineCollector(TASK, 1, seed=13)
    logs_a = [trainer.observe(col_a2.step(trainer.act)) for _ in range(150)]
    clone = MICETrainer.for_task(TASK, num_envs=1, config=cfg)
    clone.load_state_dict(state)
    logs_b = [clone.observe(col_b2.step(clone.act)) for _ in range(150)]
    assert logs_a[-1] is not None and logs_a[-1] == logs_b[-1]  # the epoch ended and updated identically
    for a, b in zip(_params(trainer), _params(clone)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert trainer.beta == clone.beta
    torch.testing.assert_close(trainer.intrinsic.memory.data, clone.intrinsic.memory.data, rtol=0, atol=0)


def test_zero_intrinsic_factor_is_plain_cpo():
    torch.manual_seed(0)
    cfg = MICEConfig(hidden=(16, 16), steps_per_epoch=300, intrinsic_factor=0.0, update_iters=1, batch_size=150)
    trainer = MICETrainer.for_task(TASK, num_envs=1, config=cfg)
    res = train_online(trainer, TASK, 300, num_envs=1, seed=5, record=False)
    assert res.logs[0]["intrinsic_return"] == 0.0 and trainer.beta == [1.0]
    assert res.logs[0]["constraint"] == pytest.approx(res.episodes[0].cost - cfg.cost_limit)
    diag = trainer.cost_value_diagnostic(TASK, seed=1)
    assert diag["true_value_c"] >= 0.0 and math.isfinite(diag["estimate_value_c"])


def _rollout_as_v1(roll: dict) -> dict:
    """A version-2 rollout written the way the first trainer stored it (per-env lists), for the converter."""
    t, n = roll["t"], roll["observations"].shape[0]
    s = roll["scalars"]
    rows = [
        {
            "observations": list(roll["observations"][j]),
            "actions": list(roll["actions"][j]),
            **{k: s[k][j].tolist() for k in ("log_probs", "rewards", "costs", "intrinsic", "values_r", "values_c")},
        }
        for j in range(n)
    ]
    results = [
        {k: [s[k][j, : roll["slice_start"][j]].clone()] for k in ("adv_r", "adv_c", "target_r", "target_c")}
        for j in range(n)
    ]
    flat = [v for v, length in roll["slice_returns"] for _ in range(length)]
    assert t == len(rows[0]["rewards"])
    return {
        "rows": rows,
        "results": results,
        "slice_start": roll["slice_start"],
        "intrinsic_returns": flat,
        "epoch_steps": roll["epoch_steps"],
        "epoch_cost": roll["epoch_cost"],
    }


def test_rollout_state_version_2_and_version_1_checkpoints_resume_alike():
    """The epoch rollout is preallocated tensors (state version 2); a version-1 checkpoint (per-env
    lists) converts on load and continues bit for bit like the version-2 one."""
    torch.manual_seed(0)
    cfg = MICEConfig(hidden=(16, 16), steps_per_epoch=200, cost_limit=10.0, update_iters=1, batch_size=100)
    trainer = MICETrainer.for_task("SafetyPointGoal1-v0", num_envs=2, config=cfg)
    col = OnlineCollector("SafetyPointGoal1-v0", 2, seed=3, record=False)
    for _ in range(60):  # 120 env steps: mid-epoch, the first epoch's slices still open
        trainer.observe(col.step(trainer.act))
    trainer.cut_episodes(col.open_episodes(), col.obs)  # closes a slice per env: results and Ĵ^I to convert
    state = _save_load(trainer.state_dict())
    roll = state["rollout"]
    assert roll["version"] == 2 and roll["t"] == 60 and roll["observations"].shape == (2, 60, trainer.rollout.obs_dim)
    assert roll["slice_start"] == [60, 60] and sum(length for _, length in roll["slice_returns"]) == 120
    v1 = dict(state, rollout=_rollout_as_v1(roll))
    runs = []
    for st in (state, _save_load(v1)):
        clone = MICETrainer.for_task("SafetyPointGoal1-v0", num_envs=2, config=cfg)
        clone.load_state_dict(st)
        col = OnlineCollector("SafetyPointGoal1-v0", 2, seed=5, record=False)
        logs = [clone.observe(col.step(clone.act)) for _ in range(40)]
        assert logs[-1] is not None and clone.epoch == 1  # the epoch completed and updated
        runs.append((logs[-1], _params(clone), list(clone.beta)))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="version"):
        MICETrainer.for_task("SafetyPointGoal1-v0", num_envs=2, config=cfg).rollout.load_state_dict(
            dict(roll, version=3)
        )


def test_epoch_rollout_rows_slices_and_growth():
    """Rows are written per vector step for all envs, slices close per env, the batch is env-major,
    and storage that fills up grows without losing rows."""
    from corl.algos.mice.rollout import EpochRollout

    roll = EpochRollout(num_envs=2, obs_dim=3, act_dim=1, capacity=2)
    for t in range(5):  # past the capacity of 2: grows twice
        roll.append(
            torch.full((2, 3), float(t)),
            torch.tensor([[t], [-t]], dtype=torch.float32),
            **{k: torch.tensor([t, 10 + t], dtype=torch.float32) for k in ("log_probs", "rewards", "costs")},
            intrinsic=torch.tensor([0.5, 1.5]),
            values_r=torch.zeros(2),
            values_c=torch.zeros(2),
        )
        if t == 2:  # env 0's episode ends after 3 steps
            roll.close_slice(0, {k: torch.ones(3) for k in ("adv_r", "adv_c", "target_r", "target_c")}, 2.0)
    assert roll.capacity == 8 and roll.t == 5
    assert roll.open_slice(0)["rewards"].tolist() == [3.0, 4.0] and roll.open_slice(1)["rewards"].tolist() == [
        10.0,
        11.0,
        12.0,
        13.0,
        14.0,
    ]
    roll.close_slice(0, {k: torch.full((2,), 2.0) for k in ("adv_r", "adv_c", "target_r", "target_c")}, 4.0)
    roll.close_slice(1, {k: torch.full((5,), 3.0) for k in ("adv_r", "adv_c", "target_r", "target_c")}, 0.0)
    batch = roll.batch()
    assert batch["log_probs"].tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]  # env-major
    assert batch["actions"].flatten().tolist() == [0, 1, 2, 3, 4, 0, -1, -2, -3, -4]
    assert batch["adv_r"].tolist() == [1, 1, 1, 2, 2, 3, 3, 3, 3, 3]
    assert roll.intrinsic_return_mean() == pytest.approx((3 * 2.0 + 2 * 4.0 + 5 * 0.0) / 10)
    assert roll.intrinsic_mean() == pytest.approx(1.0)
