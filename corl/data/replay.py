"""A FIFO replay buffer of torch tensors: model rollouts (MICRO) and online off-policy data.

The storage is one preallocated tensor per field on the training device; writes wrap around
(a ring), sampling is uniform **with replacement** over the filled part, indices drawn with
torch (an optional ``generator`` makes it reproducible). ``state_dict()`` carries the filled
rows and the write position, so a resumed run samples exactly what the interrupted one would.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

#: Default fields of a transition buffer: (per-row shape, dtype).
TRANSITION_FIELDS = ("observations", "actions", "rewards", "costs", "next_observations", "terminals")


class TensorReplayBuffer:
    """Ring buffer of ``capacity`` rows; ``fields`` maps a name to ``(row_shape, dtype)``."""

    def __init__(
        self,
        capacity: int,
        fields: Mapping[str, tuple[Sequence[int], torch.dtype]],
        device: torch.device | str = "cpu",
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.fields = {name: (tuple(shape), dtype) for name, (shape, dtype) in fields.items()}
        self.storage = {
            name: torch.zeros((self.capacity, *shape), dtype=dtype, device=self.device)
            for name, (shape, dtype) in self.fields.items()
        }
        self.ptr = 0  # next row to write
        self.size = 0  # filled rows

    @classmethod
    def for_transitions(
        cls, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"
    ) -> "TensorReplayBuffer":
        """A buffer with the fields of :data:`TRANSITION_FIELDS` (terminals as float 0/1)."""
        fields = {
            "observations": ((obs_dim,), torch.float32),
            "actions": ((act_dim,), torch.float32),
            "rewards": ((), torch.float32),
            "costs": ((), torch.float32),
            "next_observations": ((obs_dim,), torch.float32),
            "terminals": ((), torch.float32),
        }
        return cls(capacity, fields, device)

    def __len__(self) -> int:
        return self.size

    def add(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Append ``n`` rows (every field, same leading size); the oldest rows are overwritten."""
        lengths = {int(batch[name].shape[0]) for name in self.fields}
        if len(lengths) != 1:
            raise ValueError(f"fields have different lengths: {lengths}")
        n = lengths.pop()
        if n == 0:
            return
        start = 0
        if n > self.capacity:  # only the newest `capacity` rows can survive
            start, n = n - self.capacity, self.capacity
        idx = (self.ptr + torch.arange(n, device=self.device)) % self.capacity
        for name, (_, dtype) in self.fields.items():
            self.storage[name][idx] = batch[name][start:].to(device=self.device, dtype=dtype)
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A uniform batch drawn with replacement from the filled rows."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return {name: tensor[idx] for name, tensor in self.storage.items()}

    def clear(self) -> None:
        self.ptr = 0
        self.size = 0

    def state_dict(self) -> dict:
        """Filled rows (in storage order), the write position and the size."""
        return {
            "capacity": self.capacity,
            "ptr": self.ptr,
            "size": self.size,
            "storage": {name: t[: self.size].clone() for name, t in self.storage.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"capacity mismatch: saved {state['capacity']}, buffer {self.capacity}")
        self.ptr, self.size = int(state["ptr"]), int(state["size"])
        for name, t in state["storage"].items():
            self.storage[name][: self.size] = t.to(self.device)
