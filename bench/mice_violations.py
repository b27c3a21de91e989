"""Benchmark (not a test): does MICE's intrinsic cost cut constraint violations during training?

MICE's headline claim (algorithms.md 4.1, 4.9) is fewer constraint violations *during
training* than its base learner. For every seed in ``--seeds`` (default 0 1 2) this trains the
``mice`` pipeline twice, interleaved (seed 0 MICE, seed 0 base, seed 1 MICE, ...), identical
except for one option:

* ``MICE``: ``train.intrinsic_factor=5.0`` (ρ, the released default);
* ``CPO (no intrinsic)``: ``train.intrinsic_factor=0``, which makes ``c^I ≡ 0``: no β
  correction (``β_t = β``), ``Ĵ^I = 0``, so the learner is plain CPO (the memory still fills
  but is never read). With ``--base ppo_lag`` both variants use the PPO-Lagrangian base
  (an extension, not the released MICE).

Same seed, same env seeds, same network initialisation (the random projection is built in
both variants, so the torch RNG stream is identical up to the first update), same budget.

Metrics, read from the train stage's ``metrics.jsonl`` (one line per finished training
episode, written by ``mice_train``):

* ``cum_violations``: the number of training episodes whose episodic cost exceeded the
  cost limit d (what the stage logs as ``cum_violations``);
* ``cum_violation_excess``: Σ over training episodes of ``max(J_c − d, 0)`` (the stage's
  ``cum_violation_excess``; the MICE paper's exact metric is unverified, algorithms.md 4.8,
  so both are reported);
* final reward / cost: mean over the last ``--final-episodes`` training episodes
  (stochastic policy, as the stage's ``final/*`` and OmniSafe's ``Metrics/EpRet``/``EpCost``);
* wall-clock of each ``corl run`` (subprocess) and the train stage's own ``wall_s``.

Output: a rich table (mean ± std over seeds, and per-seed values), a JSON file (``--json``,
default ``<checkpoints>/mice_violations.json``) with every per-seed number, the commands and
the curves, and a PNG next to it (``mice_violations.png``): cumulative violations (count and
excess) and the episode cost (moving average) against env steps, one line per seed and the
mean per variant.

Run: ``CORL_THREADS=1 CORL_DATASETS=/tmp/mice_bench_ds .venv/bin/python bench/mice_violations.py
[--task SafetyCarCircle-v0] [--seeds 0 1 2] [--steps 60000] [--num-envs 4]
[--steps-per-epoch 2000] [--cost-limit 25]``. Reruns reuse the cached train stages (seconds).
Cost measured on the shared 2-core CPU (one torch thread, load 3-4): 170-400 s per run at
60k steps (~150-350 env steps/s), 28-32 min for 3 seeds x 2 variants.

Why SafetyCarCircle-v0 by default and not SafetyPointGoal1-v0 (the paper's task): on this
2-core machine a SafetyPointGoal1 episode costs ~2.6 s of env reset (safety-gymnasium
recompiles the MuJoCo model from XML on every reset, and again on every goal reached) on top
of ~1.2 s of stepping, so MICE runs at ~120-180 env steps/s: a 30-40 min bench buys ~60k steps
per run, i.e. 60 episodes, far too few for CPO to move on PointGoal1 (the paper trains 10M).
Bullet's CarCircle (300-step episodes, cheap resets) runs at ~150-350 steps/s under MICE,
and its random initial policy already exceeds the cost limit (episode cost ~20-60), so
violations happen and change within the budget. Its registry limit is 10; ``--cost-limit 25``
(the Bullet-Safety-Gym/OmniSafe navigation value) is the regime where the base CPO is
sometimes feasible, which is where MICE's inflated constraint can change the step (OmniSafe's
CPO takes the pure recovery step whenever ``c`` exceeds ~sqrt(2 δ_KL s), i.e. for any
violation of more than a fraction of a cost unit, so at limit 10 both variants recover all
the time). ``--task SafetyPointGoal1-v0`` works (cost limit 25 from pipelines/mice.toml).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import CORL, ROOT, finished_stage, run_logged  # noqa: E402

_run = run_logged
VARIANTS = {"MICE": "5.0", "CPO (no intrinsic)": "0.0"}


def _train_dir(stdout: str, root: Path) -> tuple[Path, dict]:
    """The mice_train artifact of the run that just finished, and its final metrics."""
    path, stage = finished_stage(stdout, root, "mice_train")
    return path, stage.get("metrics", {})


def _episodes(metrics_path: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "episode_reward" in r]


def _agg(vals: list[float], fmt: str = "{:.1f}") -> str:
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(sd)}"


def _plot(per_run: list[dict], limit: float, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {name: c for name, c in zip(VARIANTS, ("tab:red", "tab:blue"))}
    panels = [
        ("cum_violations", "cumulative violating episodes"),
        ("cum_violation_excess", "cumulative violation excess Σ max(J_c − d, 0)"),
        ("episode_cost", "episode cost (moving average of 10)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0))
    for ax, (key, label) in zip(axes, panels):
        for name in VARIANTS:
            runs = [r for r in per_run if r["variant"] == name]
            grid = None
            stack = []
            for i, r in enumerate(runs):
                steps = np.asarray(r["curve"]["step"], dtype=float)
                vals = np.asarray(r["curve"][key], dtype=float)
                if key == "episode_cost" and len(vals) >= 10:
                    vals = np.convolve(vals, np.ones(10) / 10, mode="valid")
                    steps = steps[9:]
                ax.plot(steps, vals, "-", color=colors[name], alpha=0.3, linewidth=0.8, label=None)
                if len(steps):
                    grid = np.linspace(min(steps), max(steps), 200) if grid is None else grid
                    stack.append(np.interp(grid, steps, vals, left=np.nan if key == "episode_cost" else 0.0))
            if stack:
                ax.plot(
                    grid,
                    np.nanmean(np.vstack(stack), 0),
                    "-",
                    color=colors[name],
                    linewidth=2.0,
                    label=f"{name} (mean of {len(stack)} seeds)",
                )
        if key == "episode_cost":
            ax.axhline(limit, color="k", linestyle="--", linewidth=0.8, label=f"cost limit {limit:g}")
        ax.set_xlabel("env steps")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="SafetyCarCircle-v0")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=60_000, help="env steps per run (summed over envs)")
    ap.add_argument("--num-envs", type=int, default=4)
    ap.add_argument("--steps-per-epoch", type=int, default=2000)
    ap.add_argument("--update-iters", type=int, default=None, help="critic passes per epoch (default: stage's 10)")
    ap.add_argument("--cost-limit", type=float, default=None, help="default: pipelines/mice.toml / the task's")
    ap.add_argument("--base", default="cpo", choices=["cpo", "ppo_lag"])
    ap.add_argument("--final-episodes", type=int, default=10)
    ap.add_argument("--checkpoints", default="/tmp/corl_mice_violations")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    root = Path(args.checkpoints)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CORL_THREADS": os.environ.get("CORL_THREADS", "1")}
    log = root / "mice_violations.log"
    console = Console(width=200)
    common = [
        "--set",
        f"train.steps={args.steps}",
        "--set",
        f"train.num_envs={args.num_envs}",
        "--set",
        f"train.steps_per_epoch={args.steps_per_epoch}",
        "--set",
        f'train.base="{args.base}"',
    ]
    if args.update_iters is not None:
        common += ["--set", f"train.update_iters={args.update_iters}"]
    if args.cost_limit is not None:
        common += ["--set", f"train.cost_limit={args.cost_limit}"]
    path = Path(args.json) if args.json else root / "mice_violations.json"
    partial = path.with_suffix(".partial.json")
    console.print(
        f"bench: CORL_THREADS={env['CORL_THREADS']} "
        f"CORL_DATASETS={env.get('CORL_DATASETS', '(unset: ./datasets)')} "
        f"{' '.join([os.path.relpath(sys.executable, ROOT), os.path.relpath(__file__, ROOT), *sys.argv[1:]])}"
    )
    t_bench = time.time()
    per_run: list[dict] = []
    limit = float("nan")
    for seed in args.seeds:
        for name, factor in VARIANTS.items():
            cmd = [
                CORL,
                "run",
                "mice",
                "--task",
                args.task,
                "--seed",
                str(seed),
                *common,
                "--set",
                f"train.intrinsic_factor={factor}",
                "--checkpoints",
                str(root),
            ]
            console.print(f"[dim]$ {' '.join(cmd)}[/]")
            stdout, wall = _run(cmd, env, log)
            train_dir, stage_metrics = _train_dir(stdout, root)
            eps = _episodes(train_dir / "metrics.jsonl")
            if not eps:
                sys.exit(f"{train_dir}: no episodes in metrics.jsonl")
            limit = float(eps[-1]["cost_limit"])
            tail = eps[-args.final_episodes :]
            row = {
                "variant": name,
                "seed": seed,
                "command": " ".join(cmd),
                "train_dir": str(train_dir),
                "wall_s": wall,
                "stage_wall_s": float(stage_metrics.get("wall_s", wall)),
                "episodes": len(eps),
                "env_steps": int(eps[-1]["step"]),
                "cum_violations": float(eps[-1]["cum_violations"]),
                "cum_violation_excess": float(eps[-1]["cum_violation_excess"]),
                "violation_rate": float(eps[-1]["cum_violations"]) / len(eps),
                "final_reward": statistics.mean(e["episode_reward"] for e in tail),
                "final_cost": statistics.mean(e["episode_cost"] for e in tail),
                "final_episodes": len(tail),
                "cost_limit": limit,
                "curve": {
                    k: [e[k] for e in eps]
                    for k in ("step", "cum_violations", "cum_violation_excess", "episode_cost", "episode_reward")
                },
            }
            per_run.append(row)
            partial.write_text(json.dumps({"runs": per_run}, indent=1))  # survives an interrupted bench
            console.print(
                f"[dim]seed {seed} {name}: {wall:.0f}s, {row['episodes']} episodes, violations "
                f"{row['cum_violations']:.0f} (excess {row['cum_violation_excess']:.0f}), final reward "
                f"{row['final_reward']:.2f} cost {row['final_cost']:.2f}[/]"
            )
    bench_wall = time.time() - t_bench

    title = (
        f"MICE vs CPO without intrinsic cost on {args.task} (base {args.base}, limit {limit:g}, "
        f"{args.steps} env steps x seeds {' '.join(map(str, args.seeds))}, {args.num_envs} envs, "
        f"{args.steps_per_epoch} steps/epoch)"
    )
    table = Table(title=title, title_justify="left")
    for col in (
        "variant",
        "violating episodes",
        "violation excess",
        "violating / episodes",
        f"final reward (last {args.final_episodes})",
        f"final cost (last {args.final_episodes})",
        "train wall s / run",
        "per-seed violations",
        "per-seed excess",
    ):
        table.add_column(col)
    summary: list[dict] = []
    for name in VARIANTS:
        runs = [r for r in per_run if r["variant"] == name]
        col = {
            k: [r[k] for r in runs]
            for k in (
                "cum_violations",
                "cum_violation_excess",
                "violation_rate",
                "final_reward",
                "final_cost",
                "wall_s",
                "stage_wall_s",
                "episodes",
            )
        }
        table.add_row(
            name,
            _agg(col["cum_violations"]),
            _agg(col["cum_violation_excess"]),
            _agg(col["violation_rate"], "{:.2f}"),
            _agg(col["final_reward"], "{:.2f}"),
            _agg(col["final_cost"], "{:.2f}"),
            _agg(col["stage_wall_s"], "{:.0f}"),
            " ".join(f"{x:.0f}" for x in col["cum_violations"]),
            " ".join(f"{x:.0f}" for x in col["cum_violation_excess"]),
        )
        summary.append({"variant": name, **col})
    console.print(table)
    base = {r["seed"]: r for r in per_run if r["variant"] != "MICE"}
    diffs = [
        r["cum_violations"] - base[r["seed"]]["cum_violations"]
        for r in per_run
        if r["variant"] == "MICE" and r["seed"] in base
    ]
    ex_diffs = [
        r["cum_violation_excess"] - base[r["seed"]]["cum_violation_excess"]
        for r in per_run
        if r["variant"] == "MICE" and r["seed"] in base
    ]
    console.print(
        f"paired MICE − CPO per seed: violating episodes {diffs}, excess {[round(x, 1) for x in ex_diffs]}; "
        f"bench wall {bench_wall / 60:.1f} min (training, cached or not: "
        f"{sum(r['stage_wall_s'] for r in per_run) / 60:.1f} min)"
    )

    plot = path.with_suffix(".png")
    _plot(per_run, limit, title, plot)
    payload = {
        "task": args.task,
        "seeds": args.seeds,
        "steps": args.steps,
        "num_envs": args.num_envs,
        "steps_per_epoch": args.steps_per_epoch,
        "update_iters": args.update_iters,
        "base": args.base,
        "cost_limit": limit,
        "final_episodes": args.final_episodes,
        "bench_command": " ".join([sys.executable, *sys.argv]),
        "bench_wall_s": bench_wall,
        # Σ of the train stages' own wall_s: the training cost even when this run found them cached
        "train_wall_total_s": sum(r["stage_wall_s"] for r in per_run),
        "summary": summary,
        "paired_diff_violations": diffs,
        "paired_diff_excess": ex_diffs,
        "plot": str(plot),
        "runs": per_run,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(
        json.dumps(
            {
                "json": str(path),
                "plot": str(plot),
                "bench_wall_s": round(bench_wall, 1),
                "summary": [{k: v for k, v in s.items()} for s in summary],
            }
        )
    )


if __name__ == "__main__":
    main()
