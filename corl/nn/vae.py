"""Conditional VAE over actions: the behaviour model of BCQ, BEAR and CPQ (OSRL ``net.VAE``).

Encoder ``[s, a] -> h -> h -> (mu, log sigma)`` (ReLU, ``log sigma`` clamped to [-4, 15]);
decoder ``[s, z] -> h -> h -> |A|`` (ReLU) with ``tanh`` so decoded actions lie in the
normalised box ``[-1, 1]^|A|``. The latent has ``2 |A|`` dimensions by default. A decode
without ``z`` draws ``z ~ N(0, I)`` clamped to ``[-latent_clip, latent_clip]`` (0.5 in BCQ:
it keeps samples in the high-density part of the latent, i.e. likely actions).

Loss (OSRL's form; the KL is averaged over batch *and* latent dims, not summed)::

    L = mean (dec(s, z) - a)^2 + beta * KL,   KL = -1/2 mean(1 + log sigma^2 - mu^2 - sigma^2)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from corl.nn.mlp import MLP


class VAE(nn.Module):
    """``encode(s, a) -> (mu, std)``, ``decode(s, z=None) -> a in [-1, 1]``."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (400, 400),
        latent_dim: int | None = None,
        latent_clip: float = 0.5,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.latent_dim = int(latent_dim) if latent_dim else 2 * act_dim
        self.latent_clip = latent_clip
        self.encoder = MLP(obs_dim + act_dim, 2 * self.latent_dim, hidden, "relu")
        self.decoder = MLP(obs_dim + self.latent_dim, act_dim, hidden, "relu")

    def encode(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.encoder(torch.cat([obs, act], -1)).chunk(2, -1)
        return mu, log_std.clamp(-4.0, 15.0).exp()

    def decode_raw(
        self, obs: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The decoder's pre-``tanh`` output (BEAR matches supports in this space)."""
        if z is None:
            z = torch.randn(*obs.shape[:-1], self.latent_dim, device=obs.device, generator=generator)
            z = z.clamp(-self.latent_clip, self.latent_clip)
        return self.decoder(torch.cat([obs, z], -1))

    def decode(
        self, obs: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.tanh(self.decode_raw(obs, z, generator))

    def forward(
        self, obs: torch.Tensor, act: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mu, std) with ``z = mu + std * noise`` (reparameterised)."""
        mu, std = self.encode(obs, act)
        return self.decode(obs, mu + std * noise), mu, std

    def kl_per_sample(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``-1/2 mean_dims(1 + log sigma^2 - mu^2 - sigma^2)`` per row: CPQ's OOD score."""
        mu, std = self.encode(obs, act)
        return gaussian_kl(mu, std).mean(-1)


def gaussian_kl(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise ``KL(N(mu, std^2) || N(0, 1))``."""
    return -0.5 * (1 + 2 * std.log() - mu.pow(2) - std.pow(2))


def vae_loss(
    vae: VAE, obs: torch.Tensor, act: torch.Tensor, beta: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """OSRL's VAE loss ``MSE(recon, a) + beta * mean KL`` and its two parts (for logging)."""
    noise = torch.randn(*obs.shape[:-1], vae.latent_dim, device=obs.device, generator=generator)
    recon, mu, std = vae(obs, act, noise)
    rec = (recon - act).pow(2).mean()
    kl = gaussian_kl(mu, std).mean()
    return rec + beta * kl, {"recon": rec.detach(), "kl": kl.detach()}
