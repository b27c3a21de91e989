"""The behaviour VAE of BCQ-Lag, BEAR-Lag and CPQ, fitted on its own (one cached stage).

OSRL updates the VAE inside each method's training loop, once per step, with a loss that
involves no critic; corl fits it first (same loss, lr and batch, ``steps`` updates) so the
three methods and every later run share one artifact. The learners can keep training it
jointly (``vae_joint``) for OSRL's exact order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from corl.nn.vae import VAE, vae_loss


@dataclass
class VAEConfig:
    steps: int = 100_000  # OSRL: one VAE update per training step, 100k steps
    batch_size: int = 512
    lr: float = 1e-3
    hidden: list[int] = field(default_factory=lambda: [400, 400])
    latent_dim: int | None = None  # None = 2 |A| (OSRL)
    beta: float = 0.5  # KL weight (OSRL configs; CPQ's class default 1.5 is overridden there)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or self.beta < 0:
            raise ValueError("steps >= 0, batch_size >= 1, lr > 0 and beta >= 0 expected")


def build_vae(obs_dim: int, act_dim: int, hidden: list[int], latent_dim: int | None) -> VAE:
    return VAE(obs_dim, act_dim, hidden, latent_dim)


class VAELearner:
    """One ``MSE + beta KL`` step per :meth:`update` on normalised actions."""

    def __init__(self, cfg: VAEConfig, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.cfg = cfg
        self.vae = build_vae(obs_dim, act_dim, cfg.hidden, cfg.latent_dim).to(device)
        self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=cfg.lr)
        self.step = 0

    def update(self, obs: torch.Tensor, act: torch.Tensor) -> dict[str, float]:
        loss, parts = vae_loss(self.vae, obs, act, self.cfg.beta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"vae/loss": float(loss.detach()), "vae/recon": float(parts["recon"]), "vae/kl": float(parts["kl"])}

    def state_dict(self) -> dict[str, Any]:
        return {"vae": self.vae.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vae.load_state_dict(state["vae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
