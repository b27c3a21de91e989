"""Training curves: one PNG per training stage, drawn from its ``metrics.jsonl``.

Why from ``metrics.jsonl`` and in the engine: every stage already logs there (the train loop,
MICRO's epoch loop, the online collectors), so one function draws every stage's curves and
``corl runs --plot`` can redraw them for artifacts built before this existed. The file,
``training_curves.png``, sits beside the artifact's weights; like ``metrics.jsonl`` it is a
view of the run, not content, so it is not hashed into the manifest (``BOOKKEEPING``).

What is drawn:

* the stage's main losses: metrics whose name says loss, nll or mse (else its first few
  numeric metrics), one panel each, against the step;
* where the stage evaluates (online learners' periodic test episodes ``eval_reward`` /
  ``eval_cost``, or their training episodes ``episode_reward`` / ``episode_cost``), reward and
  cost against the step, with the cost limit drawn as a dashed line.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from corl.store.artifacts import CURVES as CURVES_FILE  # noqa: E402

LOSS_PATTERN = re.compile(r"(loss|nll|mse)", re.IGNORECASE)
#: bookkeeping columns of metrics.jsonl lines, never plotted as curves
SKIP = {
    "step",
    "episode",
    "learner",
    "seed",
    "training_step",
    "cost_limit",
    "epoch",
    "learner_step",
    "episode_length",
    "cum_violations",
    "cum_violation_excess",
}
MAX_LOSS_PANELS = 6
# training episodes first (the periodic evaluations are drawn over them), evaluations alone else
REWARD_COST_KEYS = (
    ("episode_reward", "episode_cost", "training episodes"),
    ("eval_reward", "eval_cost", "deterministic evaluation"),
)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl`` (a torn last line from a kill is skipped)."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def loss_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The metrics to draw as losses (see the module docstring), in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key not in SKIP and _is_number(value):
                seen.setdefault(key)
    names = [k for k in seen if not any(k in pair for pair in REWARD_COST_KEYS) and not k.startswith("eval")]
    losses = [k for k in names if LOSS_PATTERN.search(k)]
    return (losses or names)[:MAX_LOSS_PANELS]


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(r["step"], r[key]) for r in rows if "step" in r and _is_number(r.get(key))]
    if not points:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(points, dtype=float)
    return arr[:, 0], arr[:, 1]


def _smooth(values: np.ndarray, k: int) -> np.ndarray:
    if len(values) < k or k <= 1:
        return values
    return np.convolve(values, np.ones(k) / k, mode="valid")


def layout(
    rows: Sequence[dict[str, Any]], cost_limits: Sequence[float] = ()
) -> tuple[list[tuple[str, str]], tuple[str, str, str] | None, list[float]]:
    """(panels as (loss|reward|cost, metric), the reward/cost pair drawn, the cost limits dashed):
    the stage's ``cost_limits`` plus any ``cost_limit`` its metric lines carry."""
    panels: list[tuple[str, str]] = [("loss", k) for k in loss_keys(rows)]
    pair = next(((r, c, what) for r, c, what in REWARD_COST_KEYS if any(r in row for row in rows)), None)
    if pair is not None:
        panels += [("reward", pair[0]), ("cost", pair[1])]
    limits = sorted(
        {float(v) for v in cost_limits if v is not None}
        | {float(r["cost_limit"]) for r in rows if _is_number(r.get("cost_limit"))}
    )
    return panels, pair, limits


def plot_training_curves(metrics_path: Path, out: Path, title: str, cost_limits: Sequence[float] = ()) -> Path | None:
    """Draw ``out`` (PNG) from ``metrics_path``; None when there is nothing to draw."""
    rows = read_metrics(metrics_path)
    panels, pair, limits = layout(rows, cost_limits)
    if not panels:
        return None
    from corl.eval.plots import _figure

    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = _figure(4.0 * cols, 3.0 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
    for ax, (what, key) in zip(axes, panels):
        xs, ys = _series(rows, key)
        if what == "loss":
            ax.plot(xs, ys, linewidth=1.2)
            if len(ys) and np.all(ys > 0) and ys.max() / max(ys.min(), 1e-12) > 100:
                ax.set_yscale("log")
        else:
            dots = key.startswith("episode_")
            ax.plot(xs, ys, "." if dots else "o-", markersize=3, alpha=0.35 if dots else 1.0, label=pair[2])  # type: ignore[index]
            if dots and len(ys) >= 10:
                ax.plot(xs[9:], _smooth(ys, 10), "-", linewidth=1.4, label="moving average (10)")
            if key.startswith("episode_") and pair is not None and pair[0].startswith("episode_"):
                eval_x, eval_y = _series(rows, "eval_" + key.split("_", 1)[1])
                if len(eval_x):
                    ax.plot(
                        eval_x, eval_y, "o-", color="k", markersize=3, linewidth=0.8, label="deterministic evaluation"
                    )
            if what == "cost":
                for i, limit in enumerate(limits):
                    ax.axhline(
                        limit, color="crimson", linestyle="--", linewidth=1.1, label="cost limit" if i == 0 else None
                    )
            ax.legend(fontsize=7, loc="best")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(out)
    return out


def cost_limits_of(outputs: dict[str, Any], config: dict[str, Any]) -> list[float]:
    """The limits a stage trained under: its outputs' ``cost_limits``/``cost_limit``, else its config's."""
    for source in (outputs, config):
        if source.get("cost_limits"):
            return [float(v) for v in source["cost_limits"]]
        if _is_number(source.get("cost_limit")):
            return [float(source["cost_limit"])]
    return []


def write_for_stage(directory: Path, title: str, outputs: dict[str, Any], config: dict[str, Any]) -> Path | None:
    """The engine's hook after a stage ran: draw its curves when it logged any metrics."""
    from corl.store.artifacts import METRICS

    return plot_training_curves(directory / METRICS, directory / CURVES_FILE, title, cost_limits_of(outputs, config))


__all__ = [
    "CURVES_FILE",
    "layout",
    "plot_training_curves",
    "write_for_stage",
    "read_metrics",
    "loss_keys",
    "cost_limits_of",
]
