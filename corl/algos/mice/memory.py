"""MICE's flashbulb memory of high-risk states (algorithms.md §4.2-4.3, step 2).

One FIFO memory per parallel env copy (no sharing, §4.10-7), each holding at most
``capacity`` (100) embeddings ``e = f(s)`` of states where an extrinsic cost was incurred.
Stored as one ``(num_envs, capacity, emb_dim)`` ring tensor so the intrinsic cost of all envs
is one batched distance computation:

* ``insert(mask, emb)`` writes ``emb[j]`` into env ``j``'s ring for every ``j`` with
  ``mask[j]``; when the ring is full the **oldest** entry is overwritten (evicted).
* ``entries(j)`` returns env ``j``'s embeddings oldest → newest (for inspection and tests).
"""

from __future__ import annotations

from typing import Mapping

import torch


class FlashbulbMemory:
    """Per-env FIFO rings of state embeddings (``capacity`` each)."""

    def __init__(
        self, num_envs: int, emb_dim: int = 8, capacity: int = 100, device: torch.device | str = "cpu"
    ) -> None:
        self.num_envs, self.emb_dim, self.capacity = int(num_envs), int(emb_dim), int(capacity)
        self.device = torch.device(device)
        self.data = torch.zeros(self.num_envs, self.capacity, self.emb_dim, device=self.device)
        self.ptr = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)  # next slot
        self.count = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)  # filled slots

    def insert(self, mask: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Push ``embeddings[j]`` into env ``j``'s memory where ``mask[j]`` (oldest evicted when full)."""
        rows = torch.nonzero(torch.as_tensor(mask, device=self.device).bool(), as_tuple=False).flatten()
        if rows.numel() == 0:
            return
        slots = self.ptr[rows]
        self.data[rows, slots] = embeddings[rows].to(self.data)
        self.ptr[rows] = (slots + 1) % self.capacity
        self.count[rows] = torch.clamp(self.count[rows] + 1, max=self.capacity)

    def valid_mask(self) -> torch.Tensor:
        """``(num_envs, capacity)`` True where a slot holds an entry."""
        return torch.arange(self.capacity, device=self.device)[None, :] < self.count[:, None]

    def entries(self, env: int) -> torch.Tensor:
        """Env ``env``'s embeddings, oldest first: ``(count, emb_dim)``."""
        n = int(self.count[env])
        if n < self.capacity:
            return self.data[env, :n].clone()
        order = (torch.arange(self.capacity, device=self.device) + self.ptr[env]) % self.capacity
        return self.data[env, order].clone()

    def __len__(self) -> int:
        return int(self.count.sum())

    def state_dict(self) -> dict:
        return {"data": self.data.clone(), "ptr": self.ptr.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: Mapping) -> None:
        self.data.copy_(state["data"])
        self.ptr.copy_(state["ptr"])
        self.count.copy_(state["count"])
