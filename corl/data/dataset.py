"""The in-memory dataset every learner trains on: one set of torch tensors plus metadata.

Episode semantics are explicit (the field's most common source of silent bugs):

* ``terminals[i]`` is a true termination (the agent fell, the episode cannot continue). It is
  the only flag that stops bootstrapping: ``not_done = 1 - terminals``.
* ``timeouts[i]`` is a truncation by the episode step limit. It ends the episode (for episode
  returns, filters and sequence models) but the transition still bootstraps from
  ``next_observations[i]``, which DSRL files store explicitly. OSRL treats a timeout as a
  terminal; corl does not unless a learner asks for ``done_on_timeout=True``.
* A row with both flags set is a termination.
* A final row with neither flag is the end of a cut-off episode: it counts as an episode end
  for returns, and bootstraps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

TRANSITION_KEYS: tuple[str, ...] = (
    "observations",
    "actions",
    "rewards",
    "costs",
    "next_observations",
    "terminals",
    "timeouts",
)
FLOAT_KEYS = ("observations", "actions", "rewards", "costs", "next_observations")
FLAG_KEYS = ("terminals", "timeouts")


@dataclass
class TransitionDataset:
    """Transitions as tensors on one device, plus metadata (task, source, sha256, ...)."""

    observations: torch.Tensor  # (N, obs_dim) float32
    actions: torch.Tensor  # (N, act_dim) float32
    rewards: torch.Tensor  # (N,) float32
    costs: torch.Tensor  # (N,) float32
    next_observations: torch.Tensor  # (N, obs_dim) float32
    terminals: torch.Tensor  # (N,) bool
    timeouts: torch.Tensor  # (N,) bool
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_numpy(
        cls, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None
    ) -> "TransitionDataset":
        """Build from numpy arrays (float keys cast to float32, flags to bool)."""
        tensors: dict[str, torch.Tensor] = {}
        for key in FLOAT_KEYS:
            tensors[key] = torch.from_numpy(np.ascontiguousarray(arrays[key], dtype=np.float32))
        for key in FLAG_KEYS:
            tensors[key] = torch.from_numpy(np.ascontiguousarray(arrays[key]).astype(bool))
        return cls(**tensors, metadata=dict(metadata or {}))

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key).detach().cpu().numpy() for key in TRANSITION_KEYS}

    def to(self, device: torch.device | str) -> "TransitionDataset":
        """A copy with every tensor on ``device`` (done once, before training)."""
        moved = {key: getattr(self, key).to(device) for key in TRANSITION_KEYS}
        return TransitionDataset(**moved, metadata=dict(self.metadata))

    # ---------------------------------------------------------------- shape facts
    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def device(self) -> torch.device:
        return self.observations.device

    # ---------------------------------------------------------------- episodes
    @property
    def episode_ends(self) -> torch.Tensor:
        """Bool (N,): the last row of each episode (terminal, timeout, or the final row)."""
        ends = self.terminals | self.timeouts
        if len(self) > 0:
            ends = ends.clone()
            ends[-1] = True
        return ends

    def episode_ids(self) -> torch.Tensor:
        """Long (N,): the episode index of every row."""
        ends = self.episode_ends.long()
        starts = torch.zeros_like(ends)
        starts[1:] = ends[:-1]
        return torch.cumsum(starts, 0)

    def episode_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, stops) row indices of each episode, stop exclusive."""
        ends = np.flatnonzero(self.episode_ends.cpu().numpy())
        stops = ends + 1
        starts = np.concatenate([[0], stops[:-1]]).astype(np.int64)
        return starts, stops

    def episode_returns(self) -> dict[str, np.ndarray]:
        """Undiscounted per-episode reward and cost returns and lengths."""
        ids = self.episode_ids().cpu()
        n = int(ids[-1].item()) + 1 if len(self) else 0
        rew = torch.zeros(n, dtype=torch.float64).index_add_(0, ids, self.rewards.cpu().double())
        cost = torch.zeros(n, dtype=torch.float64).index_add_(0, ids, self.costs.cpu().double())
        length = torch.bincount(ids, minlength=n)
        return {"reward": rew.numpy(), "cost": cost.numpy(), "length": length.numpy()}

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum().item())

    def select_episodes(self, episode_mask: np.ndarray | torch.Tensor) -> "TransitionDataset":
        """Keep the episodes whose entry in ``episode_mask`` (one bool per episode) is True."""
        mask = torch.as_tensor(np.asarray(episode_mask, dtype=bool))
        rows = mask[self.episode_ids().cpu()].to(self.device)
        kept = {key: getattr(self, key)[rows] for key in TRANSITION_KEYS}
        meta = dict(self.metadata)
        meta["selected_episodes"] = int(mask.sum())
        return TransitionDataset(**kept, metadata=meta)

    # ---------------------------------------------------------------- sampling
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A uniform batch, indices drawn with torch on the dataset's device."""
        idx = torch.randint(0, len(self), (batch_size,), device=self.device, generator=generator)
        return {key: getattr(self, key)[idx] for key in TRANSITION_KEYS}

    def observation_stats(self, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std of observations (std floored at ``eps``)."""
        mean = self.observations.mean(0)
        std = self.observations.std(0).clamp_min(eps)
        return mean, std
