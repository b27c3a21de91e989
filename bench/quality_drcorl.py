"""Benchmark (not a test): the quality of DRCORL's final policy against BC-All, BC-Safe and a
uniform random policy on the same task, dataset and cost limit.

What it runs, for every seed in ``--seeds`` (default 0 1 2):

* ``drcorl`` (pipelines/drcorl.toml) with ``--preset`` (default ``quick``);
* ``bc`` with ``bc.mode=all`` (BC-All) and ``bc.mode=safe`` (BC-Safe), same preset name
  (pipelines/bc.toml has ``quick`` and ``paper`` presets too);
* the random row: ``--random-episodes`` episodes of actions drawn uniformly from the action
  box (``corl.eval.rollout.rollout``), one rollout per seed.

Every run goes through the pipeline engine in-process (``corl.pipeline.runner.run_pipeline``,
exactly what ``corl run`` does), one run at a time, on the CPU unless ``--device`` says
otherwise, into ``--checkpoints`` (default: a private directory under /tmp, so cached stages
of earlier runs of this script are reused but no one else's cache is touched). Each method is
evaluated by the spec's ``evaluate`` stage; ``--episodes`` overrides its episode count for all
methods (default 20, so that every row has the same number of evaluation episodes).

The cost limit is the task's first DSRL threshold (10 for OfflineCarCircle-v0) for every row
(``bc.cost_limit`` and DRCORL's ``policy.cost_threshold`` are pinned to it).

Output: one rich table of normalized reward and normalized cost, mean +- std over seeds of the
per-seed means (plus the per-seed values, the number of safe seeds and the wall time), and a
JSON file (``--json``, default ``<checkpoints>/quality_drcorl.json``) with every per-seed
number and the run records' paths.

Run: ``CORL_THREADS=1 .venv/bin/python bench/quality_drcorl.py [--preset quick] [--seeds 0 1 2]
[--task OfflineCarCircle-v0] [--episodes 20] [--checkpoints DIR] [--json PATH]
[--set policy.KEY=VALUE ...]`` (``--set`` applies to the DRCORL runs only).
With the quick preset this takes about 15-20 minutes on a loaded 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(statistics.fmean(values)), float(statistics.pstdev(values)) if len(values) > 1 else 0.0


def run_method(pipeline: str, task: str, preset: str | None, seed: int, overrides: list[str],
               checkpoints: str, device: str) -> dict:
    """One in-process pipeline run; returns its final normalized scores and wall time."""
    from corl.pipeline.runner import RunRequest, run_pipeline

    req = RunRequest(pipeline=pipeline, task=task, preset=preset, seed=seed, overrides=overrides,
                     device=device, checkpoints=checkpoints)
    t0 = time.perf_counter()
    result = run_pipeline(req)
    wall = time.perf_counter() - t0
    final = result.scores["final"]
    return {
        "normalized_reward": float(final["evaluate/normalized_reward"]),
        "normalized_cost": float(final["evaluate/normalized_cost"]),
        "reward": float(final["evaluate/reward"]), "cost": float(final["evaluate/cost"]),
        "episodes": int(final["evaluate/episodes"]), "wall_s": wall,
        "ran": result.ran, "record": str(result.record_path) if result.record_path else None,
        "command": req.command(),
    }


def run_random(task: str, seed: int, episodes: int, cost_limit: float) -> dict:
    """Uniform random actions in the action box; DSRL-normalized like the evaluate stage."""
    from corl.eval.rollout import rollout
    from corl.eval.scores import normalized_cost, normalized_reward
    from corl.envs.factory import make_env
    from corl.tasks import get_task

    spec = get_task(task)
    env = make_env(spec)
    try:
        low = torch.as_tensor(env.action_space.low, dtype=torch.float32)
        high = torch.as_tensor(env.action_space.high, dtype=torch.float32)
    finally:
        env.close()
    gen = torch.Generator().manual_seed(seed)

    def policy_fn(obs: torch.Tensor) -> torch.Tensor:
        u = torch.rand(obs.shape[0], low.numel(), generator=gen)
        return low + u * (high - low)

    t0 = time.perf_counter()
    res = rollout(spec, policy_fn, episodes, seed=seed, num_envs=min(4, episodes))
    return {
        "normalized_reward": float(np.mean(normalized_reward(spec, res.reward))),
        "normalized_cost": float(np.mean(normalized_cost(res.cost, cost_limit))),
        "reward": float(res.reward.mean()), "cost": float(res.cost.mean()), "episodes": len(res),
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="OfflineCarCircle-v0")
    ap.add_argument("--preset", default="quick", help="preset of both specs (quick, paper, or '' for none)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes per run (every method)")
    ap.add_argument("--random-episodes", type=int, default=20)
    ap.add_argument("--methods", nargs="+", default=["drcorl", "bc-all", "bc-safe"],
                    choices=["drcorl", "bc-all", "bc-safe"])
    ap.add_argument("--checkpoints", default=os.environ.get("CORL_QUALITY_CHECKPOINTS", "/tmp/corl-quality-drcorl"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="JSON output (default: CHECKPOINTS/quality_drcorl.json)")
    ap.add_argument("--set", dest="drcorl_sets", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="extra --set override for the DRCORL runs only (repeatable), e.g. policy.train_epochs=2400")
    args = ap.parse_args(argv)

    os.environ.setdefault("CORL_THREADS", "1")
    torch.set_num_threads(int(os.environ["CORL_THREADS"]))
    from corl.tasks import get_task

    spec = get_task(args.task)
    limit = float(spec.cost_limits[0]) if spec.cost_limits else 10.0
    preset = args.preset or None
    console = Console() if sys.stdout.isatty() else Console(width=150)  # logs: no wrapping
    eval_sets = [f"evaluate.episodes={args.episodes}"]
    methods = {
        "drcorl": ("DRCORL", str(REPO / "pipelines" / "drcorl.toml"),
                   [f"policy.cost_threshold={limit}", *eval_sets, *args.drcorl_sets]),
        "bc-all": ("BC-All", str(REPO / "pipelines" / "bc.toml"),
                   ["bc.mode=\"all\"", f"bc.cost_limit={limit}", *eval_sets]),
        "bc-safe": ("BC-Safe", str(REPO / "pipelines" / "bc.toml"),
                    ["bc.mode=\"safe\"", f"bc.cost_limit={limit}", *eval_sets]),
    }
    results: dict[str, list[dict]] = {}
    t_start = time.perf_counter()
    for seed in args.seeds:
        for name in args.methods:
            label, pipeline, overrides = methods[name]
            console.print(f"[bold]{label}[/] seed {seed} ...")
            row = run_method(pipeline, args.task, preset, seed, overrides, args.checkpoints, args.device)
            row["seed"] = seed
            console.print(f"  normalized reward {row['normalized_reward']:.3f}, normalized cost "
                          f"{row['normalized_cost']:.3f} ({row['wall_s']:.0f}s; ran {', '.join(row['ran']) or 'nothing'})")
            results.setdefault(label, []).append(row)
        rnd = run_random(args.task, seed, args.random_episodes, limit)
        rnd["seed"] = seed
        results.setdefault("Random", []).append(rnd)

    table = Table(title=f"{args.task}, cost limit {limit:g}, preset {preset or '-'}, seeds "
                        f"{' '.join(map(str, args.seeds))} ({args.episodes} eval episodes per run; "
                        f"random: {args.random_episodes})")
    table.add_column("method")
    table.add_column("norm. reward (mean ± std)", justify="right")
    table.add_column("norm. cost (mean ± std)", justify="right")
    table.add_column("per seed: reward / cost", justify="left")
    table.add_column("safe seeds", justify="right")
    table.add_column("wall/seed", justify="right")
    summary: dict[str, dict] = {}
    for label, rows in results.items():
        r_mean, r_std = _mean_std([r["normalized_reward"] for r in rows])
        c_mean, c_std = _mean_std([r["normalized_cost"] for r in rows])
        safe = sum(r["normalized_cost"] <= 1.0 for r in rows)
        wall = statistics.fmean(r["wall_s"] for r in rows)
        per_seed = "  ".join(f"{r['normalized_reward']:.2f}/{r['normalized_cost']:.2f}" for r in rows)
        style = None if c_mean <= 1.0 else "red"
        table.add_row(label, f"{r_mean:.3f} ± {r_std:.3f}", f"{c_mean:.3f} ± {c_std:.3f}", per_seed,
                      f"{safe}/{len(rows)}", f"{wall:.0f}s", style=style)
        summary[label] = {"normalized_reward_mean": r_mean, "normalized_reward_std": r_std,
                          "normalized_cost_mean": c_mean, "normalized_cost_std": c_std,
                          "safe_seeds": safe, "seeds": len(rows), "wall_s_mean": wall}
    console.print(table)

    out = {"task": args.task, "cost_limit": limit, "preset": preset, "seeds": args.seeds,
           "drcorl_overrides": args.drcorl_sets,
           "episodes": args.episodes, "random_episodes": args.random_episodes,
           "threads": int(os.environ["CORL_THREADS"]), "device": args.device,
           "checkpoints": args.checkpoints, "host": platform.node(), "python": sys.version.split()[0],
           "torch": torch.__version__, "total_wall_s": time.perf_counter() - t_start,
           "summary": summary, "runs": results}
    path = Path(args.json) if args.json else Path(args.checkpoints) / "quality_drcorl.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    console.print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
