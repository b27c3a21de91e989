"""Benchmark: training steps/s of corl's BCQ-Lag, BEAR-Lag, CPQ, COptiDICE and CDT against OSRL's
implementations (``osrl-lib`` 0.1.0), at OSRL's network sizes and batch, in one process.

Two rows per method:

* ``update``: one training step on a batch made before the loop (both sides do the same
  losses: corl's learners run with ``vae_joint = true`` so the VAE step is included, as in OSRL).
* ``loop``: batch assembly plus the update. OSRL's loop is its training script's
  ``DataLoader`` over ``osrl.common.TransitionDataset`` (one transition per ``__next__``,
  collated to a batch; ``num_workers = 0`` here, the script's default is 8 worker processes);
  corl's is ``TransitionDataset.sample`` on the device. CDT: OSRL's ``SequenceDataset``
  (cost-weighted trajectory sampling as its config; ``augment_percent = 0`` because the
  augmentation needs ``oapackage``, which only changes which trajectories exist) against
  corl's ``WindowSampler``; batch 2048 windows of 10 steps as OSRL's config.

``--clock cpu`` times with the process's CPU time instead of the wall clock: on a machine
shared with other jobs this counts the work each side does rather than the share of the CPU
it got (both sides run with one torch thread, so on an idle machine the two agree).
``--profile N`` also runs N updates per side under ``torch.profiler`` and prints the share
of self CPU time spent in matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``).

Each side is timed for ``--iters`` steps after ``--warmup`` steps, alternating order per round;
medians over ``--rounds`` are reported with the ratio corl / OSRL. OSRL is an optional
dependency, not installed by ``make install``: install it beside corl with
``pip install --no-deps --target DIR osrl-lib==0.1.0 pyrallis fast-safe-rl==0.1.0`` and put
``DIR`` on ``PYTHONPATH`` (its pins are stale; fsrl's logger is imported, wandb is not used).

Run: ``PYTHONPATH=DIR:. .venv/bin/python bench/speed_baselines.py --dataset FILE [--methods ...]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from corl.algos.baselines.vae import build_vae


def _load(path: str):
    from corl.data.store import load_task_dataset
    from corl.tasks import get_task

    return load_task_dataset(get_task("OfflineCarCircle-v0"), path=path)


def _osrl_batch(arrays: dict, idx: np.ndarray, init: np.ndarray | None = None) -> list[torch.Tensor]:
    done = np.logical_or(arrays["terminals"], arrays["timeouts"]).astype(np.float32)
    out = [
        arrays["observations"][idx],
        arrays["next_observations"][idx],
        arrays["actions"][idx],
        arrays["rewards"][idx] * 0.1,
        arrays["costs"][idx],
        done[idx],
    ]
    if init is not None:
        out.append(init[idx])
    return [torch.as_tensor(x, dtype=torch.float32) for x in out]


CLOCK: Callable[[], float] = time.perf_counter
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def _time(fn: Callable[[], None], iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    start = CLOCK()
    for _ in range(iters):
        fn()
    return iters / (CLOCK() - start)


def matmul_share(fn: Callable[[], None], iters: int) -> float:
    """Fraction of the self CPU time of ``iters`` calls spent in matrix-product kernels."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / max(total, 1e-9)


def build_cdt(data, batch: int):
    """(corl CDT learner, OSRL CDT trainer step, OSRL window loader, corl window sampler)."""
    from _osrl_cdt import osrl_cdt
    from osrl.common.dataset import SequenceDataset
    from torch.utils.data import DataLoader

    from corl.algos.cdt import CDTConfig, CDTLearner, CDTModel
    from corl.algos.cdt.data import WindowSampler, split_trajectories

    a = data.act_dim
    model, trainer = osrl_cdt(data.obs_dim, a)
    corl = CDTLearner(CDTConfig(batch_size=batch), CDTModel(data.obs_dim, a, seq_len=10, episode_len=300))
    arrays = {k: v.copy() for k, v in data.to_numpy().items()}
    arrays["terminals"] = arrays["terminals"].astype(np.float32)
    arrays["timeouts"] = arrays["timeouts"].astype(np.float32)
    seq = SequenceDataset(
        arrays,
        seq_len=10,
        reward_scale=0.1,
        cost_scale=1.0,
        deg=4,
        max_rew_decrease=100,
        beta=1.0,
        augment_percent=0.0,
        max_reward=600.0,
        min_reward=1.0,
        cost_sample=True,
    )
    loader = iter(DataLoader(seq, batch_size=batch, num_workers=0))
    sampler = WindowSampler(split_trajectories(data), 10, 0.1, 1.0)
    return corl, trainer, loader, sampler


def build(method: str, data, arrays: dict, batch: int):
    """(corl update fn taking a corl batch, OSRL train_one_step fn taking an OSRL batch list)."""
    import osrl.algorithms as oa

    obs_dim, act_dim = data.obs_dim, data.act_dim
    vae = build_vae(obs_dim, act_dim, [400, 400], None)
    common = dict(
        state_dim=obs_dim,
        action_dim=act_dim,
        max_action=1.0,
        a_hidden_sizes=[256, 256],
        c_hidden_sizes=[256, 256],
        cost_limit=10,
        episode_len=300,
    )
    if method == "bcql":
        from corl.algos.bcql import BCQLConfig, BCQLLearner

        corl = BCQLLearner(BCQLConfig(batch_size=batch, vae_joint=True), obs_dim, act_dim, vae, 3.17)
        model = oa.BCQL(**common, vae_hidden_sizes=400, num_q=2, num_qc=2)
        trainer = oa.BCQLTrainer(model, None, actor_lr=1e-3, critic_lr=1e-3, vae_lr=1e-3, reward_scale=0.1)
    elif method == "bearl":
        from corl.algos.bearl import BEARLConfig, BEARLLearner

        corl = BEARLLearner(BEARLConfig(batch_size=batch, vae_joint=True), obs_dim, act_dim, vae, 3.17)
        model = oa.BEARL(**common, vae_hidden_sizes=400, num_q=2, num_qc=2, start_update_policy_step=0)
        trainer = oa.BEARLTrainer(model, None, actor_lr=1e-3, critic_lr=1e-3, vae_lr=1e-3, reward_scale=0.1)
    elif method == "cpq":
        from corl.algos.cpq import CPQConfig, CPQLearner

        corl = CPQLearner(CPQConfig(batch_size=batch, vae_joint=True), obs_dim, act_dim, vae, 3.17)
        model = oa.CPQ(**common, vae_hidden_sizes=400, num_q=2, num_qc=2, beta=0.5)
        trainer = oa.CPQTrainer(
            model, None, actor_lr=1e-4, critic_lr=1e-3, alpha_lr=1e-4, vae_lr=1e-3, reward_scale=0.1
        )
    elif method == "coptidice":
        from corl.algos.coptidice import COptiDICEConfig, COptiDICELearner, initial_flags

        init = initial_flags(data.episode_ends)
        corl = COptiDICELearner(
            COptiDICEConfig(batch_size=batch),
            obs_dim,
            act_dim,
            3.17,
            float(init.mean()),
            data.observations.std(0, unbiased=False),
            data.actions.std(0, unbiased=False),
        )
        model = oa.COptiDICE(
            **common,
            f_type="softchi",
            init_state_propotion=float(init.mean()),
            observations_std=arrays["observations"].std(0, keepdims=True),
            actions_std=arrays["actions"].std(0, keepdims=True),
            num_nu=2,
            num_chi=2,
        )
        trainer = oa.COptiDICETrainer(model, None, actor_lr=1e-4, critic_lr=1e-4, scalar_lr=1e-4, reward_scale=0.1)
        return corl, (lambda b: trainer.train_one_step(b)), init.numpy()
    else:
        raise SystemExit(f"unknown method {method!r}")
    return corl, (lambda b: trainer.train_one_step(*b)), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="datasets/samples/OfflineCarCircle-v0.hdf5")
    parser.add_argument("--methods", nargs="+", default=["bcql", "bearl", "cpq", "coptidice", "cdt"])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--cdt-batch", type=int, default=2048, help="CDT windows per batch (OSRL's config)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--profile", type=int, default=0, help="updates per side under torch.profiler")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    from osrl.common.dataset import TransitionDataset as OSRLDataset
    from torch.utils.data import DataLoader

    data = _load(args.dataset)
    arrays = {k: v.astype(np.float32) if v.dtype != bool else v for k, v in data.to_numpy().items()}
    table = Table(
        title=f"steps/s ({args.clock} clock), OSRL sizes (batch {args.batch}, 256x256 nets, VAE 400; "
        f"CDT batch {args.cdt_batch}), 1 torch thread"
    )
    for col in ("method", "row", "corl", "OSRL", "corl / OSRL"):
        table.add_column(col)
    if args.profile:
        table.add_column("matmul share corl / OSRL")
    gen = torch.Generator().manual_seed(0)
    for method in args.methods:
        if method == "cdt":
            _bench_cdt(table, data, args, gen)
            continue
        corl, osrl_step, init = build(method, data, arrays, args.batch)
        idx = np.random.randint(0, len(data), args.batch)
        o_batch = _osrl_batch(arrays, idx, init)
        c_batch = {
            k: getattr(data, k)[torch.as_tensor(idx)]
            for k in ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")
        }
        if init is not None:
            c_batch["is_init"] = torch.as_tensor(init[idx])
        odict = {k: arrays[k].copy() for k in arrays}
        loader = iter(
            DataLoader(
                OSRLDataset(odict, reward_scale=0.1, cost_scale=1.0, state_init=init is not None),
                batch_size=args.batch,
                num_workers=0,
            )
        )
        init_t = None if init is None else torch.as_tensor(init)

        def corl_loop() -> None:
            i = torch.randint(0, len(data), (args.batch,), generator=gen)
            b = {
                k: getattr(data, k)[i]
                for k in ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")
            }
            if init_t is not None:
                b["is_init"] = init_t[i]
            corl.update(b)

        def osrl_loop() -> None:
            b = [x.float() for x in next(loader)]
            osrl_step(b)

        rows = {"update": ([], []), "loop": ([], [])}
        for r in range(args.rounds):
            pairs = [
                ("update", lambda: corl.update(c_batch), lambda: osrl_step(o_batch)),
                ("loop", corl_loop, osrl_loop),
            ]
            for name, c_fn, o_fn in pairs:
                if r % 2 == 0:
                    rows[name][0].append(_time(c_fn, args.iters, args.warmup))
                    rows[name][1].append(_time(o_fn, args.iters, args.warmup))
                else:
                    rows[name][1].append(_time(o_fn, args.iters, args.warmup))
                    rows[name][0].append(_time(c_fn, args.iters, args.warmup))
        share = None
        if args.profile:
            share = (
                matmul_share(lambda: corl.update(c_batch), args.profile),
                matmul_share(lambda: osrl_step(o_batch), args.profile),
            )
        _add_rows(table, method, rows, share)
    Console().print(table)


def _add_rows(table: Table, method: str, rows: dict, share: tuple[float, float] | None) -> None:
    for name, (c, o) in rows.items():
        cm, om = statistics.median(c), statistics.median(o)
        extra = [f"{share[0]:.0%} / {share[1]:.0%}"] if share is not None and name == "update" else []
        if share is not None and name != "update":
            extra = [""]
        table.add_row(method, name, f"{cm:.2f}", f"{om:.2f}", f"{cm / om:.2f}x", *extra)


def _bench_cdt(table: Table, data, args, gen: torch.Generator) -> None:
    corl, trainer, loader, sampler = build_cdt(data, args.cdt_batch)
    b = sampler.sample(args.cdt_batch, gen)
    o_args = (
        b["obs"],
        b["act"],
        b["rtg"],
        b["ctg"],
        b["timesteps"],
        b["mask"].float(),
        torch.zeros(args.cdt_batch),
        b["cost"],
    )

    def osrl_loop() -> None:
        states, actions, returns, costs_return, time_steps, mask, episode_cost, costs = next(loader)
        trainer.train_one_step(
            states.float(),
            actions.float(),
            returns.float(),
            costs_return.float(),
            time_steps,
            mask.float(),
            episode_cost.float(),
            costs.float(),
        )

    rows = {"update": ([], []), "loop": ([], [])}
    for r in range(args.rounds):
        pairs = [
            ("update", lambda: corl.update(b), lambda: trainer.train_one_step(*o_args)),
            ("loop", lambda: corl.update(sampler.sample(args.cdt_batch, gen)), osrl_loop),
        ]
        for name, c_fn, o_fn in pairs:
            first, second = (c_fn, o_fn) if r % 2 == 0 else (o_fn, c_fn)
            a = _time(first, args.iters, args.warmup)
            z = _time(second, args.iters, args.warmup)
            rows[name][0].append(a if r % 2 == 0 else z)
            rows[name][1].append(z if r % 2 == 0 else a)
    share = None
    if args.profile:
        share = (
            matmul_share(lambda: corl.update(b), args.profile),
            matmul_share(lambda: trainer.train_one_step(*o_args), args.profile),
        )
    _add_rows(table, "cdt", rows, share)


if __name__ == "__main__":
    main()
