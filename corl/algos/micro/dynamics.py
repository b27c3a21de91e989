"""MICRO's dynamics model (algorithms.md §2.2-2.3): a probabilistic ensemble of E Gaussians.

Reads in the paper's order:

1. :class:`StandardScaler` — mean/std of the train split (std < 1e-12 → 1), torch only.
2. :class:`GaussianEnsembleDynamics` — E members as ONE :class:`~corl.nn.mlp.EnsembleMLP`
   (weights ``(E, in, out)``, trunc-normal init std ``1/(2√in)``, zero bias, Swish), output
   ``(μ, logvar)`` of ``y = (Δs, r[, c])``, log-variance soft-clamped between the learnable
   ``min_logvar``/``max_logvar``. :meth:`~GaussianEnsembleDynamics.step` samples one random
   elite per row and runs each elite only on its own rows.
3. :class:`DynamicsLearner` — ``update(batch)`` is one Adam step on the loss of
   :class:`~corl.algos.micro.config.DynamicsConfig` (``_gaussian_nll_loss`` +
   ``_weight_decay_loss`` + ``_logvar_bound_loss``); ``end_epoch(holdout)`` does the
   per-member snapshot / early-stopping bookkeeping; ``finish()`` restores the snapshots and
   picks the elites (lowest hold-out MSE); ``fit(dataset)`` is the training loop (hold-out
   split, per-member bootstrap, epochs).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from corl.algos.micro.config import DynamicsConfig
from corl.data.dataset import TransitionDataset
from corl.nn.mlp import EnsembleLinear, EnsembleMLP


# ------------------------------------------------------------------------------ 1. scaler
class StandardScaler(nn.Module):
    """``(x − mean) / std`` with statistics fitted once (buffers, so they are saved)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        std = x.std(0, unbiased=False)
        self.std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


# ------------------------------------------------------------------------------ 2. ensemble
def dynamics_targets(batch: Mapping[str, torch.Tensor], predict_cost: bool) -> torch.Tensor:
    """``y = (s' − s, r[, c])`` for a batch of shape ``(..., ·)``."""
    parts = [batch["next_observations"] - batch["observations"], batch["rewards"].unsqueeze(-1)]
    if predict_cost:
        parts.append(batch["costs"].unsqueeze(-1))
    return torch.cat(parts, dim=-1)


class GaussianEnsembleDynamics(nn.Module):
    """``E`` Gaussian members ``(s, a) -> N(μ_e, exp(logvar_e))`` over ``(Δs, r[, c])``."""

    def __init__(self, obs_dim: int, act_dim: int, config: DynamicsConfig) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        self.ensemble_size = config.ensemble_size
        self.target_dim = obs_dim + 1 + int(config.predict_cost)
        if len(config.weight_decays) != len(config.hidden) + 1:
            raise ValueError(
                f"need {len(config.hidden) + 1} weight decays (hidden layers + output), got {len(config.weight_decays)}"
            )
        self.net = EnsembleMLP(
            obs_dim + act_dim, 2 * self.target_dim, config.ensemble_size, config.hidden, config.activation
        )
        self.layers = [m for m in self.net.modules() if isinstance(m, EnsembleLinear)]
        for layer in self.layers:  # trunc-normal std 1/(2√in), zero bias (§2.2)
            nn.init.trunc_normal_(layer.weight, std=1.0 / (2.0 * math.sqrt(layer.in_dim)))
            nn.init.zeros_(layer.bias)
        self.max_logvar = nn.Parameter(torch.full((self.target_dim,), config.init_max_logvar))
        self.min_logvar = nn.Parameter(torch.full((self.target_dim,), config.init_min_logvar))
        self.input_scaler = StandardScaler(obs_dim + act_dim)
        self.target_scaler = StandardScaler(self.target_dim)  # identity unless normalize_targets
        self.register_buffer("elites", torch.arange(config.num_elites))

    # -- forward in the training space (standardised inputs; targets standardised iff configured)
    def _member_forward(self, x: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        """``x (E', B, in)`` through the members listed (all when None): one bmm per layer."""
        if members is None:
            return self.net(x)
        for module in self.net.net:
            if isinstance(module, EnsembleLinear):
                x = torch.baddbmm(module.bias[members], x, module.weight[members])
            else:
                x = module(x)
        return x

    def forward_normalized(
        self, x: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised inputs ``(E'|-, B, in)`` -> ``(μ, logvar)`` each ``(E', B, target_dim)``."""
        if x.dim() == 2:
            n = self.ensemble_size if members is None else len(members)
            x = x.unsqueeze(0).expand(n, -1, -1)
        mean, raw_logvar = self._member_forward(x, members).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def normalize_inputs(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.input_scaler.transform(torch.cat([obs, act], dim=-1))

    def predict(
        self, obs: torch.Tensor, act: torch.Tensor, members: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, logvar)`` of ``(Δs, r[, c])`` in raw units, ``(E', B, target_dim)``."""
        return self._to_raw(*self.forward_normalized(self.normalize_inputs(obs, act), members))

    def _to_raw(self, mean: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.normalize_targets:
            mean = self.target_scaler.inverse(mean)
            logvar = logvar + 2.0 * torch.log(self.target_scaler.std)
        return mean, logvar

    def split(self, sample: torch.Tensor, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """A ``(B, target_dim)`` sample of ``y`` as ``next_observations``, ``rewards``, ``costs``."""
        cost = sample[:, self.obs_dim + 1] if self.config.predict_cost else torch.zeros_like(sample[:, 0])
        return {"next_observations": obs + sample[:, : self.obs_dim], "rewards": sample[:, self.obs_dim], "costs": cost}

    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor, member_rows: bool = True) -> dict[str, torch.Tensor]:
        """One model step: a random elite per row, ``y ~ N(μ, σ²)`` on every output (§2.4).

        ``member_rows=True`` runs each elite only on the rows it was picked for (rows grouped
        per member and padded to the largest group); False runs every member on every row and
        keeps one per row, as the released code does. Both draw from the same distribution.
        """
        n = obs.shape[0]
        elites = self.elites
        choice = torch.randint(0, len(elites), (n,), device=obs.device)
        if member_rows:
            x = self.normalize_inputs(obs, act)
            order = torch.argsort(choice, stable=True)
            counts = torch.bincount(choice, minlength=len(elites))
            starts = torch.cumsum(counts, 0) - counts
            chosen = choice[order]
            pos = torch.arange(n, device=obs.device) - starts[chosen]
            padded = x.new_zeros(len(elites), int(counts.max()), x.shape[-1])
            padded[chosen, pos] = x[order]
            mean, logvar = self._to_raw(*self.forward_normalized(padded, elites))
            mu = torch.empty(n, self.target_dim, device=obs.device)
            lv = torch.empty_like(mu)
            mu[order], lv[order] = mean[chosen, pos], logvar[chosen, pos]
        else:
            mean, logvar = self.predict(obs, act)
            rows = torch.arange(n, device=obs.device)
            mu, lv = mean[elites[choice], rows], logvar[elites[choice], rows]
        sample = mu + torch.randn_like(mu) * torch.exp(0.5 * lv)
        return self.split(sample, obs)


# ------------------------------------------------------------------------------ 3. learner
class DynamicsLearner:
    """Trains a :class:`GaussianEnsembleDynamics`: one public ``update(batch)`` per Adam step."""

    def __init__(
        self, obs_dim: int, act_dim: int, config: DynamicsConfig | None = None, device: torch.device | str = "cpu"
    ) -> None:
        self.config = config or DynamicsConfig()
        self.device = torch.device(device)
        self.model = GaussianEnsembleDynamics(obs_dim, act_dim, self.config).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.total_steps = 0
        self.epoch = 0
        self.epochs_since_update = 0
        self.best_holdout = torch.full((self.config.ensemble_size,), 1e10)  # as released: first epoch always improves
        self.snapshot = [layer_params.detach().clone() for layer_params in self._member_params()]
        self.holdout_rows: torch.Tensor | None = None

    def _member_params(self) -> list[torch.Tensor]:
        """Per-member parameters (leading dim E): the snapshots cover these, not the log-var bounds."""
        return [p for layer in self.model.layers for p in (layer.weight, layer.bias)]

    def fit_scalers(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Fit the input (and, if configured, target) scaler on the train split."""
        self.model.input_scaler.fit(torch.cat([batch["observations"], batch["actions"]], -1))
        if self.config.normalize_targets:
            self.model.target_scaler.fit(dynamics_targets(batch, self.config.predict_cost))

    def _normalized(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.model.normalize_inputs(batch["observations"], batch["actions"])
        y = dynamics_targets(batch, self.config.predict_cost)
        if self.config.normalize_targets:
            y = self.model.target_scaler.transform(y)
        return x, y

    # -- the loss terms of DynamicsConfig, each named after its term
    @staticmethod
    def _gaussian_nll_loss(
        mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Σ_e mean[(μ_e − y)² exp(−logvar_e)] + Σ_e mean[logvar_e]``; also the per-member MSE."""
        sq = (mean - target).pow(2)
        nll = (sq * torch.exp(-logvar)).mean(dim=(1, 2)) + logvar.mean(dim=(1, 2))
        return nll.sum(), sq.detach().mean(dim=(1, 2))

    def _weight_decay_loss(self) -> torch.Tensor:
        """``Σ_l wd_l · ½‖W_l‖²`` over the hidden and output layers (all members)."""
        return sum(
            wd * 0.5 * layer.weight.pow(2).sum() for wd, layer in zip(self.config.weight_decays, self.model.layers)
        )

    def _logvar_bound_loss(self) -> torch.Tensor:
        """``coef · (Σ max_logvar − Σ min_logvar)``: keeps the learnable bounds tight."""
        return self.config.logvar_loss_coef * (self.model.max_logvar.sum() - self.model.min_logvar.sum())

    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """One Adam step. Fields are ``(E, B, ·)`` (a bootstrap batch per member) or ``(B, ·)``."""
        x, y = self._normalized(batch)
        if y.dim() == 2:
            y = y.unsqueeze(0).expand(self.config.ensemble_size, -1, -1)
        mean, logvar = self.model.forward_normalized(x)
        nll, mse = self._gaussian_nll_loss(mean, logvar, y)
        loss = nll + self._weight_decay_loss() + self._logvar_bound_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.total_steps += 1
        return {
            "dynamics/loss": loss.item(),
            "dynamics/nll": nll.item() / self.config.ensemble_size,
            "dynamics/train_mse": float(mse.mean()),
            "dynamics/max_logvar": self.model.max_logvar.mean().item(),
            "dynamics/min_logvar": self.model.min_logvar.mean().item(),
        }

    @torch.no_grad()
    def evaluate(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-member ``mse`` (of the means) and ``nll`` (the loss's data term) on ``batch``."""
        x, y = self._normalized(batch)
        mean, logvar = self.model.forward_normalized(x)
        sq = (mean - y).pow(2)
        return {
            "mse": sq.mean(dim=(1, 2)).cpu(),
            "nll": ((sq * torch.exp(-logvar)).mean(dim=(1, 2)) + logvar.mean(dim=(1, 2))).cpu(),
        }

    @torch.no_grad()
    def end_epoch(self, holdout: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Hold-out MSE per member; snapshot members improved by > threshold; count stale epochs."""
        self.epoch += 1
        losses = self.evaluate(holdout)["mse"]
        improvement = (self.best_holdout - losses) / self.best_holdout
        improved = torch.nonzero(improvement > self.config.improvement_threshold).flatten()
        if len(improved) > 0:
            self.best_holdout[improved] = losses[improved]
            for saved, live in zip(self.snapshot, self._member_params()):
                saved[improved.to(saved.device)] = live.detach()[improved.to(live.device)]
            self.epochs_since_update = 0
        else:
            self.epochs_since_update += 1
        k = self.config.num_elites
        return {
            "dynamics/holdout_mse": float(losses.sort().values[:k].mean()),
            "dynamics/members_improved": float(len(improved)),
            "dynamics/epochs_since_update": float(self.epochs_since_update),
        }

    def should_stop(self) -> bool:
        cap = self.config.max_epochs
        return self.epochs_since_update >= self.config.max_epochs_since_update or (
            cap is not None and self.epoch >= cap
        )

    @torch.no_grad()
    def finish(self) -> torch.Tensor:
        """Restore the snapshots; elites = the ``num_elites`` members with the lowest hold-out MSE."""
        for saved, live in zip(self.snapshot, self._member_params()):
            live.copy_(saved)
        elites = torch.argsort(self.best_holdout)[: self.config.num_elites].sort().values
        self.model.elites.copy_(elites.to(self.model.elites.device))
        return elites

    # -- the training loop
    def fit(
        self,
        dataset: TransitionDataset,
        generator: torch.Generator | None = None,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        """Hold-out split, scalers, per-member bootstrap, epochs until early stop; then elites.

        Resumable at epoch granularity: a learner restored from a ``state_dict`` taken in
        ``on_epoch_end`` and given a generator in the same initial state redraws the same split
        and bootstrap, skips the finished epochs and continues exactly. Each epoch re-permutes
        every member's bootstrap array with its own generator seeded from the run's base seed.
        """
        cfg = self.config
        data = {
            k: getattr(dataset, k).to(self.device)
            for k in ("observations", "actions", "rewards", "costs", "next_observations")
        }
        n = len(dataset)
        perm = torch.randperm(n, generator=generator).to(self.device)
        n_holdout = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
        if (
            self.epoch > 0
            and self.holdout_rows is not None
            and not torch.equal(self.holdout_rows.cpu(), perm[:n_holdout].cpu())
        ):
            raise ValueError(
                "resumed dynamics fit got a different hold-out split: pass a generator "
                "in the state the interrupted fit started from"
            )
        self.holdout_rows = perm[:n_holdout]  # dataset rows held out (for reports and checks)
        holdout = {k: v[perm[:n_holdout]] for k, v in data.items()}
        train = {k: v[perm[n_holdout:]] for k, v in data.items()}
        n_train = n - n_holdout
        self.fit_scalers(train)
        boot = torch.randint(0, n_train, (cfg.ensemble_size, n_train), generator=generator)
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        metrics: dict[str, float] = {}
        while not self.should_stop():
            epoch_gen = torch.Generator().manual_seed(base_seed + self.epoch)
            order = boot.gather(1, torch.argsort(torch.rand(cfg.ensemble_size, n_train, generator=epoch_gen), dim=1))
            for start in range(0, n_train, cfg.batch_size):
                rows = order[:, start : start + cfg.batch_size].to(self.device)
                metrics = self.update({k: v[rows] for k, v in train.items()})
            metrics.update(self.end_epoch(holdout))
            if on_epoch_end is not None:
                on_epoch_end(self.epoch, metrics)
        elites = self.finish()
        final = self.evaluate(holdout)["mse"]
        metrics["dynamics/holdout_mse"] = float(final[elites.cpu()].mean())
        metrics["dynamics/epochs"] = float(self.epoch)
        return metrics

    # -- exact resume
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "epochs_since_update": self.epochs_since_update,
            "best_holdout": self.best_holdout.clone(),
            "snapshot": [t.clone() for t in self.snapshot],
            "holdout_rows": self.holdout_rows,
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.total_steps = int(state["total_steps"])
        self.epoch = int(state["epoch"])
        self.epochs_since_update = int(state["epochs_since_update"])
        self.best_holdout = state["best_holdout"].clone()
        self.snapshot = [t.clone().to(self.device) for t in state["snapshot"]]
        self.holdout_rows = state.get("holdout_rows")
