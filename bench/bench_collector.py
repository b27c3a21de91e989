"""Benchmark: the online collector's throughput against the bare simulator loop.

What it measures and why it is fair:

* one gymnasium ``SyncVectorEnv`` of ``--envs`` copies of the task is built once and shared by
  every variant, so all of them step the same simulators;
* variants, each run for ``--steps`` vector steps per block:
  (a) **bare**: ``env.step(actions)`` with pre-drawn uniform random actions, nothing recorded;
  (b) **collector (random)**: ``OnlineCollector.step(actions=...)`` with the same kind of
      actions: cost extraction from ``final_info``, per-episode metadata and recording into
      the growing numpy buffers — the collector's own overhead;
  (c) **collector (policy)**: ``OnlineCollector.step(policy)`` with a batched torch
      ``DiagGaussianPolicy`` (64x64) forward per vector step — what a learner's rollout costs
      without its learning;
* blocks are interleaved (a, b, c, a, b, c, ... with the order rotated every repetition) in
  one process, so all see the same CPU contention; medians of env-steps/s are reported and
  each variant's ratio to the bare loop, by wall time and by this process's CPU time
  (``time.process_time``: on a shared machine the CPU-time ratio is the steadier figure, as
  other processes' load inflates wall time unevenly between blocks).

Run: ``.venv/bin/python bench/bench_collector.py [--task T] [--envs N] [--steps S] [--reps R]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from corl.algos.online.collector import OnlineCollector
from corl.envs.factory import make_env
from corl.nn.policies import DiagGaussianPolicy
from corl.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="SafetyCarCircle-v0")
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300, help="vector steps per block")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    env = gym.vector.SyncVectorEnv([lambda: make_env(task) for _ in range(args.envs)])
    env.reset(seed=list(range(args.envs)))
    rng = np.random.default_rng(0)
    low, high = env.single_action_space.low, env.single_action_space.high
    policy = DiagGaussianPolicy(task.obs_dim, task.act_dim, (64, 64), "tanh", low, high)
    random_collector = OnlineCollector(task, args.envs, seed=0, env=env)
    policy_collector = OnlineCollector(task, args.envs, seed=0, env=env)

    def bare(n: int) -> None:
        actions = rng.uniform(low, high, size=(n, args.envs, len(low))).astype(np.float32)
        for i in range(n):
            env.step(actions[i])

    def collect_random(n: int) -> None:
        actions = rng.uniform(low, high, size=(n, args.envs, len(low))).astype(np.float32)
        for i in range(n):
            random_collector.step(actions=actions[i])

    def collect_policy(n: int) -> None:
        for _ in range(n):
            policy_collector.step(lambda obs: policy.sample(obs)[0])

    variants = {
        "bare simulator loop": bare,
        "collector (random actions)": collect_random,
        "collector (torch policy)": collect_policy,
    }
    names = list(variants)
    rates: dict[str, list[float]] = {k: [] for k in names}
    cpu_rates: dict[str, list[float]] = {k: [] for k in names}
    bare(10)  # warm-up
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            # every block starts from freshly reset envs (untimed); a collector's reset also
            # discards its unfinished episodes, so its records stay consistent on the shared env
            if name == names[1]:
                random_collector.reset()
            elif name == names[2]:
                policy_collector.reset()
            else:
                env.reset(seed=list(range(args.envs)))
            t0, c0 = time.perf_counter(), time.process_time()
            variants[name](args.steps)
            rates[name].append(args.steps * args.envs / (time.perf_counter() - t0))
            cpu_rates[name].append(args.steps * args.envs / (time.process_time() - c0))
    env.close()

    base = statistics.median(rates[names[0]])
    table = Table(
        title=f"collector throughput: {task.name}, {args.envs} envs, {args.steps} vector steps x "
        f"{args.reps} interleaved reps (load {os.getloadavg()[0]:.1f})"
    )
    table.add_column("variant")
    table.add_column("env-steps/s (median)", justify="right")
    table.add_column("min..max", justify="right")
    table.add_column("ratio to bare", justify="right")
    table.add_column("per CPU-second (median)", justify="right")
    table.add_column("CPU ratio to bare", justify="right")
    cpu_base = statistics.median(cpu_rates[names[0]])
    for name in names:
        med, cpu = statistics.median(rates[name]), statistics.median(cpu_rates[name])
        table.add_row(
            name,
            f"{med:,.0f}",
            f"{min(rates[name]):,.0f}..{max(rates[name]):,.0f}",
            f"{med / base:.3f}",
            f"{cpu:,.0f}",
            f"{cpu / cpu_base:.3f}",
        )
    Console(width=140).print(table)
    recorded = random_collector.dataset()
    print(
        f"recorded by the random-action collector: {len(recorded)} transitions, "
        f"{recorded.num_episodes} finished episodes"
    )


if __name__ == "__main__":
    main()
