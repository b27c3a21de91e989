"""Benchmark: training steps/s of corl's BCQ-Lag, BEAR-Lag, CPQ and COptiDICE against OSRL's
implementations (``osrl-lib`` 0.1.0), at OSRL's network sizes and batch, in one process.

Two rows per method:

* ``update``: one training step on a batch made before the loop (both sides do the same
  losses: corl's learners run with ``vae_joint = true`` so the VAE step is included, as in OSRL).
* ``loop``: batch assembly plus the update. OSRL's loop is its training script's
  ``DataLoader`` over ``osrl.common.TransitionDataset`` (one transition per ``__next__``,
  collated to a batch; ``num_workers = 0`` here, the script's default is 8 worker processes);
  corl's is ``TransitionDataset.sample`` on the device.

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
    from corl.pipeline.context import read_task_dataset
    from corl.tasks import get_task

    return read_task_dataset(get_task("OfflineCarCircle-v0"), path)


def _osrl_batch(arrays: dict, idx: np.ndarray, init: np.ndarray | None = None) -> list[torch.Tensor]:
    done = np.logical_or(arrays["terminals"], arrays["timeouts"]).astype(np.float32)
    out = [arrays["observations"][idx], arrays["next_observations"][idx], arrays["actions"][idx],
           arrays["rewards"][idx] * 0.1, arrays["costs"][idx], done[idx]]
    if init is not None:
        out.append(init[idx])
    return [torch.as_tensor(x, dtype=torch.float32) for x in out]


def _time(fn: Callable[[], None], iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return iters / (time.perf_counter() - start)


def build(method: str, data, arrays: dict, batch: int):
    """(corl update fn taking a corl batch, OSRL train_one_step fn taking an OSRL batch list)."""
    import osrl.algorithms as oa

    obs_dim, act_dim = data.obs_dim, data.act_dim
    vae = build_vae(obs_dim, act_dim, [400, 400], None)
    common = dict(state_dim=obs_dim, action_dim=act_dim, max_action=1.0, a_hidden_sizes=[256, 256],
                  c_hidden_sizes=[256, 256], cost_limit=10, episode_len=300)
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
        trainer = oa.CPQTrainer(model, None, actor_lr=1e-4, critic_lr=1e-3, alpha_lr=1e-4, vae_lr=1e-3,
                                reward_scale=0.1)
    elif method == "coptidice":
        from corl.algos.coptidice import COptiDICEConfig, COptiDICELearner, initial_flags

        init = initial_flags(data.episode_ends)
        corl = COptiDICELearner(COptiDICEConfig(batch_size=batch), obs_dim, act_dim, 3.17, float(init.mean()),
                                data.observations.std(0, unbiased=False), data.actions.std(0, unbiased=False))
        model = oa.COptiDICE(**common, f_type="softchi", init_state_propotion=float(init.mean()),
                             observations_std=arrays["observations"].std(0, keepdims=True),
                             actions_std=arrays["actions"].std(0, keepdims=True), num_nu=2, num_chi=2)
        trainer = oa.COptiDICETrainer(model, None, actor_lr=1e-4, critic_lr=1e-4, scalar_lr=1e-4, reward_scale=0.1)
        return corl, (lambda b: trainer.train_one_step(b)), init.numpy()
    else:
        raise SystemExit(f"unknown method {method!r}")
    return corl, (lambda b: trainer.train_one_step(*b)), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="datasets/samples/OfflineCarCircle-v0.hdf5")
    parser.add_argument("--methods", nargs="+", default=["bcql", "bearl", "cpq", "coptidice"])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    from torch.utils.data import DataLoader
    from osrl.common.dataset import TransitionDataset as OSRLDataset

    data = _load(args.dataset)
    arrays = {k: v.astype(np.float32) if v.dtype != bool else v for k, v in data.to_numpy().items()}
    table = Table(title=f"steps/s, OSRL sizes (batch {args.batch}, 256x256 nets, VAE 400), 1 torch thread")
    for col in ("method", "row", "corl", "OSRL", "corl / OSRL"):
        table.add_column(col)
    gen = torch.Generator().manual_seed(0)
    for method in args.methods:
        corl, osrl_step, init = build(method, data, arrays, args.batch)
        idx = np.random.randint(0, len(data), args.batch)
        o_batch = _osrl_batch(arrays, idx, init)
        c_batch = {k: getattr(data, k)[torch.as_tensor(idx)] for k in
                   ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")}
        if init is not None:
            c_batch["is_init"] = torch.as_tensor(init[idx])
        odict = {k: arrays[k].copy() for k in arrays}
        loader = iter(DataLoader(OSRLDataset(odict, reward_scale=0.1, cost_scale=1.0, state_init=init is not None),
                                 batch_size=args.batch, num_workers=0))
        init_t = None if init is None else torch.as_tensor(init)

        def corl_loop() -> None:
            i = torch.randint(0, len(data), (args.batch,), generator=gen)
            b = {k: getattr(data, k)[i] for k in ("observations", "actions", "rewards", "costs",
                                                  "next_observations", "terminals", "timeouts")}
            if init_t is not None:
                b["is_init"] = init_t[i]
            corl.update(b)

        def osrl_loop() -> None:
            b = [x.float() for x in next(loader)]
            osrl_step(b)

        rows = {"update": ([], []), "loop": ([], [])}
        for r in range(args.rounds):
            pairs = [("update", lambda: corl.update(c_batch), lambda: osrl_step(o_batch)),
                     ("loop", corl_loop, osrl_loop)]
            for name, c_fn, o_fn in pairs:
                if r % 2 == 0:
                    rows[name][0].append(_time(c_fn, args.iters, args.warmup))
                    rows[name][1].append(_time(o_fn, args.iters, args.warmup))
                else:
                    rows[name][1].append(_time(o_fn, args.iters, args.warmup))
                    rows[name][0].append(_time(c_fn, args.iters, args.warmup))
        for name, (c, o) in rows.items():
            cm, om = statistics.median(c), statistics.median(o)
            table.add_row(method, name, f"{cm:.2f}", f"{om:.2f}", f"{cm / om:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
