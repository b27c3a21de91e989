"""Benchmark: does corl's CVPO solve ``SafetyCarCircle-v0`` on a CPU, and how long does it take?

What it does, per seed:

1. trains CVPO through the pipeline (``corl run cvpo --task SafetyCarCircle-v0 --preset
   carcircle --seed S``; the command is printed, and a rerun with the same checkpoint root is
   served from the cache), cost limit 10 (the task's default), 300-step episodes;
2. evaluates the final policy (deterministic mean action) for ``--episodes`` episodes in the
   simulator, from the environment seeds ``--eval-seed``, ``--eval-seed + 1``, ...;
3. evaluates a uniform-random policy on exactly the same episodes/seeds.

The table gives reward and cost (mean +- std over the evaluation episodes) of CVPO's final
policy and of the random policy, the cost limit, whether CVPO's mean cost meets it, and the
wall-clock of training (the train stage's own ``wall_s``, recorded when it ran, so a cached
rerun reports the original time).

What to expect (measured on the 2-core development machine, one torch thread, the machine
shared with other jobs): see the ``[presets.carcircle]`` comment in ``pipelines/cvpo.toml``.

The pipeline's export stage writes a dataset into the store: unless ``CORL_DATASETS`` is set,
this script points it at a temporary directory so ``./datasets`` is left alone.

Run: ``.venv/bin/python bench/cvpo_carcircle.py [--seeds 0 1] [--episodes 20] [--preset carcircle]
[--checkpoints DIR] [--set train.steps=...]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")

from corl.eval.rollout import rollout  # noqa: E402
from corl.pipeline.policies import load_policy_fn  # noqa: E402
from corl.pipeline.runner import RunRequest, run_pipeline  # noqa: E402
from corl.tasks import get_task  # noqa: E402

TASK = "SafetyCarCircle-v0"


def _random_policy(act_low: np.ndarray, act_high: np.ndarray, seed: int):
    """Uniform actions in the box from a seeded generator (one draw per env per step)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.as_tensor(act_low, dtype=torch.float32)
    high = torch.as_tensor(act_high, dtype=torch.float32)

    def policy_fn(obs: torch.Tensor) -> torch.Tensor:
        u = torch.rand((obs.shape[0], low.shape[0]), generator=gen)
        return low + (high - low) * u

    return policy_fn


def _fmt(values: np.ndarray) -> str:
    return f"{values.mean():.1f} ± {values.std():.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="carcircle")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--limit", type=float, default=10.0,
                        help="evaluate the learner trained at this cost limit (with train.cost_limits=[...])")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per policy")
    parser.add_argument("--eval-seed", type=int, default=10_000)
    parser.add_argument("--eval-envs", type=int, default=5)
    parser.add_argument("--checkpoints", default=None, help="pipeline cache root (default: a temporary dir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="stage.key=value (repeatable)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    console = Console(width=max(Console().width, 150))
    tmp = tempfile.TemporaryDirectory(prefix="cvpo_carcircle_")
    os.environ.setdefault("CORL_DATASETS", str(Path(tmp.name) / "datasets"))
    root = args.checkpoints or str(Path(tmp.name) / "checkpoints")
    spec = get_task(TASK)

    rows = []
    for seed in args.seeds:
        req = RunRequest(pipeline="cvpo", task=TASK, preset=args.preset, seed=seed, overrides=list(args.overrides),
                         device="cpu", offline=True, checkpoints=root)
        console.print(f"[bold]train[/]: {req.command()}")
        t0 = time.perf_counter()
        result = run_pipeline(req)
        wall_run = time.perf_counter() - t0
        train = next(o for o in result.stages if o.kind == "cvpo_train")
        if train.status not in ("ran", "cached"):
            raise SystemExit(f"train stage {train.status}")
        train_wall = float(train.metrics.get("wall_s", wall_run))
        import json

        specs = [json.loads(p.read_text()) for p in sorted(train.dir.glob("policy-*.json"))]
        policy_spec = next((s for s in specs if float(s["cost_limit"]) == args.limit), specs[-1])
        limit = float(policy_spec["cost_limit"])
        cvpo_fn = load_policy_fn(train.dir, policy_spec)
        console.print(f"[bold]evaluate[/]: {args.episodes} episodes, env seeds from {args.eval_seed} "
                      f"(CVPO final, deterministic; then uniform random on the same seeds)")
        ev = rollout(spec, cvpo_fn, args.episodes, seed=args.eval_seed, num_envs=args.eval_envs)
        rnd_low, rnd_high = _action_box(spec)
        rd = rollout(spec, _random_policy(rnd_low, rnd_high, args.eval_seed), args.episodes, seed=args.eval_seed,
                     num_envs=args.eval_envs)
        rows.append((seed, limit, ev, rd, train_wall, train.status, float(train.metrics.get("env_steps", 0))))

    table = Table(title=f"CVPO on {TASK} (preset {args.preset}; {args.episodes} evaluation episodes per policy)")
    for col in ("seed", "env steps", "CVPO reward", "CVPO cost", "random reward", "random cost", "cost limit",
                "limit met", "train wall-clock"):
        table.add_column(col, justify="right")
    for seed, limit, ev, rd, wall, status, steps in rows:
        met = ev.cost.mean() <= limit
        table.add_row(str(seed), f"{steps:,.0f}", _fmt(ev.reward), _fmt(ev.cost), _fmt(rd.reward), _fmt(rd.cost),
                      f"{limit:g}", "[green]yes[/]" if met else "[red]no[/]",
                      f"{wall / 60:.1f} min" + (" (cached)" if status == "cached" else ""))
    if len(rows) > 1:
        r = np.array([ev.reward.mean() for _, _, ev, _, _, _, _ in rows])
        c = np.array([ev.cost.mean() for _, _, ev, _, _, _, _ in rows])
        rr = np.array([rd.reward.mean() for _, _, _, rd, _, _, _ in rows])
        rc = np.array([rd.cost.mean() for _, _, _, rd, _, _, _ in rows])
        w = np.array([wall for *_, wall, _, _ in [(x[0], x[1], x[2], x[3], x[4], x[5], x[6]) for x in rows]])
        table.add_row("mean over seeds", "", _fmt(r), _fmt(c), _fmt(rr), _fmt(rc), f"{rows[0][1]:g}",
                      f"{int((c <= rows[0][1]).sum())}/{len(rows)}", f"{w.mean() / 60:.1f} min")
    console.print(table)
    console.print(f"torch threads: {torch.get_num_threads()}; checkpoints: {root}")
    tmp.cleanup()


def _action_box(spec) -> tuple[np.ndarray, np.ndarray]:
    from corl.envs.factory import make_env

    env = make_env(spec)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    return low, high


if __name__ == "__main__":
    main()
