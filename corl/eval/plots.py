"""PNG figures: robustness curves against a perturbation axis, 2-D heatmaps, and online
learning curves.

Why matplotlib's object API (``Figure`` + ``FigureCanvasAgg``) rather than ``pyplot``: it
never selects or switches a global backend and keeps no global figure registry, so plotting
works headless, inside a test, a worker process or a thread, without ``MPLBACKEND`` and
without leaking figures. Inputs are plain numbers (what ``eval`` writes to its JSON), so the
plots can be re-drawn from a saved result without re-running anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

#: Normalized cost at which an episode stops being safe (DSRL: normalized cost <= 1).
COST_LIMIT = 1.0


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_robustness(
    x: Sequence[float],
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    xlabel: str,
    path: str | Path,
    title: str | None = None,
    cost_limit: float | None = COST_LIMIT,
) -> Path:
    """Normalized reward (left) and normalized cost (right) against ``x``, one line per policy.

    ``curves`` maps a policy label to ``{"reward": [...], "cost": [...]}`` (one value per
    ``x``), optionally with ``"reward_std"`` / ``"cost_std"`` drawn as shaded bands. The cost
    panel has a dashed line at normalized cost 1, the limit above which a policy is unsafe;
    pass ``cost_limit=None`` for unconstrained tasks (D4RL). Returns the PNG path.
    """
    xs = np.asarray(x, dtype=float)
    fig = _figure(11.0, 4.2)
    ax_r, ax_c = fig.subplots(1, 2)
    for label, curve in curves.items():
        for ax, key in ((ax_r, "reward"), (ax_c, "cost")):
            if key not in curve:
                continue
            ys = np.asarray(curve[key], dtype=float)
            if ys.shape != xs.shape:
                raise ValueError(f"curve {label!r} {key} has {ys.size} values for {xs.size} x values")
            (line,) = ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.6, label=label)
            std = curve.get(f"{key}_std")
            if std is not None:
                s = np.asarray(std, dtype=float)
                ax.fill_between(xs, ys - s, ys + s, color=line.get_color(), alpha=0.18, linewidth=0)
    if cost_limit is not None:
        ax_c.axhline(cost_limit, color="crimson", linestyle="--", linewidth=1.3, label="cost limit")
        ax_c.axhspan(cost_limit, max(ax_c.get_ylim()[1], cost_limit * 1.05), color="crimson", alpha=0.06)
    ax_r.set_ylabel("normalized reward")
    ax_c.set_ylabel("normalized cost")
    for ax in (ax_r, ax_c):
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    ax_r.legend(fontsize=8, loc="best")
    ax_c.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _heatmap(
    fig,
    ax,
    values: np.ndarray,
    x_values: Sequence[float],
    y_values: Sequence[float],
    xlabel: str,
    ylabel: str,
    name: str,
    cmap: str,
    norm=None,
) -> None:
    im = ax.imshow(values, origin="lower", aspect="auto", cmap=cmap, norm=norm)
    ax.set_xticks(range(len(x_values)), [f"{v:.3g}" for v in x_values], rotation=45, fontsize=7)
    ax.set_yticks(range(len(y_values)), [f"{v:.3g}" for v in y_values], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(name)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if values.size <= 144:  # annotate cells when they are big enough to read
        lo, hi = np.nanmin(values), np.nanmax(values)
        mid = (lo + hi) / 2
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                if np.isfinite(v):
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if (norm is None and v < mid) else "black",
                    )


def plot_grid(
    x_name: str,
    x_values: Sequence[float],
    y_name: str,
    y_values: Sequence[float],
    reward: Sequence[Sequence[float]] | np.ndarray,
    cost: Sequence[Sequence[float]] | np.ndarray | None,
    path: str | Path,
    title: str | None = None,
    cost_limit: float | None = COST_LIMIT,
) -> Path:
    """Heatmaps of a 2-D sim2real grid (e.g. friction x gravity) for one policy.

    ``reward``/``cost`` have shape ``(len(y_values), len(x_values))``: row ``i`` is
    ``y_values[i]``. The cost map is centred on the cost limit with a diverging colormap, so
    unsafe cells (normalized cost > 1) read red and safe ones blue at a glance. Returns the
    PNG path. Draw one figure per policy: several policies do not fit one heatmap.
    """
    from matplotlib.colors import TwoSlopeNorm

    r = np.asarray(reward, dtype=float)
    shape = (len(y_values), len(x_values))
    if r.shape != shape:
        raise ValueError(f"reward grid has shape {r.shape}, expected {shape} (len({y_name}), len({x_name}))")
    panels = 1 if cost is None else 2
    fig = _figure(5.6 * panels, 4.6)
    axes = np.atleast_1d(fig.subplots(1, panels))
    xlabel, ylabel = f"{x_name} scale", f"{y_name} scale"
    _heatmap(fig, axes[0], r, x_values, y_values, xlabel, ylabel, "normalized reward", "viridis")
    if cost is not None:
        c = np.asarray(cost, dtype=float)
        if c.shape != shape:
            raise ValueError(f"cost grid has shape {c.shape}, expected {shape}")
        norm = None
        if cost_limit is not None and np.isfinite(c).any():
            lo, hi = float(np.nanmin(c)), float(np.nanmax(c))
            lo = min(lo, cost_limit - 1e-6)
            hi = max(hi, cost_limit + 1e-6)
            norm = TwoSlopeNorm(vcenter=cost_limit, vmin=lo, vmax=hi)
        name = "normalized cost" + (f" (limit {cost_limit:g})" if cost_limit is not None else "")
        _heatmap(fig, axes[1], c, x_values, y_values, xlabel, ylabel, name, "coolwarm", norm)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curve(
    rows: Sequence[Mapping[str, float]],
    path: str | Path,
    title: str,
    limits: Sequence[float],
    show_violations: bool,
) -> Path:
    """An online learner's training: episode reward and cost against env steps.

    ``rows`` are the train stage's ``metrics.jsonl`` lines: those with ``episode_reward`` are
    training episodes (dots, and a moving average of 10), those with ``eval_reward`` periodic
    evaluations of the deterministic policy (black line). The cost panel has a dashed line at
    each cost limit; ``show_violations`` adds MICE's cumulative violations. Returns the PNG path.
    """
    episodes = [r for r in rows if "episode_reward" in r]
    evals = [r for r in rows if "eval_reward" in r]
    steps = np.array([r["step"] for r in episodes], dtype=float)
    panels = [("episode_reward", "episode reward"), ("episode_cost", "episode cost")]
    if show_violations:
        panels.append(("cum_violations", "cumulative violations"))
    fig = _figure(4.2 * len(panels), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (key, label) in zip(axes, panels):
        values = np.array([r[key] for r in episodes], dtype=float)
        ax.plot(steps, values, ".", alpha=0.3, markersize=3)
        if len(values) and key != "cum_violations":
            k = min(10, len(values))
            ax.plot(steps[k - 1 :], np.convolve(values, np.ones(k) / k, mode="valid"), "-")
        else:
            ax.plot(steps, values, "-")
        eval_key = {"episode_reward": "eval_reward", "episode_cost": "eval_cost"}.get(key)
        if evals and eval_key:
            ax.plot(
                [r["step"] for r in evals],
                [r[eval_key] for r in evals],
                "o-",
                color="k",
                markersize=3,
                linewidth=0.8,
                label="deterministic evaluation",
            )
            ax.legend(fontsize=7)
        if key == "episode_cost":
            for limit in sorted(set(limits)):
                ax.axhline(limit, color="r", linestyle="--", linewidth=0.8)
        ax.set_xlabel("env steps")
        ax.set_title(label)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=80, metadata={"Software": None})
    return out


__all__ = ["COST_LIMIT", "plot_robustness", "plot_grid", "plot_learning_curve"]
