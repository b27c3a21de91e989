"""Benchmark: does corl's CVPO solve ``SafetyCarCircle-v0`` on a CPU, and how long does it take?

What it does, per seed:

1. trains CVPO through the pipeline (``corl run cvpo --task SafetyCarCircle-v0 --preset
   carcircle --seed S``; the command is printed, and a rerun with the same checkpoint root is
   served from the cache), cost limit 10 (the task's default), 300-step episodes;
2. evaluates the final policy (deterministic mean action) for ``--episodes`` episodes in the
   simulator, from the environment seeds ``--eval-seed``, ``--eval-seed + 1``, ...;
3. evaluates the best feasible iterate (``policy-<limit>-best.pt``: the periodic evaluation
   with the highest reward whose cost met the limit, kept by the train stage's ``eval_every``)
   on the same episodes, when the preset evaluates periodically;
4. evaluates a uniform-random policy on exactly the same episodes/seeds.

The table gives reward and cost (mean +- std over the evaluation episodes) of CVPO's final
and best policies, the training-time "last evaluations" (mean over the last 3 periodic
evaluations of 5 episodes each, FSRL's way of reporting), the random policy, whether the
final policy's mean cost meets the limit, and the wall-clock of training (the train stage's
own ``wall_s``, recorded when it ran, so a cached rerun reports the original time).

What to expect (measured on the 2-core development machine, one torch thread, the machine
shared with other jobs): see the ``[presets.carcircle]`` comment in ``pipelines/cvpo.toml``.

The pipeline's export stage writes a dataset into the store: unless ``CORL_DATASETS`` is set,
this script points it at a temporary directory so ``./datasets`` is left alone.

Run: ``.venv/bin/python bench/cvpo_carcircle.py [--seeds 0 1] [--episodes 20] [--preset carcircle]
[--checkpoints DIR] [--set train.steps=...]``.
"""

from __future__ import annotations

import argparse
import json
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
from corl.pipeline.runner import RunRequest, run_pipeline  # noqa: E402
from corl.store.policies import load_policy_fn  # noqa: E402
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
    parser.add_argument(
        "--limit",
        type=float,
        default=10.0,
        help="evaluate the learner trained at this cost limit (with train.cost_limits=[...])",
    )
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
        req = RunRequest(
            pipeline="cvpo",
            task=TASK,
            preset=args.preset,
            seed=seed,
            overrides=list(args.overrides),
            device="cpu",
            offline=True,
            checkpoints=root,
        )
        console.print(f"[bold]train[/]: {req.command()}")
        t0 = time.perf_counter()
        result = run_pipeline(req)
        wall_run = time.perf_counter() - t0
        train = next(o for o in result.stages if o.kind == "cvpo_train")
        if train.status not in ("ran", "cached"):
            raise SystemExit(f"train stage {train.status}")
        train_wall = float(train.metrics.get("wall_s", wall_run))
        specs = [json.loads(p.read_text()) for p in sorted(train.dir.glob("policy-*.json")) if "-best" not in p.name]
        policy_spec = next((s for s in specs if float(s["cost_limit"]) == args.limit), specs[-1])
        limit = float(policy_spec["cost_limit"])
        cvpo_fn = load_policy_fn(train.dir, policy_spec)
        console.print(
            f"[bold]evaluate[/]: {args.episodes} episodes, env seeds from {args.eval_seed} "
            f"(CVPO final and best, deterministic; then uniform random on the same seeds)"
        )
        ev = rollout(spec, cvpo_fn, args.episodes, seed=args.eval_seed, num_envs=args.eval_envs)
        best_path = train.dir / f"policy-{limit:g}-best.json"
        best = None
        if best_path.exists():
            best_spec = json.loads(best_path.read_text())
            best = (
                rollout(
                    spec,
                    load_policy_fn(train.dir, best_spec),
                    args.episodes,
                    seed=args.eval_seed,
                    num_envs=args.eval_envs,
                ),
                int(best_spec["learner_step"]),
            )
        last = _last_evaluations(train.dir, limit)
        rnd_low, rnd_high = _action_box(spec)
        rd = rollout(
            spec,
            _random_policy(rnd_low, rnd_high, args.eval_seed),
            args.episodes,
            seed=args.eval_seed,
            num_envs=args.eval_envs,
        )
        rows.append(
            {
                "seed": seed,
                "limit": limit,
                "final": ev,
                "best": best,
                "last": last,
                "random": rd,
                "wall": train_wall,
                "status": train.status,
                "steps": float(train.metrics.get("env_steps", 0)),
            }
        )

    table = Table(
        title=f"CVPO on {TASK} (preset {args.preset}; {args.episodes} evaluation episodes per policy, "
        "reward / cost, mean ± std over episodes)"
    )
    for col in (
        "seed",
        "env steps",
        "final",
        "best feasible (at step)",
        "last 3 evaluations",
        "random",
        "cost limit",
        "final meets limit",
        "train wall-clock",
    ):
        table.add_column(col, justify="right")

    def pair(r) -> str:
        return f"{_fmt(r.reward)} / {_fmt(r.cost)}"

    for row in rows:
        met = row["final"].cost.mean() <= row["limit"]
        best = f"{pair(row['best'][0])} ({row['best'][1]:,})" if row["best"] else "none"
        last = row["last"]
        last_txt = f"{last[0]:.1f} / {last[1]:.1f}" if last else "-"
        table.add_row(
            str(row["seed"]),
            f"{row['steps']:,.0f}",
            pair(row["final"]),
            best,
            last_txt,
            pair(row["random"]),
            f"{row['limit']:g}",
            "[green]yes[/]" if met else "[red]no[/]",
            f"{row['wall'] / 60:.1f} min" + (" (cached)" if row["status"] == "cached" else ""),
        )
    if len(rows) > 1:  # mean ± std over seeds of the per-seed means

        def over(values) -> str:
            return _fmt(np.array(values, dtype=float))

        final_r = [r["final"].reward.mean() for r in rows]
        final_c = [r["final"].cost.mean() for r in rows]
        bests = [r["best"][0] for r in rows if r["best"]]
        lasts = [r["last"] for r in rows if r["last"]]
        limit = rows[0]["limit"]
        table.add_row(
            "over seeds",
            "",
            f"{over(final_r)} / {over(final_c)}",
            f"{over([b.reward.mean() for b in bests])} / {over([b.cost.mean() for b in bests])} ({len(bests)} seeds)"
            if bests
            else "none",
            f"{over([x[0] for x in lasts])} / {over([x[1] for x in lasts])}" if lasts else "-",
            f"{over([r['random'].reward.mean() for r in rows])} / {over([r['random'].cost.mean() for r in rows])}",
            f"{limit:g}",
            f"{int((np.array(final_c) <= limit).sum())}/{len(rows)}",
            f"{np.mean([r['wall'] for r in rows]) / 60:.1f} min",
        )
    console.print(table)
    console.print(f"torch threads: {torch.get_num_threads()}; checkpoints: {root}")
    tmp.cleanup()


def _last_evaluations(train_dir: Path, limit: float, k: int = 3) -> tuple[float, float] | None:
    """Mean reward and cost of the last ``k`` periodic evaluations of the learner at ``limit``."""
    import json

    path = train_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    evals = [r for r in rows if "eval_reward" in r and float(r.get("cost_limit", limit)) == limit][-k:]
    if not evals:
        return None
    return float(np.mean([r["eval_reward"] for r in evals])), float(np.mean([r["eval_cost"] for r in evals]))


def _action_box(spec) -> tuple[np.ndarray, np.ndarray]:
    from corl.envs.factory import make_env

    env = make_env(spec)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    return low, high


if __name__ == "__main__":
    main()
