"""Benchmark: ``corl eval``'s batched vector-env evaluation against the bare single-env loop.

What it measures and why it is fair:

* the same policy everywhere: a trained one (``--artifact DIR``, any policy artifact) or, by
  default, a seeded 256x256 tanh-Gaussian (the size of the BC / MICRO paper policies), run
  deterministically (mean action) as every evaluation does;
* variants, each producing ``--episodes`` full episodes per block, environment construction
  included in every variant (``corl eval`` builds its vector env per condition):
  (a) **bare sim**: one env, uniform random actions, no policy: the simulator alone. A
      reference only: other actions drive other dynamics (e.g. more wall contacts), so its
      per-step simulator cost differs from the policy's; the ratio that matters is (c)/(b);
  (b) **bare loop**: one env, one torch forward per step on a ``(1, obs_dim)`` tensor:
      what a hand-written evaluation script does;
  (c) **corl eval**: :func:`corl.eval.rollout.rollout` with ``--envs`` synchronous vector
      envs and one batched forward per vector step (what ``corl eval`` runs per condition);
* blocks are interleaved (a, b, c, then rotated) in one process so all see the same CPU
  contention; medians of episodes/s are reported with ratios, by wall time and by this
  process's CPU time (``time.process_time``; steadier on a shared machine).

What to expect: Bullet/MuJoCo stepping is the cost (about 1.5-2 ms a step for CarCircle on
this CPU, against 0.1-0.4 ms for a small policy forward), so batching K envs saves at most
the policy's share, and the K simulators corl builds per condition cost back a little.

Run: ``.venv/bin/python bench/bench_eval.py [--task T] [--episodes N] [--envs K] [--reps R] [--artifact DIR]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from corl.envs.factory import make_env
from corl.eval.rollout import rollout
from corl.tasks import get_task


def _policy(task, artifact: str | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    if artifact:
        from corl.eval.select import select_artifact
        from corl.store.artifacts import cache_root
        from corl.store.policies import load_policy_fn

        sel = select_artifact(cache_root(None), artifact, task)[0]
        return load_policy_fn(sel.artifact.dir, sel.spec), f"{sel.label} ({sel.artifact.dir.name})"
    from corl.nn.policies import TanhGaussianPolicy

    torch.manual_seed(0)
    env = make_env(task)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    module = TanhGaussianPolicy(task.obs_dim, task.act_dim, (256, 256), act_low=low, act_high=high).eval()
    return torch.no_grad()(lambda obs: module.act(obs, deterministic=True)), "tanh-Gaussian 256x256 (seeded, untrained)"


def bare_loop(task, episodes: int, seed: int, policy: Callable | None) -> int:
    """One env; ``policy=None`` steps random actions (the simulator alone). Returns env steps."""
    env = make_env(task)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    steps = 0
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done = False
            while not done:
                if policy is None:
                    action = rng.uniform(low, high)
                else:
                    x = torch.as_tensor(np.asarray(obs), dtype=torch.float32).unsqueeze(0)
                    action = np.clip(policy(x)[0].numpy().astype(np.float64), low, high)
                obs, _, terminated, truncated, _ = env.step(action)
                steps += 1
                done = terminated or truncated
    finally:
        env.close()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="OfflineCarCircle-v0")
    parser.add_argument("--episodes", type=int, default=8, help="episodes per block")
    parser.add_argument("--envs", type=int, default=4, help="vector envs of the corl variant")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--artifact", default=None, help="a policy artifact directory (default: a seeded policy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    policy, policy_name = _policy(task, args.artifact)

    variants: dict[str, Callable[[int], None]] = {
        "bare sim (1 env, random actions; reference)": lambda rep: bare_loop(task, args.episodes, rep, None),
        "bare loop (1 env, policy per step)": lambda rep: bare_loop(task, args.episodes, rep, policy),
        f"corl eval ({args.envs} vector envs, batched)": lambda rep: rollout(
            task, policy, args.episodes, seed=rep, num_envs=args.envs
        ),
    }
    names = list(variants)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    variants[names[0]](0)  # warm-up: imports, first simulator build
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            w0, c0 = time.perf_counter(), time.process_time()
            variants[name](rep)
            wall[name].append(args.episodes / (time.perf_counter() - w0))
            cpu[name].append(args.episodes / (time.process_time() - c0))

    console = Console()
    table = Table(
        title=f"evaluation throughput on {task.name} ({task.max_episode_steps}-step episodes, "
        f"{args.episodes} episodes x {args.reps} interleaved reps; policy: {policy_name})",
        title_justify="left",
    )
    for col in (
        "variant",
        "episodes/s (wall)",
        "vs bare loop",
        "vs bare sim",
        "episodes/s (CPU)",
        "vs bare loop (CPU)",
        "vs bare sim (CPU)",
    ):
        table.add_column(col)
    med = {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}
    sim, loop = med[names[0]], med[names[1]]
    for name in names:
        w, c = med[name]
        table.add_row(
            name,
            f"{w:.2f}",
            f"{w / loop[0]:.2f}x",
            f"{w / sim[0]:.2f}x",
            f"{c:.2f}",
            f"{c / loop[1]:.2f}x",
            f"{c / sim[1]:.2f}x",
        )
    console.print(table)
    console.print(
        f"[dim]torch threads {torch.get_num_threads()}; env construction included in every block; "
        f"{Path(__file__).name}[/]",
        highlight=False,
    )


if __name__ == "__main__":
    main()
