"""DRCORL stage 1: the diffusion behaviour model ``mu(a|s)`` (``algorithms.md`` 1.3).

    L_diff(phi) = E_{(s,a)~D, t~U(1e-3,1), z~N(0,I)} || eps_phi(alpha_t a + sigma_t z, t, s) - z ||^2

VP-SDE with linear beta (0.1 -> 20); AdamW 3e-4; batch 2048; 2M steps. No sampler is needed
by DRCORL (only the noise prediction at noised policy actions); :func:`sample_actions` in
:mod:`corl.nn.diffusion` exists for inspection and other methods.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from corl.algos.drcorl.config import BehaviorConfig
from corl.nn.diffusion import ScoreNet, VPSchedule, denoising_loss, sample_diffusion_time


def build_score_net(obs_dim: int, act_dim: int, cfg: BehaviorConfig) -> ScoreNet:
    return ScoreNet(
        obs_dim,
        act_dim,
        width=cfg.width,
        blocks=cfg.blocks,
        time_dim=cfg.time_dim,
        fourier_features=cfg.fourier_features,
        fourier_scale=cfg.fourier_scale,
        expansion=cfg.expansion,
        dropout=cfg.dropout,
    )


def behavior_step(
    net: ScoreNet,
    optimizer: torch.optim.Optimizer,
    schedule: VPSchedule,
    obs: torch.Tensor,
    actions: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    keep_masks: torch.Tensor | None,
    loss_fn=denoising_loss,
) -> torch.Tensor:
    """One AdamW step on ``L_diff``; all randomness (t, z, dropout) is passed in."""
    loss = loss_fn(net, schedule, obs, actions, t, noise, keep_masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class BehaviorLearner:
    """Fits ``eps_phi``; ``update(batch)`` performs one gradient step on ``L_diff``."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: BehaviorConfig | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        self.config = cfg = config or BehaviorConfig()
        self.device = torch.device(device)
        self.schedule = VPSchedule(cfg.beta0, cfg.beta1)
        self.net = build_score_net(obs_dim, act_dim, cfg).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.step = 0
        self._loss_fn = torch.compile(denoising_loss) if cfg.compile else denoising_loss

    # ------------------------------------------------------------------ update
    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        obs, actions = batch["observations"], batch["actions"]
        b = obs.shape[0]
        t = sample_diffusion_time(b, self.config.t_min, 1.0, self.device, self.generator)
        noise = torch.randn(actions.shape, device=self.device, generator=self.generator)
        masks = self.net.dropout_masks(b, self.generator, self.device)
        loss = behavior_step(self.net, self.optimizer, self.schedule, obs, actions, t, noise, masks, self._loss_fn)
        self.step += 1
        return {"behavior/loss": float(loss)}

    @torch.no_grad()
    def evaluate_loss(self, batch: Mapping[str, torch.Tensor], seed: int = 0) -> float:
        """``L_diff`` in eval mode with fixed noise (a comparable validation number)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        obs, actions = batch["observations"], batch["actions"]
        t = sample_diffusion_time(obs.shape[0], self.config.t_min, 1.0, self.device, g)
        noise = torch.randn(actions.shape, device=self.device, generator=g)
        was = self.net.training
        self.net.eval()
        loss = denoising_loss(self.net, self.schedule, obs, actions, t, noise)
        self.net.train(was)
        return float(loss)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        self.step = int(state["step"])
