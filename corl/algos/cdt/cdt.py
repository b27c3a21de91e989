"""CDT: the constrained decision transformer (Liu et al., ICML 2023), as OSRL's ``cdt.py``.

baselines.md section 5. A causal transformer reads, per timestep, the tokens
``[RTG, CTG, s, a]`` (CTG enters as ``cost_transform_offset - CTG``) and predicts the action
from the state token (a diagonal Gaussian, no tanh) and whether the step costs from the
action token. Training is entropy-regularised maximum likelihood on padded windows::

    L = - ( mean_m log N(a | mu, sigma) + sg(temp) mean_m H ) + w_c mean(m NLL(cost_logits, 1[c > 0]))
    L_temp = temp sg(H - target_entropy)

(log-probability and entropy averaged per action dimension over real steps, ``m`` the
padding mask; the cost term averaged over all positions, padded ones counting zero, as
OSRL's ``train_one_step``; OSRL casts costs with ``long()``, which equals ``1[c > 0]``
for binary costs), AdamW with a
linear warm-up and gradient clipping. At test time the targets ``(R, C)`` are given and
updated by the realised reward and cost after every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class CDTConfig:
    """OSRL's ``CDTTrainConfig`` (CarCircle uses the base config)."""

    steps: int = 100_000
    batch_size: int = 2048
    seq_len: int = 10
    embedding_dim: int = 128
    num_layers: int = 3
    num_heads: int = 8
    attention_dropout: float = 0.1
    residual_dropout: float = 0.1
    embedding_dropout: float = 0.1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: list[float] | None = None  # None = (0.9, 0.999)
    clip_grad: float = 0.25
    warmup_steps: int = 500
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    loss_cost_weight: float = 0.02
    init_temperature: float = 0.1
    cost_transform_offset: float = 50.0  # the model sees 50 - CTG (OSRL cost_transform)
    episode_len: int | None = None  # None = the task's; sizes the timestep embedding
    # data (OSRL SequenceDataset)
    augment: bool = True
    augment_percent: float = 0.2
    augment_deg: int = 4
    max_reward: float = 600.0
    min_reward: float = 1.0
    max_rew_decrease: float = 100.0
    augment_beta: float = 1.0
    cost_sample: bool = True
    cost_sample_max: float = 70.0
    # evaluation targets in raw units (OSRL's first CarCircle pair); evaluate may override them
    target_return: float = 450.0
    target_cost: float = 10.0
    cost_limit: float | None = None  # the limit the run is scored against (None = the task's)

    def __post_init__(self) -> None:
        if self.embedding_dim % self.num_heads:
            raise ValueError("embedding_dim must be a multiple of num_heads")
        if self.steps < 0 or self.batch_size < 1 or self.seq_len < 1:
            raise ValueError("steps >= 0, batch_size >= 1 and seq_len >= 1 expected")


class Block(nn.Module):
    """Pre-LN transformer block: ``x + Drop(MHA(LN x))``, then ``x + MLP(LN x)``."""

    def __init__(self, dim: int, heads: int, attn_drop: float, resid_drop: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attn_drop, batch_first=True)
        self.drop = nn.Dropout(resid_drop)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(resid_drop))

    def forward(self, x: torch.Tensor, causal: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, attn_mask=causal, key_padding_mask=padding, need_weights=False)[0])
        return x + self.mlp(self.norm2(x))


class CDTModel(nn.Module):
    """Tokens ``[RTG, CTG, s, a]`` per step -> (action Normal from s-tokens, cost logits from a-tokens)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        seq_len: int = 10,
        episode_len: int = 1000,
        embedding_dim: int = 128,
        num_layers: int = 3,
        num_heads: int = 8,
        attention_dropout: float = 0.1,
        residual_dropout: float = 0.1,
        embedding_dropout: float = 0.1,
        cost_transform_offset: float = 50.0,
    ) -> None:
        super().__init__()
        d = embedding_dim
        self.obs_dim, self.act_dim, self.seq_len = obs_dim, act_dim, seq_len
        self.cost_transform_offset = cost_transform_offset
        self.timestep_emb = nn.Embedding(episode_len + seq_len, d)
        self.return_emb, self.cost_emb = nn.Linear(1, d), nn.Linear(1, d)
        self.state_emb, self.action_emb = nn.Linear(obs_dim, d), nn.Linear(act_dim, d)
        self.emb_norm, self.emb_drop = nn.LayerNorm(d), nn.Dropout(embedding_dropout)
        self.blocks = nn.ModuleList(Block(d, num_heads, attention_dropout, residual_dropout) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(d)
        self.mu, self.log_std = nn.Linear(d, act_dim), nn.Linear(d, act_dim)
        self.cost_head = nn.Linear(d, 2)
        self.register_buffer(
            "causal", torch.triu(torch.ones(4 * seq_len, 4 * seq_len, dtype=torch.bool), 1), persistent=False
        )
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rtg: torch.Tensor,
        ctg: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.distributions.Normal, torch.Tensor]:
        b, t = obs.shape[:2]
        time = self.timestep_emb(timesteps)
        tokens = torch.stack(
            [
                self.return_emb(rtg.unsqueeze(-1)) + time,
                self.cost_emb((self.cost_transform_offset - ctg).unsqueeze(-1)) + time,
                self.state_emb(obs) + time,
                self.action_emb(act) + time,
            ],
            dim=2,
        )  # (B, T, 4, d)
        x = self.emb_drop(self.emb_norm(tokens.reshape(b, 4 * t, -1)))
        padding = None if mask is None else ~mask.repeat_interleave(4, dim=1)
        causal = self.causal[: 4 * t, : 4 * t]
        for block in self.blocks:
            x = block(x, causal, padding)
        x = self.out_norm(x).reshape(b, t, 4, -1)
        state_tokens, action_tokens = x[:, :, 2], x[:, :, 3]
        dist = torch.distributions.Normal(self.mu(state_tokens), self.log_std(state_tokens).exp())
        return dist, F.log_softmax(self.cost_head(action_tokens), dim=-1)


class CDTLearner:
    """One entropy-regularised maximum-likelihood step per :meth:`update` on a window batch."""

    def __init__(self, cfg: CDTConfig, model: CDTModel, device: torch.device | str = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.model = model.to(self.device)
        betas = tuple(cfg.betas) if cfg.betas else (0.9, 0.999)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=betas
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min((step + 1) / max(cfg.warmup_steps, 1), 1.0)
        )
        self.log_temperature = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.temp_optimizer = torch.optim.Adam([self.log_temperature], lr=cfg.lr)
        self.target_entropy = -float(model.act_dim)
        self.step = 0

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        dist, cost_logp = self.model(
            batch["obs"], batch["act"], batch["rtg"], batch["ctg"], batch["timesteps"], batch["mask"]
        )
        m = batch["mask"]
        # OSRL's reductions: log-probability and entropy averaged per action dimension over real
        # steps; the cost NLL zeroed at padded steps but averaged over every position
        log_prob = dist.log_prob(batch["act"])[m].mean()
        entropy = dist.entropy()[m].mean()
        temp = self.log_temperature.exp().detach()
        act_loss = -(log_prob + temp * entropy)
        cost_nll = F.nll_loss(cost_logp.reshape(-1, 2), (batch["cost"] > 0).long().flatten(), reduction="none")
        cost_nll = (cost_nll * m.flatten()).mean()
        loss = act_loss + cfg.loss_cost_weight * cost_nll
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        temp_loss = self.log_temperature.exp() * (entropy.detach() - self.target_entropy)
        self.temp_optimizer.zero_grad(set_to_none=True)
        temp_loss.backward()
        self.temp_optimizer.step()
        self.step += 1
        return {
            "loss/act": float(act_loss.detach()),
            "loss/cost": float(cost_nll.detach()),
            "entropy": float(entropy.detach()),
            "temperature": float(temp),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "log_temperature": self.log_temperature.detach().clone(),
            "temp_optimizer": self.temp_optimizer.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        with torch.no_grad():
            self.log_temperature.copy_(state["log_temperature"])
        self.temp_optimizer.load_state_dict(state["temp_optimizer"])
        self.step = int(state["step"])


class CDTPolicy(nn.Module):
    """The evaluation policy: a :class:`CDTModel` plus per-env histories and targets.

    The rollout calls :meth:`reset` once, :meth:`act` with each step's observations and
    :meth:`observe` with each step's reward, cost and episode ends; the returned action is the
    Normal's mean clamped to the box (OSRL). Targets are in raw units and scaled inside.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        model: dict,
        target_return: float,
        target_cost: float,
        reward_scale: float = 0.1,
        cost_scale: float = 1.0,
        act_low=None,
        act_high=None,
    ) -> None:
        super().__init__()
        self.model = CDTModel(obs_dim, act_dim, **model)
        self.reward_scale, self.cost_scale = reward_scale, cost_scale
        self.target_return, self.target_cost = float(target_return), float(target_cost)
        low = torch.as_tensor(act_low if act_low is not None else [-1.0] * act_dim, dtype=torch.float32)
        high = torch.as_tensor(act_high if act_high is not None else [1.0] * act_dim, dtype=torch.float32)
        self.register_buffer("act_low", low)
        self.register_buffer("act_high", high)
        self._hist: dict[str, torch.Tensor] | None = None

    def set_targets(self, target_return: float | None = None, target_cost: float | None = None) -> None:
        if target_return is not None:
            self.target_return = float(target_return)
        if target_cost is not None:
            self.target_cost = float(target_cost)

    def reset(self, num_envs: int | None = None) -> None:
        self._hist = None

    def _new_history(self, n: int, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        k, dev = self.model.seq_len, obs.device
        return {
            "obs": torch.zeros(n, k, self.model.obs_dim, device=dev),
            "act": torch.zeros(n, k, self.model.act_dim, device=dev),
            "rtg": torch.zeros(n, k, device=dev),
            "ctg": torch.zeros(n, k, device=dev),
            "t": torch.zeros(n, dtype=torch.long, device=dev),
            "ret": torch.full((n,), self.target_return * self.reward_scale, device=dev),
            "cst": torch.full((n,), self.target_cost * self.cost_scale, device=dev),
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        n = obs.shape[0]
        if self._hist is None or self._hist["obs"].shape[0] != n:
            self._hist = self._new_history(n, obs)
        h = self._hist
        k = self.model.seq_len
        # shift the window left and write the current step into the last slot
        for key in ("obs", "act", "rtg", "ctg"):
            h[key] = torch.roll(h[key], -1, dims=1)
        h["obs"][:, -1], h["act"][:, -1] = obs, 0.0
        h["rtg"][:, -1], h["ctg"][:, -1] = h["ret"], h["cst"]
        steps = h["t"] + 1  # real steps in the window, at most k
        valid = torch.arange(k, device=obs.device)[None, :] >= (k - steps.clamp(max=k))[:, None]
        # real tokens first (OSRL right-pads): roll each row so its valid part starts at 0
        shift = k - steps.clamp(max=k)
        idx = (torch.arange(k, device=obs.device)[None, :] + shift[:, None]) % k
        gather = lambda x: torch.gather(x, 1, idx.view(n, k, *([1] * (x.dim() - 2))).expand_as(x))  # noqa: E731
        window = {key: gather(h[key]) for key in ("obs", "act", "rtg", "ctg")}
        mask = gather(valid)
        first_t = (h["t"] - steps.clamp(max=k) + 1).clamp(min=0)
        timesteps = (first_t[:, None] + torch.arange(k, device=obs.device)[None, :]).clamp(
            max=self.model.timestep_emb.num_embeddings - 1
        )
        self.model.eval()
        dist, _ = self.model(window["obs"], window["act"], window["rtg"], window["ctg"], timesteps, mask)
        last = steps.clamp(max=k) - 1
        action = dist.mean[torch.arange(n), last]
        action = torch.max(torch.min(action, self.act_high), self.act_low)
        h["act"][:, -1] = action
        h["t"] += 1
        return action

    @torch.no_grad()
    def observe(self, reward: torch.Tensor, cost: torch.Tensor, ended: torch.Tensor) -> None:
        """Subtract the realised reward and cost from the targets; start over where an episode ended."""
        h = self._hist
        if h is None:
            return
        h["ret"] = h["ret"] - reward.to(h["ret"]) * self.reward_scale
        h["cst"] = h["cst"] - cost.to(h["cst"]) * self.cost_scale
        if ended.any():
            fresh = self._new_history(len(ended), h["obs"])
            e = ended.to(h["obs"].device)
            for key in h:
                h[key][e] = fresh[key][e]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act(obs)
