"""MICE's memory-driven intrinsic cost (algorithms.md §4.3).

For a (normalised) observation ``s_t`` with extrinsic cost ``c_t`` in env ``j``:

1. ``e_t = f(s_t)``, ``f`` a frozen random ``Linear(|S|, 8)`` (:class:`RandomProjection`);
2. if ``c_t > 0`` push ``e_t`` into env ``j``'s memory (so an unsafe state is already in memory
   when its own intrinsic cost is computed);
3. if the memory holds more than ``k`` entries: ``δ_(1..k)`` the ``k`` smallest distances
   ``‖e_t − e_m‖₂``; ``δ̃_i = max(δ_(i)/mean(δ_(1..k)) − ξ, 0)``; ``K_i = ε_K/(δ̃_i + ε_K)``;
   ``ĉ_t = sqrt(Σ_i K_i)`` (0 when all ``k`` distances are 0: the 0/0 case); else ``ĉ_t = 0``;
4. ``c^I_t = ρ · γ_c^{epoch} · ĉ_t`` — the decay is tied to the epoch counter (§4.10-2).

:func:`kernel_pseudo_count` is step 3 as a batched pure function (one ``cdist`` for every env,
instead of one distance call per memory entry as released, §4.10-9).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from corl.algos.mice.memory import FlashbulbMemory


class RandomProjection(nn.Module):
    """A frozen ``Linear(obs_dim, emb_dim)`` with PyTorch's default init (never trained)."""

    def __init__(self, obs_dim: int, emb_dim: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(obs_dim, emb_dim)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(obs)


def kernel_pseudo_count(
    emb: torch.Tensor,
    memory: torch.Tensor,
    valid: torch.Tensor,
    k: int = 10,
    xi: float = 0.008,
    eps_kernel: float = 1e-4,
) -> torch.Tensor:
    """``ĉ`` for each env: ``emb`` ``(n, d)``, ``memory`` ``(n, M, d)``, ``valid`` ``(n, M)`` → ``(n,)``.

    Envs whose memory holds ``≤ k`` entries get 0.
    """
    dist = torch.cdist(emb.unsqueeze(1), memory).squeeze(1)  # (n, M)
    dist = dist.masked_fill(~valid, float("inf"))
    enough = valid.sum(1) > k
    if not bool(enough.any()):
        return emb.new_zeros(emb.shape[0])
    kk = min(k, memory.shape[1])
    nearest = torch.topk(dist, kk, dim=1, largest=False).values  # (n, k) ascending
    nearest = torch.where(enough[:, None], nearest, torch.zeros_like(nearest))
    mean = nearest.mean(1, keepdim=True)
    scaled = (nearest / mean).clamp_min(0.0)  # NaN where mean == 0 (all k distances 0)
    scaled = (scaled - xi).clamp_min(0.0)
    c_hat = torch.sqrt((eps_kernel / (scaled + eps_kernel)).sum(1))
    c_hat = torch.nan_to_num(c_hat, nan=0.0)
    return torch.where(enough & (mean.squeeze(1) > 0), c_hat, torch.zeros_like(c_hat))


class IntrinsicCostModule:
    """Projection + per-env memory + kernel + decay: ``step(obs, costs, epoch) -> c^I``."""

    def __init__(
        self,
        obs_dim: int,
        num_envs: int,
        emb_dim: int = 8,
        capacity: int = 100,
        k: int = 10,
        xi: float = 0.008,
        eps_kernel: float = 1e-4,
        intrinsic_factor: float = 5.0,
        decay: float = 0.99,
        device: torch.device | str = "cpu",
    ) -> None:
        self.projection = RandomProjection(obs_dim, emb_dim).to(device)
        self.memory = FlashbulbMemory(num_envs, emb_dim, capacity, device)
        self.k, self.xi, self.eps_kernel = k, xi, eps_kernel
        self.intrinsic_factor, self.decay = intrinsic_factor, decay

    def scale(self, epoch: int) -> float:
        """``ρ γ_c^{epoch}``."""
        return self.intrinsic_factor * self.decay ** int(epoch)

    @torch.no_grad()
    def step(self, obs: torch.Tensor, costs: torch.Tensor, epoch: int) -> torch.Tensor:
        """Insert the unsafe states, then ``c^I = ρ γ_c^{epoch} ĉ`` for every env: ``(n,)``."""
        emb = self.projection(obs.float())
        self.memory.insert(costs > 0, emb)
        if self.intrinsic_factor == 0.0:
            return torch.zeros(obs.shape[0], device=obs.device)
        c_hat = kernel_pseudo_count(emb, self.memory.data, self.memory.valid_mask(), self.k, self.xi, self.eps_kernel)
        return self.scale(epoch) * c_hat

    def state_dict(self) -> dict:
        return {"projection": self.projection.state_dict(), "memory": self.memory.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.projection.load_state_dict(state["projection"])
        self.memory.load_state_dict(state["memory"])
