"""CDT's trajectory data (OSRL ``SequenceDataset``): return/cost-to-go, Pareto relabelling,
cost-weighted trajectory sampling and padded windows (baselines.md section 5, data pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from corl.data.dataset import TransitionDataset


@dataclass
class Trajectories:
    """Per-trajectory arrays (numpy) with undiscounted reward/cost-to-go (raw units)."""

    obs: list[np.ndarray]
    act: list[np.ndarray]
    cost: list[np.ndarray]
    rtg: list[np.ndarray]
    ctg: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.obs)

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(C_i, R_i): each trajectory's first-step cost-to-go and return-to-go."""
        return np.array([c[0] for c in self.ctg]), np.array([r[0] for r in self.rtg])


def split_trajectories(data: TransitionDataset) -> Trajectories:
    """Split at ``terminals OR timeouts`` (OSRL) and compute the suffix sums (gamma = 1)."""
    arrays = data.to_numpy()
    starts, stops = data.episode_bounds()
    out = Trajectories([], [], [], [], [])
    for a, b in zip(starts, stops):
        rew, cost = arrays["rewards"][a:b].astype(np.float64), arrays["costs"][a:b].astype(np.float64)
        out.obs.append(arrays["observations"][a:b])
        out.act.append(arrays["actions"][a:b])
        out.cost.append(arrays["costs"][a:b])
        out.rtg.append(np.cumsum(rew[::-1])[::-1].copy())
        out.ctg.append(np.cumsum(cost[::-1])[::-1].copy())
    return out


def pareto_front(costs: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (low cost, high reward), by a sweep over cost."""
    order = np.lexsort((-rewards, costs))
    front, best = [], -np.inf
    for i in order:
        if rewards[i] > best:
            front.append(i)
            best = rewards[i]
    return np.array(front, dtype=np.int64)


def grid_filter(
    costs: np.ndarray,
    rewards: np.ndarray,
    rng: np.random.Generator,
    cost_bins: int = 10,
    reward_bins: int = 50,
    max_per_bin: int = 10,
    min_per_bin: int = 3,
) -> np.ndarray:
    """Keep at most ``max_per_bin`` random trajectories per (cost, reward) cell; drop sparse cells."""

    def bin_of(x: np.ndarray, n: int) -> np.ndarray:
        lo, hi = x.min(), x.max()
        return np.minimum(((x - lo) / max(hi - lo, 1e-12) * n).astype(int), n - 1)

    cells = bin_of(costs, cost_bins) * reward_bins + bin_of(rewards, reward_bins)
    kept = []
    for cell in np.unique(cells):
        members = np.flatnonzero(cells == cell)
        if len(members) < min_per_bin:
            continue
        kept.extend(rng.choice(members, size=min(max_per_bin, len(members)), replace=False).tolist())
    return np.sort(np.array(kept, dtype=np.int64))


def augment(
    trajs: Trajectories,
    rng: np.random.Generator,
    percent: float = 0.2,
    deg: int = 4,
    max_reward: float = 600.0,
    min_reward: float = 1.0,
    max_rew_decrease: float = 100.0,
    beta: float = 1.0,
) -> tuple[Trajectories, int]:
    """OSRL's Pareto relabelling: imitate the best trajectory whose cost fits a target above the frontier.

    Targets ``(C_k, R_k)`` with ``C_k`` evenly spaced over the filtered costs and ``R_k`` drawn
    above the degree-``deg`` polynomial frontier; each picks its nearest filtered trajectory
    among those with ``C_i <= C_k`` (repeats are re-drawn near it with weights ``1/(d + 1)^beta``),
    whose RTG/CTG sequences are shifted to start at the target. Returns the full set plus the
    relabelled copies, and the number of copies.
    """
    costs, rewards = trajs.points()
    keep = grid_filter(costs, rewards, rng)
    if len(keep) < 2:
        return trajs, 0
    fc, fr = costs[keep], rewards[keep]
    front = pareto_front(fc, fr)
    poly = np.poly1d(np.polyfit(fc[front], fr[front], deg=min(deg, max(len(front) - 1, 0))))
    n = int(percent * len(keep))
    if n == 0:
        return trajs, 0
    targets_c = np.linspace(fc.min(), fc.max(), n)
    low = np.clip(poly(targets_c) + min_reward, None, max_reward)
    targets_r = rng.uniform(low, max_reward)
    used: set[int] = set()
    out = Trajectories(list(trajs.obs), list(trajs.act), list(trajs.cost), list(trajs.rtg), list(trajs.ctg))
    for ck, rk in zip(targets_c, targets_r):
        ok = np.flatnonzero(fc <= ck + 1e-9)
        dist = np.hypot(fc[ok] - ck, fr[ok] - rk)
        pick = ok[np.argmin(dist)]
        if pick in used:  # spread repeats over similar trajectories (cost <= C_i, reward >= R_i - 100)
            near = np.flatnonzero((fc <= fc[pick]) & (fr >= fr[pick] - max_rew_decrease))
            d = np.hypot(fc[near] - ck, fr[near] - rk)
            prob = 1.0 / (d + 1.0) ** beta
            pick = near[rng.choice(len(near), p=prob / prob.sum())]
        used.add(int(pick))
        src = int(keep[pick])
        out.obs.append(trajs.obs[src])
        out.act.append(trajs.act[src])
        out.cost.append(trajs.cost[src])
        out.rtg.append(trajs.rtg[src] + (rk - trajs.rtg[src][0]))
        out.ctg.append(trajs.ctg[src] + (ck - trajs.ctg[src][0]))
    return out, n


class WindowSampler:
    """Padded windows of ``seq_len`` steps, trajectories drawn with ``P ∝ max(0, C_max - C_traj)``."""

    def __init__(
        self,
        trajs: Trajectories,
        seq_len: int,
        reward_scale: float,
        cost_scale: float,
        cost_sample: bool = True,
        cost_sample_max: float = 70.0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.seq_len, self.device = seq_len, torch.device(device)
        lengths = np.array([len(o) for o in trajs.obs])
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.lengths = lengths
        cat = lambda xs: torch.as_tensor(np.concatenate(xs), dtype=torch.float32)  # noqa: E731
        # one zero row appended: padded positions read it
        pad = lambda t: torch.cat([t, torch.zeros(1, *t.shape[1:])]).to(self.device)  # noqa: E731
        self.obs, self.act = pad(cat(trajs.obs)), pad(cat(trajs.act))
        self.cost = pad(cat(trajs.cost))
        self.rtg, self.ctg = pad(cat(trajs.rtg) * reward_scale), pad(cat(trajs.ctg) * cost_scale)
        self.pad_index = len(self.obs) - 1
        first_ctg = np.array([c[0] for c in trajs.ctg])
        weights = np.maximum(0.0, cost_sample_max - first_ctg) if cost_sample else np.ones(len(trajs))
        if weights.sum() <= 0:
            weights = np.ones(len(trajs))
        self.prob = torch.as_tensor(weights / weights.sum(), dtype=torch.float32)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        traj = torch.multinomial(self.prob, batch_size, replacement=True, generator=generator).numpy()
        lengths = self.lengths[traj]
        start = (torch.rand(batch_size, generator=generator).numpy() * lengths).astype(np.int64)
        steps = np.arange(self.seq_len)
        pos = start[:, None] + steps[None, :]
        mask = pos < lengths[:, None]
        index = np.where(mask, self.offsets[traj][:, None] + pos, self.pad_index)
        idx = torch.as_tensor(index, device=self.device)
        return {
            "obs": self.obs[idx],
            "act": self.act[idx],
            "rtg": self.rtg[idx],
            "ctg": self.ctg[idx],
            "cost": self.cost[idx],
            "timesteps": torch.as_tensor(pos, device=self.device),
            "mask": torch.as_tensor(mask, device=self.device),
        }
