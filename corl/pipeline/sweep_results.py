"""A sweep's results: per method x task x dataset x setting, scores over seeds.

One row per group of runs that differ only in the seed: DSRL-normalized reward (D4RL score
for D4RL tasks) and normalized cost, mean and std over the seeds that finished, and how many
seeds were safe (normalized cost <= 1). The final policy's scores (``final/...``) and a best
iterate's (``best/...``, where a pipeline evaluates one) are separate columns, never mixed.
The std is the population std over seeds (as ``bench/quality_drcorl.py``). Written as
``sweep.json`` (runs and groups), ``sweep.csv`` (groups) and ``sweep.png`` (reward against
cost, one colour per method, a point per seed, the mean with its std as error bars).
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corl.store.artifacts import write_json_atomic

LABELS = ("final", "best")


def run_scores(scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``{"final": {"reward", "cost", "safe"}, "best": {...}}`` from a run's scores (the first
    stage that reports a normalized reward or score; empty labels left out)."""
    out: dict[str, dict[str, float]] = {}
    for label in LABELS:
        values = scores.get(label, {})
        key = next((k for k in values if k.endswith(("/normalized_reward", "/normalized_score"))), None)
        if key is None:
            continue
        stage = key.rsplit("/", 1)[0]
        picked = {"reward": values[key]}
        if f"{stage}/normalized_cost" in values:
            picked["cost"] = values[f"{stage}/normalized_cost"]
        if f"{stage}/safe" in values:
            picked["safe"] = values[f"{stage}/safe"]
        out[label] = picked
    return out


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(statistics.fmean(values)), float(statistics.pstdev(values)) if len(values) > 1 else 0.0


@dataclass
class Group:
    method: str
    pipeline: str
    task: str
    dataset: str
    setting: str
    seeds: list[int] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "pipeline": self.pipeline,
            "task": self.task,
            "dataset": self.dataset,
            "setting": self.setting,
            "seeds": len(self.seeds),
            "finished": sum(r["status"] == "ok" for r in self.runs),
        }
        for label in LABELS:
            scored = [r["scores"][label] for r in self.runs if label in r.get("scores", {})]
            if not scored:
                continue
            reward = _mean_std([s["reward"] for s in scored])
            cost = _mean_std([s["cost"] for s in scored if "cost" in s])
            out[label] = {
                "n": len(scored),
                "reward_mean": reward[0],
                "reward_std": reward[1],
                "cost_mean": cost[0],
                "cost_std": cost[1],
                "safe_seeds": int(sum(s.get("safe", 0.0) >= 0.5 for s in scored)),
                "per_seed": [[s["reward"], s.get("cost")] for s in scored],
            }
        return out


def group_runs(runs: list[dict[str, Any]]) -> list[Group]:
    """Runs (dicts with method, pipeline, task, dataset, setting, seed, status, scores) in
    groups that differ only in the seed, in the sweep's order."""
    groups: dict[tuple, Group] = {}
    for r in runs:
        key = (r["method"], r["pipeline"], r["task"], r["dataset"], r["setting"])
        group = groups.setdefault(key, Group(*key))
        group.seeds.append(r["seed"])
        group.runs.append(r)
    return list(groups.values())


def fmt(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.3f} ± {std:.3f}"


def write_results(out_dir: Path, header: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Path]:
    """Write sweep.json, sweep.csv and sweep.png into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = [g.summary() for g in group_runs(runs)]
    paths = {"json": out_dir / "sweep.json", "csv": out_dir / "sweep.csv", "png": out_dir / "sweep.png"}
    write_json_atomic(paths["json"], {**header, "groups": groups, "runs": runs})
    columns = ["method", "pipeline", "task", "dataset", "setting", "seeds", "finished"]
    stats = ["n", "reward_mean", "reward_std", "cost_mean", "cost_std", "safe_seeds"]
    tmp = paths["csv"].with_name(".sweep.csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns + [f"{label}_{s}" for label in LABELS for s in stats])
        for g in groups:
            writer.writerow(
                [g[c] for c in columns]
                + [("" if g.get(label, {}).get(s) is None else g[label][s]) for label in LABELS for s in stats]
            )
    tmp.replace(paths["csv"])
    if not plot(groups, paths["png"]):
        paths.pop("png")
    return paths


def plot(groups: list[dict[str, Any]], path: Path) -> bool:
    """Normalized reward against normalized cost of the final policies: a point per seed,
    the mean with std error bars per group, one colour per method. False: nothing to plot."""
    points = [g for g in groups if g.get("final", {}).get("cost_mean") is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    methods = list(dict.fromkeys(g["method"] for g in points))
    colours = plt.get_cmap("tab10")
    for g in points:
        colour = colours(methods.index(g["method"]) % 10)
        final = g["final"]
        per_seed = [(r, c) for r, c in final["per_seed"] if c is not None]
        ax.scatter([c for _, c in per_seed], [r for r, _ in per_seed], color=colour, alpha=0.3, s=14)
        name = " ".join(
            x
            for x in (
                g["method"],
                g["task"] if len({p["task"] for p in points}) > 1 else "",
                g["dataset"] if len({p["dataset"] for p in points}) > 1 else "",
                "" if g["setting"] == "-" else g["setting"],
            )
            if x
        )
        ax.errorbar(
            final["cost_mean"],
            final["reward_mean"],
            xerr=final["cost_std"],
            yerr=final["reward_std"],
            fmt="o",
            color=colour,
            capsize=3,
            label=f"{name} ({final['safe_seeds']}/{final['n']} safe)",
        )
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("normalized cost (final policy; <= 1 is safe)")
    ax.set_ylabel("normalized reward (final policy)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(".sweep.png.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return True


def load_results(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
