"""Benchmark: gradient steps/s of each DRCORL learner against a bare loop of the same networks.

What it measures and why it is fair:

* every learner gets a "bare" twin: the SAME network modules (fresh copies, the paper's
  sizes by default), the same optimizer class and batch size, doing only forward + backward +
  optimizer step on tensors made before the loop (no sampling of ``t``/``z``/dropout masks,
  no target networks, no metrics dict). The ratio ``learner / bare`` is the learner's
  overhead: bookkeeping (Python) plus the work the method genuinely needs (target critics,
  the frozen diffusion forward, the critic guidance ``autograd.grad``, the TD update).
* rows: ``behavior`` (L_diff step vs bare ScoreNet regression); ``critics`` (IQL step of
  V_r, V_c, Q_r, Q_c + Polyak vs bare regression of the four nets on fixed targets), again
  against a bare loop that also runs the forwards IQL needs (targets, V(s')) and the Polyak
  updates; ``policy warm start`` (L_bc step vs bare policy step on a fixed vector, and vs a
  bare step that also runs the frozen ScoreNet forward L_bc needs);
  ``policy safe it.`` (critic cost estimate + TD critic update + reward step vs bare policy
  step + bare critic step).
* batches: pre-sampled once from a synthetic TransitionDataset on the device, so data loading
  is excluded from both sides.
* interleaving: each round times learner then bare (order flipped every round) for
  ``--iters`` steps after a warm-up, in one process; medians over ``--rounds`` are reported,
  so both sides see the same CPU contention. CUDA is synchronised before reading clocks.

Run: ``.venv/bin/python bench/speed_drcorl.py [--device cpu|cuda] [--iters N] [--rounds R]
[--behavior-batch 2048] [--small]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from corl.algos.drcorl import BehaviorConfig, BehaviorLearner, CriticConfig, CriticLearner, PolicyConfig, PolicyLearner
from corl.data.dataset import TransitionDataset
from corl.nn.critics import soft_update


def synthetic(n: int, obs_dim: int, act_dim: int, device: str) -> TransitionDataset:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    return TransitionDataset.from_numpy(
        dict(
            observations=obs,
            actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
            rewards=rng.normal(size=n).astype(np.float32),
            costs=(rng.random(n) < 0.1).astype(np.float32),
            next_observations=np.roll(obs, -1, 0),
            terminals=np.zeros(n, bool),
            timeouts=np.arange(n) % 300 == 299,
        )
    ).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[int], None], iters: int, device: torch.device) -> float:
    """Steps per second of ``fn(i)`` over ``iters`` calls."""
    sync(device)
    start = time.perf_counter()
    for i in range(iters):
        fn(i)
    sync(device)
    return iters / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- bare loops
def bare_behavior(net: torch.nn.Module, cfg: BehaviorConfig, obs, act, device) -> Callable[[int], None]:
    net = copy.deepcopy(net).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    t = torch.rand(obs.shape[0], device=device)
    z = torch.randn_like(act)
    noisy = 0.5 * act + 0.8 * z

    def step(_: int) -> None:
        loss = ((net(noisy, t, obs) - z) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bare_critics(critics: CriticLearner, obs, act, required: bool = False) -> Callable[[int], None]:
    """Regression of the four nets on a fixed target; ``required`` adds the forwards IQL cannot
    avoid (twin targets at (s, a), V(s') for both channels) and the Polyak updates."""
    q_r, q_c = copy.deepcopy(critics.q_r), copy.deepcopy(critics.q_c)
    v_r, v_c = copy.deepcopy(critics.v_r), copy.deepcopy(critics.v_c)
    t_r, t_c = copy.deepcopy(critics.q_r_target), copy.deepcopy(critics.q_c_target)
    q_opt = torch.optim.Adam([*q_r.parameters(), *q_c.parameters()], lr=3e-4, foreach=True)
    v_opt = torch.optim.Adam([*v_r.parameters(), *v_c.parameters()], lr=3e-4, foreach=True)
    y = torch.randn(obs.shape[0], device=obs.device)

    def step(_: int) -> None:
        if required:
            with torch.no_grad():
                t_r(obs, act), t_c(obs, act), v_r(obs), v_c(obs)
        v_loss = ((v_r(obs) - y) ** 2).mean() + ((v_c(obs) - y) ** 2).mean()
        v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        v_opt.step()
        q_loss = ((q_r(obs, act) - y) ** 2).mean() + ((q_c(obs, act) - y) ** 2).mean()
        q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        q_opt.step()
        if required:
            soft_update(t_r, q_r, 0.005)
            soft_update(t_c, q_c, 0.005)

    return step


def bare_policy(
    policy: torch.nn.Module, obs, lr: float, frozen_eps: torch.nn.Module | None = None
) -> Callable[[int], None]:
    """Policy step on a fixed vector; with ``frozen_eps`` the vector is the frozen ScoreNet's
    output at pre-made inputs (the one forward L_bc cannot avoid)."""
    policy = copy.deepcopy(policy)
    opt = torch.optim.Adam(policy.parameters(), lr=lr, foreach=True)
    v = torch.randn(obs.shape[0], policy.act_dim, device=obs.device)
    t = torch.rand(obs.shape[0], device=obs.device)

    def step(_: int) -> None:
        vec = v
        if frozen_eps is not None:
            with torch.no_grad():
                vec = frozen_eps(v, t, obs)
        loss = (policy(obs) * vec).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--obs-dim", type=int, default=8)
    parser.add_argument("--act-dim", type=int, default=2)
    parser.add_argument("--behavior-batch", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256, help="critic and policy batch")
    parser.add_argument("--small", action="store_true", help="64-wide nets (smoke runs)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    od, ad = args.obs_dim, args.act_dim

    bcfg, ccfg, pcfg = BehaviorConfig(), CriticConfig(), PolicyConfig()
    if args.small:
        bcfg = BehaviorConfig(width=64, time_dim=32)
        ccfg = CriticConfig(hidden=(64, 64))
        pcfg = PolicyConfig(hidden=(64, 64))
    big = 10**9  # keep the policy learner in the phase being measured
    data = synthetic(50_000, od, ad, str(device))
    gen = torch.Generator(device=device).manual_seed(0)
    nb = 8  # distinct pre-sampled batches, cycled
    b_batches = [data.sample(args.behavior_batch, gen) for _ in range(nb)]
    batches = [data.sample(args.batch, gen) for _ in range(nb)]

    behavior = BehaviorLearner(od, ad, bcfg, device)
    critics = CriticLearner(od, ad, ccfg, device=device)
    warm = PolicyLearner(
        od,
        ad,
        copy.deepcopy(behavior.net),
        copy.deepcopy(critics),
        PolicyConfig(**{**pcfg.__dict__, "pretrain_epochs": big}),
        device=device,
    )
    safe = PolicyLearner(
        od,
        ad,
        copy.deepcopy(behavior.net),
        copy.deepcopy(critics),
        PolicyConfig(**{**pcfg.__dict__, "pretrain_epochs": 0, "train_epochs": big, "warmup_iters": big}),
        device=device,
    )
    b0, p0 = b_batches[0], batches[0]
    bare_p = bare_policy(warm.policy, p0["observations"], pcfg.lr)
    bare_c = bare_critics(critics, p0["observations"], p0["actions"])

    def bare_safe(i: int) -> None:
        bare_p(i)
        bare_c(i)

    rows: list[tuple[str, Callable[[int], None], Callable[[int], None]]] = [
        (
            "behavior (L_diff)",
            lambda i: behavior.update(b_batches[i % nb]),
            bare_behavior(behavior.net, bcfg, b0["observations"], b0["actions"], device),
        ),
        ("critics (IQL)", lambda i: critics.update(batches[i % nb]), bare_c),
        (
            "  same vs bare + target/V(s') fwd + Polyak",
            lambda i: critics.update(batches[i % nb]),
            bare_critics(critics, p0["observations"], p0["actions"], required=True),
        ),
        ("policy warm start (L_bc)", lambda i: warm.update(batches[i % nb]), bare_p),
        (
            "  same vs bare + frozen eps fwd",
            lambda i: warm.update(batches[i % nb]),
            bare_policy(warm.policy, p0["observations"], pcfg.lr, warm.behavior),
        ),
        ("policy safe it. (TD + L_rew)", lambda i: safe.update(batches[i % nb]), bare_safe),
    ]
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _, _ in rows}
    for name, learner_fn, bare_fn in rows:  # warm-up (allocator, lazy Adam state)
        timed(learner_fn, args.warmup, device)
        timed(bare_fn, args.warmup, device)
    for r in range(args.rounds):
        for name, learner_fn, bare_fn in rows:
            if r % 2 == 0:
                results[name][0].append(timed(learner_fn, args.iters, device))
                results[name][1].append(timed(bare_fn, args.iters, device))
            else:
                results[name][1].append(timed(bare_fn, args.iters, device))
                results[name][0].append(timed(learner_fn, args.iters, device))

    table = Table(
        title=f"DRCORL learners vs bare loops ({device.type}, threads {args.threads}, "
        f"batch {args.behavior_batch}/{args.batch}, {'small' if args.small else 'paper'} nets)"
    )
    table.add_column("update")
    table.add_column("learner steps/s", justify="right")
    table.add_column("bare steps/s", justify="right")
    table.add_column("learner / bare", justify="right")
    for name, (lr_, br) in results.items():
        lm, bm = statistics.median(lr_), statistics.median(br)
        table.add_row(name, f"{lm:.1f}", f"{bm:.1f}", f"{lm / bm:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
