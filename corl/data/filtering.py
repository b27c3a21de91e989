"""Episode filters: DSRL's reward/cost density filter, and the safe-episode subset for BC-Safe.

Why a density filter: datasets collected by a Lagrangian learner under a scheduled cost limit
pile up episodes in a few regions of the (cost return, reward return) plane. DSRL evens the
coverage of the cost-reward frontier by laying a grid over that plane, keeping at most
``max_per_bin`` episodes per cell (chosen at random) and discarding sparsely populated cells
(``<= min_per_bin`` episodes), which are mostly outliers. Its ``density`` variants (0.5, 0.75
for Bullet tasks, 0.25, 0.5 for Safety-Gymnasium) are just per-task grid settings, kept in
``dsrl.infos.DENSITY_CFG``; :func:`density_config_for` reads them from the installed dsrl.

Differences from DSRL's implementation (reimplemented from the idea, not its code):

* the random choice uses an explicitly seeded ``numpy.random.Generator`` (DSRL uses Python's
  global ``random.sample``), so the same seed gives the same episodes on every machine;
* the largest return falls into the last bin; DSRL's ``(x - min) // step`` puts the maximum
  into a bin of its own beyond the grid (usually then dropped as sparse);
* a degenerate axis (all episodes with the same return, e.g. cost 0 everywhere) is one bin
  instead of a division by zero;
* rows after the last episode end are an episode here (``TransitionDataset``'s rule); DSRL
  silently ignores them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from corl.data.dataset import TransitionDataset
from corl.errors import ConfigError


@dataclass(frozen=True)
class DensityFilterConfig:
    """Grid settings for :func:`density_filter` (defaults: DSRL's ``pre_process_data``)."""

    cost_bins: int = 10
    reward_bins: int = 50
    max_per_bin: int = 5  # a cell with more episodes keeps a random max_per_bin of them
    min_per_bin: int = 2  # a cell with <= min_per_bin episodes is dropped
    seed: int = 0
    #: Grid extent; None = the data's min/max. Episodes outside it are dropped.
    cost_range: tuple[float, float] | None = None
    reward_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.cost_bins < 1 or self.reward_bins < 1:
            raise ConfigError(
                f"density filter: cost_bins and reward_bins must be >= 1, got {self.cost_bins}, {self.reward_bins}"
            )
        if self.max_per_bin < 1 or self.min_per_bin < 0:
            raise ConfigError(
                f"density filter: max_per_bin must be >= 1 and min_per_bin >= 0, got {self.max_per_bin}, {self.min_per_bin}"
            )


def density_config_for(task: str, density: float = 0.5, seed: int = 0) -> DensityFilterConfig:
    """DSRL's grid settings for ``task`` at ``density`` (from ``dsrl.infos.DENSITY_CFG``).

    Tasks DSRL lists no settings for (D4RL names, online tasks) get DSRL's generic defaults
    (10 cost bins, 50 reward bins, 5 max, 2 min). A density DSRL does not list for a task it
    does list is a :class:`ConfigError` naming the available ones (a typo should not silently
    become the generic grid).
    """
    from corl.compat import import_dsrl
    from corl.tasks import get_task

    import_dsrl()
    from dsrl.infos import DENSITY_CFG

    name = get_task(task).name
    available = sorted(float(k.rsplit("_density", 1)[1]) for k in DENSITY_CFG if k.rsplit("_density", 1)[0] == name)
    if not available:
        return DensityFilterConfig(seed=seed)
    cfg = DENSITY_CFG.get(f"{name}_density{density}")
    if cfg is None:
        raise ConfigError(
            f"density filter: DSRL has no density {density} for {name}; available: {', '.join(map(str, available))}"
        )
    return DensityFilterConfig(
        cost_bins=int(cfg["cbins"]),
        reward_bins=int(cfg["rbins"]),
        max_per_bin=int(cfg["max_npb"]),
        min_per_bin=int(cfg["min_npb"]),
        seed=seed,
    )


def _bin_index(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Equal-width bin of each value in [lo, hi]; the maximum goes into the last bin."""
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.int64)
    step = (hi - lo) / bins
    return np.clip(np.floor((values - lo) / step).astype(np.int64), 0, bins - 1)


def density_filter(
    dataset: TransitionDataset,
    config: DensityFilterConfig | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[TransitionDataset, dict[str, Any]]:
    """Keep an evenly spread subset of episodes over the (cost return, reward return) grid.

    ``rng`` overrides ``config.seed`` (for callers that manage one generator). Returns the
    filtered dataset (episodes in their original order) and a report: counts before/after,
    non-empty/capped/dropped cells, and the config used.
    """
    config = config or DensityFilterConfig()
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    returns = dataset.episode_returns()
    cost, reward = returns["cost"], returns["reward"]
    n_episodes = cost.shape[0]
    report: dict[str, Any] = {
        "episodes_before": n_episodes,
        "transitions_before": len(dataset),
        "config": asdict(config),
    }
    if n_episodes == 0:
        report.update(
            episodes_after=0,
            transitions_after=0,
            cells=0,
            cells_capped=0,
            cells_dropped=0,
            dropped_sparse=0,
            dropped_cap=0,
            dropped_out_of_range=0,
        )
        return dataset, report

    c_lo, c_hi = config.cost_range or (float(cost.min()), float(cost.max()))
    r_lo, r_hi = config.reward_range or (float(reward.min()), float(reward.max()))
    in_range = (cost >= c_lo) & (cost <= c_hi) & (reward >= r_lo) & (reward <= r_hi)
    cell = _bin_index(cost, c_lo, c_hi, config.cost_bins) * config.reward_bins + _bin_index(
        reward, r_lo, r_hi, config.reward_bins
    )
    keep = np.zeros(n_episodes, dtype=bool)
    capped = dropped_cells = dropped_sparse = dropped_cap = 0
    candidates = np.flatnonzero(in_range)
    # Cells in ascending order, members in episode order: the draw depends only on the seed.
    cells, inverse = np.unique(cell[candidates], return_inverse=True)
    for k in range(cells.shape[0]):
        members = candidates[inverse == k]
        if members.shape[0] <= config.min_per_bin:
            dropped_cells += 1
            dropped_sparse += members.shape[0]
            continue
        if members.shape[0] > config.max_per_bin:
            capped += 1
            dropped_cap += members.shape[0] - config.max_per_bin
            members = rng.choice(members, size=config.max_per_bin, replace=False)
        keep[members] = True

    filtered = dataset.select_episodes(keep)
    filtered.metadata["density_filter"] = {
        **asdict(config),
        "episodes_before": n_episodes,
        "episodes_after": int(keep.sum()),
    }
    report.update(
        episodes_after=int(keep.sum()),
        transitions_after=len(filtered),
        cells=int(cells.shape[0]),
        cells_capped=capped,
        cells_dropped=dropped_cells,
        dropped_sparse=dropped_sparse,
        dropped_cap=dropped_cap,
        dropped_out_of_range=int((~in_range).sum()),
    )
    return filtered, report


def safe_episodes(dataset: TransitionDataset, cost_limit: float) -> TransitionDataset:
    """The episodes whose cost return is within ``cost_limit`` (BC-Safe's training set).

    Uses ``cost <= limit``, the same boundary as DSRL's "normalized cost <= 1".
    """
    cost = dataset.episode_returns()["cost"]
    mask = cost <= cost_limit
    out = dataset.select_episodes(mask)
    out.metadata["safe_episodes"] = {
        "cost_limit": float(cost_limit),
        "episodes_before": int(cost.shape[0]),
        "episodes_after": int(mask.sum()),
    }
    return out
