"""Benchmark (not a test): DRCORL's quality on several datasets it was never tuned on, against
BC-Safe, BC-All, MICRO (cost-aware) and a uniform random policy, with the same preset on every
dataset and the same evaluation for every method.

What it runs, for every dataset in ``--datasets`` and every seed in ``--seeds`` (default 0-4):

* ``drcorl`` with ``--preset`` (default ``quick``), once per ``--variant`` (default one
  variant, the preset as shipped); a variant is ``NAME=stage.key=value,stage.key=value``, e.g.
  ``critic=policy.switch_estimator=critic`` to put the switch estimators side by side;
* ``bc`` with ``bc.mode=safe`` (BC-Safe) and ``bc.mode=all`` (BC-All);
* ``micro`` with ``policy.cost_limit`` set to the task's limit (MICRO's cost-aware variant);
* ``random``: uniform actions in the action box (``corl.eval.rollout.rollout``);
* any ``--extra LABEL=PIPELINE[:stage.key=value,...]`` (e.g. the OSRL baselines' pipelines).

Every run goes through the pipeline engine (``corl.pipeline.runner.run_pipeline``, exactly what
``corl run`` does) with ``--offline --dataset FILE``, on the CPU, into ``--checkpoints``
(cached stages are reused: a second call of this script only runs what is missing), in a pool
of ``--jobs`` worker processes (one torch thread each). Every method is evaluated by its spec's
``evaluate`` stage with ``evaluate.episodes = --episodes`` (default 20, DSRL's number) at the
task's first DSRL cost limit (10 for OfflineCarCircle-v0).

Output: one rich table per dataset (normalized reward and cost, mean +- std over seeds, safe
seeds, wall time per seed), a summary of DRCORL's cells (safe cells, reward vs BC-Safe), how
well each cost estimate DRCORL publishes tracks the simulator's cost over all DRCORL runs
(Spearman and Pearson correlation), and a JSON file with every number.

Run: ``CORL_THREADS=1 .venv/bin/python bench/quality_drcorl.py --datasets A.hdf5 B.hdf5 ...
[--preset quick] [--seeds 0 1 2 3 4] [--jobs 2] [--variant NAME=k=v,...] [--methods ...]``.
The datasets: ``bench/make_carcircle_datasets.py`` (the recipes) and the bundled CVPO sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ESTIMATE_KEYS = ("policy/cost_estimate", "policy/best_offline/model_cost", "policy/model_cost")


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return float(statistics.fmean(values)), float(statistics.pstdev(values)) if len(values) > 1 else 0.0


def run_job(job: dict) -> dict:
    """One pipeline run (or the random policy) in a worker process."""
    import torch

    torch.set_num_threads(int(os.environ.get("CORL_THREADS", "1")))
    t0 = time.perf_counter()
    if job["pipeline"] == "random":
        return {**job, **_random_scores(job), "wall_s": time.perf_counter() - t0}
    from corl.pipeline.runner import RunRequest, run_pipeline

    req = RunRequest(
        pipeline=job["pipeline"],
        task=job["task"],
        preset=job["preset"],
        seed=job["seed"],
        overrides=job["overrides"],
        device="cpu",
        dataset=job["dataset"],
        offline=True,
        checkpoints=job["checkpoints"],
    )
    try:
        result = run_pipeline(req)
    except Exception as exc:  # a failed cell is reported, the bench goes on
        return {**job, "error": f"{type(exc).__name__}: {exc}", "wall_s": time.perf_counter() - t0}
    final = result.scores["final"]
    metrics: dict[str, float] = {}
    for o in result.stages:
        for k, v in o.metrics.items():
            if isinstance(v, (int, float)):
                metrics[f"{o.name}/{k}"] = float(v)
    row = {
        **job,
        "normalized_reward": float(final["evaluate/normalized_reward"]),
        "normalized_cost": float(final["evaluate/normalized_cost"]),
        "reward": float(final["evaluate/reward"]),
        "cost": float(final["evaluate/cost"]),
        "wall_s": time.perf_counter() - t0,
        "ran": result.ran,
        "command": req.command(),
        "record": str(result.record_path) if result.record_path else None,
        "stage_wall_s": {o.name: o.wall_time for o in result.stages},
    }
    # scores labelled best_offline/... (DRCORL's evaluate_best_offline stage), keyed by score name
    best = {
        k.rsplit("/", 1)[1]: float(v)
        for k, v in (result.scores.get("best_offline") or {}).items()
        if k.startswith("evaluate") and isinstance(v, (int, float))
    }
    if best:
        row["best_offline"] = best
    row["estimates"] = {k: metrics[k] for k in metrics if k in ESTIMATE_KEYS or "model_" in k}
    return row


def _random_scores(job: dict) -> dict:
    import torch

    from corl.envs.factory import make_env
    from corl.eval.rollout import rollout
    from corl.eval.scores import normalized_cost, normalized_reward
    from corl.tasks import get_task

    spec = get_task(job["task"])
    env = make_env(spec)
    try:
        low = torch.as_tensor(env.action_space.low, dtype=torch.float32)
        high = torch.as_tensor(env.action_space.high, dtype=torch.float32)
    finally:
        env.close()
    gen = torch.Generator().manual_seed(job["seed"])

    def policy_fn(obs: torch.Tensor) -> torch.Tensor:
        return low + torch.rand(obs.shape[0], low.numel(), generator=gen) * (high - low)

    res = rollout(spec, policy_fn, job["episodes"], seed=job["seed"], num_envs=4)
    return {
        "normalized_reward": float(np.mean(normalized_reward(spec, res.reward))),
        "normalized_cost": float(np.mean(normalized_cost(res.cost, job["limit"]))),
        "reward": float(res.reward.mean()),
        "cost": float(res.cost.mean()),
    }


def _parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=stage.key=value,stage.key=value``; a comma starts a new setting only where a
    ``stage.key=`` follows, so list values (``critics.hidden=[256,256]``) stay whole."""
    import re

    name, _, sets = text.partition("=")
    return name, [s for s in re.split(r",(?=[A-Za-z_]\w*\.[\w.]+=)", sets) if s]


def _correlations(xs: list[float], ys: list[float]) -> tuple[float, float, int]:
    from scipy.stats import pearsonr, spearmanr

    pairs = [(x, y) for x, y in zip(xs, ys) if np.isfinite(x) and np.isfinite(y)]
    if len(pairs) < 3:
        return float("nan"), float("nan"), len(pairs)
    a, b = map(np.asarray, zip(*pairs))
    return float(spearmanr(a, b).statistic), float(pearsonr(a, b).statistic), len(pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", required=True, type=Path)
    ap.add_argument("--task", default="OfflineCarCircle-v0")
    ap.add_argument("--preset", default="quick", help="preset of every spec ('' for none)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes per run (every method)")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["drcorl", "bc-safe", "bc-all", "micro", "random"],
        choices=["drcorl", "bc-safe", "bc-all", "micro", "random"],
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=stage.key=value,...",
        help="a DRCORL variant (repeatable); default: one variant 'DRCORL', the preset as shipped",
    )
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="LABEL=PIPELINE[:k=v,...]",
        help="another pipeline as a row (repeatable)",
    )
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--checkpoints", default=os.environ.get("CORL_QUALITY_CHECKPOINTS", "/tmp/corl-quality"))
    ap.add_argument("--json", default=None, help="JSON output (default: CHECKPOINTS/quality_drcorl.json)")
    args = ap.parse_args(argv)
    os.environ.setdefault("CORL_THREADS", "1")

    from rich.console import Console
    from rich.table import Table

    from corl.tasks import get_task

    spec = get_task(args.task)
    limit = float(spec.cost_limits[0]) if spec.cost_limits else 10.0
    preset = args.preset or None
    console = Console() if sys.stdout.isatty() else Console(width=160)
    ev = f"evaluate.episodes={args.episodes}"
    rows: dict[str, tuple[str, list[str]]] = {}  # label -> (pipeline, overrides)
    if "drcorl" in args.methods:
        variants = [_parse_variant(v) for v in args.variant] or [("DRCORL", [])]
        for name, sets in variants:
            rows[name] = ("drcorl", [f"policy.cost_threshold={limit}", ev, *sets])
    if "bc-safe" in args.methods:
        rows["BC-Safe"] = ("bc", ['bc.mode="safe"', f"bc.cost_limit={limit}", ev])
    if "bc-all" in args.methods:
        rows["BC-All"] = ("bc", ['bc.mode="all"', f"bc.cost_limit={limit}", ev])
    if "micro" in args.methods:
        rows["MICRO (cost-aware)"] = ("micro", [f"policy.cost_limit={limit}", ev])
    for text in args.extra:
        label, _, rest = text.partition("=")
        pipeline, _, sets = rest.partition(":")
        rows[label] = (pipeline, [ev, *[s for s in sets.split(",") if s]])
    if "random" in args.methods:
        rows["Random"] = ("random", [])

    jobs = []
    for ds in args.datasets:
        for label, (pipeline, overrides) in rows.items():
            for seed in args.seeds:
                jobs.append(
                    {
                        "label": label,
                        "pipeline": pipeline,
                        "overrides": overrides,
                        "seed": seed,
                        "dataset": str(ds.resolve()),
                        "task": args.task,
                        "preset": preset,
                        "checkpoints": args.checkpoints,
                        "episodes": args.episodes,
                        "limit": limit,
                    }
                )
    t_start = time.perf_counter()
    results: list[dict] = []
    partial = Path(args.checkpoints) / "quality_drcorl.partial.jsonl"  # every finished cell, as it lands
    partial.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_job, j) for j in jobs]
        for fut in as_completed(futures):
            row = fut.result()
            results.append(row)
            with open(partial, "a") as handle:
                handle.write(json.dumps(row, default=str) + "\n")
            tail = row.get("error") or f"nR {row['normalized_reward']:.3f} nC {row['normalized_cost']:.2f}"
            console.print(
                f"[{len(results)}/{len(jobs)}] {Path(row['dataset']).stem} {row['label']} "
                f"seed {row['seed']}: {tail} ({row['wall_s']:.0f}s)"
            )

    summary: dict = {}
    for ds in args.datasets:
        key = str(ds.resolve())
        table = Table(
            title=f"{ds.name}: {args.task}, cost limit {limit:g}, preset {preset or '-'}, "
            f"seeds {' '.join(map(str, args.seeds))}, {args.episodes} episodes per run"
        )
        for col in ("method", "norm. reward", "norm. cost", "safe seeds", "per seed (reward/cost)", "wall/seed"):
            table.add_column(col, justify="left" if col in ("method", "per seed (reward/cost)") else "right")
        summary[ds.name] = {}
        for label in rows:
            cell = sorted(
                (r for r in results if r["dataset"] == key and r["label"] == label and "error" not in r),
                key=lambda r: r["seed"],
            )
            errors = [r for r in results if r["dataset"] == key and r["label"] == label and "error" in r]
            rm, rs = _mean_std([r["normalized_reward"] for r in cell])
            cm, cs = _mean_std([r["normalized_cost"] for r in cell])
            safe = sum(r["normalized_cost"] <= 1.0 for r in cell)
            wall = statistics.fmean(r["wall_s"] for r in cell) if cell else float("nan")
            per_seed = " ".join(f"{r['normalized_reward']:.2f}/{r['normalized_cost']:.2f}" for r in cell)
            if errors:
                per_seed += f" ({len(errors)} failed: {errors[0]['error'][:60]})"
            table.add_row(
                label,
                f"{rm:.3f} ± {rs:.3f}",
                f"{cm:.2f} ± {cs:.2f}",
                f"{safe}/{len(cell)}",
                per_seed,
                f"{wall:.0f}s",
                style=None if cm <= 1.0 else "red",
            )
            summary[ds.name][label] = {
                "reward_mean": rm,
                "reward_std": rs,
                "cost_mean": cm,
                "cost_std": cs,
                "safe": safe,
                "seeds": len(cell),
                "wall_s": wall,
                "failed": len(errors),
            }
            best = [r["best_offline"] for r in cell if r.get("best_offline")]
            if best:
                bl = f"{label} best_offline"
                brm, brs = _mean_std([b.get("normalized_reward", float("nan")) for b in best])
                bcm, bcs = _mean_std([b.get("normalized_cost", float("nan")) for b in best])
                bsafe = sum(b.get("normalized_cost", 99) <= 1.0 for b in best)
                table.add_row(
                    bl,
                    f"{brm:.3f} ± {brs:.3f}",
                    f"{bcm:.2f} ± {bcs:.2f}",
                    f"{bsafe}/{len(best)}",
                    " ".join(
                        f"{b.get('normalized_reward', float('nan')):.2f}/{b.get('normalized_cost', float('nan')):.2f}"
                        for b in best
                    ),
                    "",
                    style=None if bcm <= 1.0 else "red",
                )
                summary[ds.name][bl] = {
                    "reward_mean": brm,
                    "reward_std": brs,
                    "cost_mean": bcm,
                    "cost_std": bcs,
                    "safe": bsafe,
                    "seeds": len(best),
                }
        console.print(table)

    # DRCORL against the targets of issue 13, per variant
    drcorl_labels = [label for label, (p, _) in rows.items() if p == "drcorl"]
    target = Table(title="DRCORL vs the targets: safe cells (>= 80%), reward >= BC-Safe's on every dataset")
    for col in ("variant", "safe cells", "datasets with reward >= BC-Safe", "estimate", "Spearman", "Pearson", "n"):
        target.add_column(col)
    for label in drcorl_labels:
        cells = [r for r in results if r["label"] == label and "error" not in r]
        safe = sum(r["normalized_cost"] <= 1.0 for r in cells)
        better = sum(
            1
            for ds in summary
            if label in summary[ds]
            and "BC-Safe" in summary[ds]
            and summary[ds][label]["reward_mean"] >= summary[ds]["BC-Safe"]["reward_mean"]
        )
        keys = sorted({k for r in cells for k in r.get("estimates", {})})
        if not keys:
            target.add_row(label, f"{safe}/{len(cells)}", f"{better}/{len(summary)}", "-", "", "", "")
        for i, k in enumerate(keys):
            sp, pe, n = _correlations(
                [r["estimates"].get(k, float("nan")) for r in cells], [r["normalized_cost"] for r in cells]
            )
            target.add_row(
                label if i == 0 else "",
                f"{safe}/{len(cells)}" if i == 0 else "",
                f"{better}/{len(summary)}" if i == 0 else "",
                k,
                f"{sp:.2f}",
                f"{pe:.2f}",
                str(n),
            )
    console.print(target)

    import torch

    out = {
        "task": args.task,
        "cost_limit": limit,
        "preset": preset,
        "seeds": args.seeds,
        "episodes": args.episodes,
        "datasets": [str(d) for d in args.datasets],
        "rows": rows,
        "threads": int(os.environ["CORL_THREADS"]),
        "jobs": args.jobs,
        "checkpoints": args.checkpoints,
        "host": platform.node(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "total_wall_s": time.perf_counter() - t_start,
        "summary": summary,
        "runs": results,
    }
    path = Path(args.json) if args.json else Path(args.checkpoints) / "quality_drcorl.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    console.print(f"JSON: {path}  (total {out['total_wall_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
