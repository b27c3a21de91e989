"""Conditional diffusion over actions: VP schedule, score (noise) network, loss and sampler.

Method-agnostic: DRCORL trains a behaviour model with it and queries its noise prediction at
noised policy actions (SRPO-style score regularisation); other methods may sample from it.

Continuous-time VP-SDE with a linear ``beta`` schedule (``beta0 = 0.1``, ``beta1 = 20``)::

    log alpha_t = -1/4 t^2 (beta1 - beta0) - 1/2 t beta0,   sigma_t = sqrt(1 - alpha_t^2)
    a_t = alpha_t a + sigma_t z,   z ~ N(0, I)
    L(phi) = E_{(s, a), t ~ U(t_min, 1), z} || eps_phi(a_t, t, s) - z ||^2

The score of the noised behaviour density is ``grad log mu_t(a_t | s) = -eps_phi / sigma_t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class VPSchedule:
    """Linear-beta VP-SDE: ``alpha_t^2 + sigma_t^2 = 1``, ``alpha_1 = exp(-(b1 + b0) / 4)``."""

    beta0: float = 0.1
    beta1: float = 20.0

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return -0.25 * t**2 * (self.beta1 - self.beta0) - 0.5 * t * self.beta0

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` with the shape of ``t``."""
        log_alpha = self.log_alpha(t)
        alpha = torch.exp(log_alpha)
        # sqrt(1 - alpha^2) = sqrt(-expm1(2 log alpha)): exact near t = 0
        sigma = torch.sqrt(-torch.expm1(2.0 * log_alpha))
        return alpha, sigma

    def perturb(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising ``alpha_t x + sigma_t z``; ``t`` is ``(B,)`` or ``(B, 1)``."""
        alpha, sigma = self.alpha_sigma(t.reshape(-1, 1))
        return alpha * x + sigma * noise


# --------------------------------------------------------------------------- network
class GaussianFourierTime(nn.Module):
    """``t -> [sin(2 pi t W), cos(2 pi t W)]`` with fixed ``W ~ N(0, scale^2)`` (a buffer)."""

    def __init__(self, num_frequencies: int = 32, scale: float = 30.0, learnable: bool = False) -> None:
        super().__init__()
        freqs = torch.randn(num_frequencies) * scale
        if learnable:  # FISOR/IDQL learn W (same state_dict key)
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        proj = t.reshape(-1, 1) * self.freqs * (2.0 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class ResidualBlock(nn.Module):
    """``x + W2 mish(W1 LayerNorm(dropout(x))))`` with ``W1: d -> expansion d``."""

    def __init__(self, width: int, expansion: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, expansion * width)
        self.fc2 = nn.Linear(expansion * width, width)
        self.act = nn.Mish()

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        if keep_mask is not None:  # explicit (generator-drawn, pre-scaled) dropout mask
            h = h * keep_mask
        elif self.training and self.dropout > 0:
            h = nn.functional.dropout(h, self.dropout, training=True)
        return x + self.fc2(self.act(self.fc1(self.norm(h))))


class ScoreNet(nn.Module):
    """Noise predictor ``eps_phi(a_t, t, s)`` (IDQL-style residual MLP).

    time: Fourier features (2 x ``fourier_features``) -> Linear -> Mish -> Linear (``time_dim``);
    trunk: Linear(|A| + |S| + time_dim -> width) -> ``blocks`` x :class:`ResidualBlock`
    -> Mish -> Linear(width -> |A|).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        width: int = 256,
        blocks: int = 3,
        time_dim: int = 128,
        fourier_features: int = 32,
        fourier_scale: float = 30.0,
        expansion: int = 4,
        dropout: float = 0.1,
        fourier_learnable: bool = False,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.width, self.num_blocks = obs_dim, act_dim, width, blocks
        self.dropout = dropout
        self.time_embed = nn.Sequential(
            GaussianFourierTime(fourier_features, fourier_scale, fourier_learnable),
            nn.Linear(2 * fourier_features, time_dim),
            nn.Mish(),
            nn.Linear(time_dim, time_dim),
        )
        self.inp = nn.Linear(act_dim + obs_dim + time_dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, expansion, dropout) for _ in range(blocks))
        self.out = nn.Sequential(nn.Mish(), nn.Linear(width, act_dim))

    def forward(
        self, noisy_action: torch.Tensor, t: torch.Tensor, obs: torch.Tensor, keep_masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``keep_masks``: ``(blocks, B, width)`` from :meth:`dropout_masks` (else module mode)."""
        x = self.inp(torch.cat([noisy_action, obs, self.time_embed(t)], dim=-1))
        for i, block in enumerate(self.blocks):
            x = block(x, None if keep_masks is None else keep_masks[i])
        return self.out(x)

    def dropout_masks(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor | None:
        """Inverted-dropout keep masks drawn from ``generator`` (so training is reproducible)."""
        if self.dropout <= 0:
            return None
        device = device if device is not None else self.inp.weight.device
        u = torch.rand(self.num_blocks, batch_size, self.width, device=device, generator=generator)
        return (u >= self.dropout).to(u.dtype) / (1.0 - self.dropout)


# --------------------------------------------------------------------------- loss and sampling
def sample_diffusion_time(
    batch_size: int, t_min: float, t_max: float, device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``t ~ U(t_min, t_max)``, shape ``(B,)``."""
    u = torch.rand(batch_size, device=device, generator=generator)
    return t_min + (t_max - t_min) * u


def denoising_loss(
    net: ScoreNet,
    schedule: VPSchedule,
    obs: torch.Tensor,
    actions: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    keep_masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """``E || eps_phi(alpha_t a + sigma_t z, t, s) - z ||^2``: sum over action dims, batch mean."""
    noisy = schedule.perturb(actions, t, noise)
    pred = net(noisy, t, obs, keep_masks)
    return ((pred - noise) ** 2).sum(-1).mean()


@torch.no_grad()
def sample_actions(
    net: ScoreNet,
    schedule: VPSchedule,
    obs: torch.Tensor,
    steps: int = 50,
    t_end: float = 1e-3,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = (-1.0, 1.0),
) -> torch.Tensor:
    """Draw ``a ~ mu(.|s)`` with the first-order probability-flow solver (DDIM / DPM-Solver-1).

    From ``a_1 ~ N(0, I)``: ``a0_hat = (a_t - sigma_t eps) / alpha_t`` (clipped to ``clip``),
    ``a_s = alpha_s a0_hat + sigma_s eps`` on a uniform time grid ``1 -> t_end``.
    """
    was_training = net.training
    net.eval()
    b = obs.shape[0]
    x = torch.randn(b, net.act_dim, device=obs.device, generator=generator)
    grid = torch.linspace(1.0, t_end, steps + 1, device=obs.device)
    for i in range(steps):
        t = grid[i].expand(b)
        alpha_t, sigma_t = schedule.alpha_sigma(grid[i])
        alpha_s, sigma_s = schedule.alpha_sigma(grid[i + 1])
        eps = net(x, t, obs)
        x0 = (x - sigma_t * eps) / alpha_t
        if clip is not None:
            x0 = x0.clamp(*clip)
            eps = (x - alpha_t * x0) / sigma_t
        x = alpha_s * x0 + sigma_s * eps
    alpha, sigma = schedule.alpha_sigma(grid[-1])
    x = (x - sigma * net(x, grid[-1].expand(b), obs)) / alpha
    if clip is not None:
        x = x.clamp(*clip)
    net.train(was_training)
    return x


# --------------------------------------------------------------------------- discrete DDPM
class DDPMSchedule:
    """Discrete VP schedule of ``T`` steps (IDQL / FISOR)::

        beta_t = 1 - exp(-b_min / T - (b_max - b_min) (2 t - 1) / (2 T^2)),  t = 1..T

    with ``alpha_t = 1 - beta_t`` and ``alpha_bar_t = prod_{i <= t} alpha_i`` (index 0 = t = 1).
    """

    def __init__(
        self, steps: int = 5, beta_min: float = 0.1, beta_max: float = 10.0, device: torch.device | str = "cpu"
    ) -> None:
        t = torch.arange(1, steps + 1, dtype=torch.float64)
        betas = 1 - torch.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps**2)
        self.steps = steps
        self.betas = betas.float().to(device)
        self.alphas = (1 - betas).float().to(device)
        self.alpha_bars = torch.cumprod(1 - betas, 0).float().to(device)

    def perturb(self, x: torch.Tensor, index: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(alpha_bar) x + sqrt(1 - alpha_bar) eps`` at integer steps ``index`` (B,)."""
        ab = self.alpha_bars[index].unsqueeze(-1)
        return ab.sqrt() * x + (1 - ab).sqrt() * noise


@torch.no_grad()
def ddpm_sample(
    net: ScoreNet,
    schedule: DDPMSchedule,
    obs: torch.Tensor,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = (-1.0, 1.0),
    temperature: float = 1.0,
) -> torch.Tensor:
    """Ancestral DDPM sampling: ``x <- (x - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)``,
    plus ``sqrt(beta_t) temperature z`` for ``t > 0``, clipped to ``clip`` after every step
    (FISOR's ``ddpm_sampler`` with ``clip_sampler``). ``net`` receives the raw integer step."""
    was_training = net.training
    net.eval()
    b = obs.shape[0]
    x = torch.randn(b, net.act_dim, device=obs.device, generator=generator)
    for i in reversed(range(schedule.steps)):
        t = torch.full((b,), float(i), device=obs.device)
        eps = net(x, t, obs)
        x = (x - schedule.betas[i] / (1 - schedule.alpha_bars[i]).sqrt() * eps) / schedule.alphas[i].sqrt()
        if i > 0:
            x = x + schedule.betas[i].sqrt() * temperature * torch.randn(x.shape, device=x.device, generator=generator)
        if clip is not None:
            x = x.clamp(*clip)
    net.train(was_training)
    return x
