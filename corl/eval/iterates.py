"""How well an offline estimate tracks the simulator: roll labelled policy iterates out and
rank-correlate (Spearman) their model estimates with the simulator's numbers.

DRCORL's policy stage labels iterates with a model-based estimate of their episodic cost and
reward (``iterates.json`` beside ``iterates/iter-*.pt``; see
``corl.pipeline.stages._drcorl_model``). ``corl eval --iterates K`` rolls ``K`` of them out
with the same env seeds as the final policy (common random numbers), so the correlation says
whether the estimate *orders* policies the way the simulator does, which is what the switch
and the best-offline selection rely on. Returns plain data; printing is the CLI's job.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from corl.eval.select import SelectedPolicy, iterate_labels


def pick_iterates(labels: Sequence[dict[str, Any]], k: int, keep: Sequence[int] = ()) -> list[dict[str, Any]]:
    """``k`` labels spread evenly over the run (first and last included), plus ``keep``
    iterations (the final and best-offline ones) when they are labelled; sorted by iteration."""
    ordered = sorted(labels, key=lambda x: int(x["iteration"]))
    if k <= 0 or not ordered:
        return []
    idx = set(np.unique(np.round(np.linspace(0, len(ordered) - 1, min(k, len(ordered)))).astype(int)).tolist())
    idx.update(i for i, x in enumerate(ordered) if int(x["iteration"]) in set(keep))
    return [ordered[i] for i in sorted(idx)]


def spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Spearman's rho and its p-value (None when undefined: < 3 points or a constant side)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None, "n": float(len(x))}
    res = spearmanr(x, y)
    rho, p = float(res.statistic), float(res.pvalue)
    return {"rho": rho if math.isfinite(rho) else None, "p": p if math.isfinite(p) else None, "n": float(len(x))}


def evaluate_iterates(
    selected: SelectedPolicy,
    k: int,
    episodes: int,
    num_envs: int,
    seed: int,
    cost_limit: float | None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Roll ``k`` labelled iterates of ``selected``'s artifact out; None when it labels none."""
    from corl.eval.rollout import rollout
    from corl.eval.scores import summarize
    from corl.store.policies import load_policy_fn

    doc = iterate_labels(selected.artifact)
    if not doc or k <= 0:
        return None
    keep = [doc.get("final_iteration"), doc.get("best_offline_iteration")]
    chosen = pick_iterates(doc["iterates"], k, [int(i) for i in keep if i is not None])
    task, rows = selected.task, []
    for label in chosen:
        spec = dict(selected.spec, file=label["file"])
        fn = load_policy_fn(selected.artifact.dir, spec, device)
        res = rollout(task, fn, episodes, seed=seed, num_envs=min(num_envs, episodes), device=device)
        sim = summarize(task, res.reward, res.cost, res.length, cost_limit, prefix="")
        row = {
            "iteration": int(label["iteration"]),
            "file": label["file"],
            "model_cost": label["model_cost"],
            "model_reward": label["model_reward"],
            "model_normalized_cost": label.get("model_normalized_cost"),
            "model_normalized_reward": label.get("model_normalized_reward"),
            "sim_cost": sim["cost"],
            "sim_reward": sim["reward"],
            "sim_normalized_cost": sim.get("normalized_cost"),
            "sim_normalized_reward": sim.get("normalized_reward"),
            "final": label["iteration"] == doc.get("final_iteration"),
            "best_offline": label["iteration"] == doc.get("best_offline_iteration"),
        }
        rows.append(row)
        if progress:
            progress(
                f"iterate {row['iteration']}: model cost {row['model_cost']:.1f} reward {row['model_reward']:.1f}; "
                f"simulator cost {row['sim_cost']:.1f} reward {row['sim_reward']:.1f}"
            )
    return {
        "episodes": episodes,
        "seed": seed,
        "estimate": doc.get("estimate", {}),
        "iterates": rows,
        "spearman_cost": spearman([r["model_cost"] for r in rows], [r["sim_cost"] for r in rows]),
        "spearman_reward": spearman([r["model_reward"] for r in rows], [r["sim_reward"] for r in rows]),
    }
