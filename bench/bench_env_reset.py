"""Benchmark: Safety-Gymnasium reset time and env steps/s, stock rebuild vs corl's fast reset.

What it measures and why it is fair:

* two envs of the same task in one process: **stock** (``make_env(task, fast_reset=False)``:
  safety-gymnasium's own reset, which recompiles the MuJoCo model from XML) and **fast**
  (``make_env(task)``, corl's default: the new layout is written into the compiled model,
  :mod:`corl.envs.fast_reset`); both are reset once untimed (the fast env's first reset is a
  stock compile);
* **reset**: blocks of ``--resets`` seeded resets per variant; **episode**: one whole episode
  per variant (a seeded reset plus ``--episode-steps`` steps of pre-drawn uniform random
  actions, the task's episode length by default), i.e. the env steps/s a learner sees;
* blocks are interleaved (stock, fast, fast, stock, ...) for ``--reps`` repetitions so both
  see the same CPU contention; medians are reported with each figure's ratio fast/stock, by
  wall time and by this process's CPU time (the steadier figure on a shared machine).

Both variants get the same seeds, so they run the same layouts (the equivalence itself is
``tests/test_fast_reset.py``).

Run: ``.venv/bin/python bench/bench_env_reset.py [--task T] [--resets N] [--reps R] [--episode-steps S]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from corl.envs.factory import make_env
from corl.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="SafetyPointGoal1-v0")
    parser.add_argument("--resets", type=int, default=5, help="resets per reset block")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--episode-steps", type=int, default=None, help="steps per episode block (default: the task's)")
    args = parser.parse_args()
    task = get_task(args.task)
    steps = args.episode_steps or task.max_episode_steps
    envs = {"stock": make_env(task, fast_reset=False), "fast": make_env(task, fast_reset=True)}
    for env in envs.values():
        env.reset(seed=0)
    space = envs["stock"].action_space
    actions = np.random.default_rng(0).uniform(space.low, space.high, size=(steps, *space.shape)).astype(np.float32)
    seed = iter(range(1, 1_000_000))

    def resets(env) -> int:
        for _ in range(args.resets):
            env.reset(seed=next(seed))
        return args.resets

    def episode(env) -> int:
        env.reset(seed=next(seed))
        for t in range(steps):
            _, _, terminated, truncated, _ = env.step(actions[t])
            if terminated or truncated:
                env.reset(seed=next(seed))
        return steps

    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        order = ["stock", "fast"] if rep % 2 == 0 else ["fast", "stock"]
        for kind, fn in (("reset", resets), ("episode", episode)):
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                n = fn(envs[name])
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                # reset: seconds per reset; episode: env steps per second
                wall.setdefault((kind, name), []).append(dt / n if kind == "reset" else n / dt)
                cpu.setdefault((kind, name), []).append(dc / n if kind == "reset" else n / dc)
    fast_env = envs["fast"]
    used = getattr(getattr(fast_env, "fast", None), "fast_resets", 0)
    for env in envs.values():
        env.close()

    table = Table(
        title=f"Safety-Gymnasium reset: {task.name}, {args.reps} interleaved reps of {args.resets} resets "
        f"and one {steps}-step episode per variant (load {os.getloadavg()[0]:.1f})"
    )
    for col in ("figure", "stock (median)", "fast (median)", "ratio fast/stock", "stock CPU", "fast CPU", "CPU ratio"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for kind, label, fmt in (
        ("reset", "seconds per reset", "{:.4f}"),
        ("episode", "env steps/s incl. resets", "{:,.0f}"),
    ):
        s, f = statistics.median(wall[(kind, "stock")]), statistics.median(wall[(kind, "fast")])
        cs, cf = statistics.median(cpu[(kind, "stock")]), statistics.median(cpu[(kind, "fast")])
        table.add_row(
            label,
            fmt.format(s),
            fmt.format(f),
            f"{f / s:.4f}" if kind == "reset" else f"{f / s:.2f}",
            fmt.format(cs),
            fmt.format(cf),
            f"{cf / cs:.4f}" if kind == "reset" else f"{cf / cs:.2f}",
        )
    Console(width=150).print(table)
    rs, rf = statistics.median(wall[("reset", "stock")]), statistics.median(wall[("reset", "fast")])
    print(
        f"reset speed-up (stock time / fast time): {rs / rf:.1f}x wall, "
        f"{statistics.median(cpu[('reset', 'stock')]) / statistics.median(cpu[('reset', 'fast')]):.1f}x CPU; "
        f"fast resets that skipped the compile: {used}"
    )


if __name__ == "__main__":
    main()
