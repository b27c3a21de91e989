"""COptiDICE (Lee et al., ICLR 2022), as OSRL's ``coptidice.py`` (baselines.md section 4).

Optimises the ratio ``w(s, a) = d^pi(s, a) / d^D(s, a)`` of stationary distributions with the
OptiDICE dual, under a cost constraint whose multiplier ``lambda`` is tuned against an upper
bound of the policy's cost, then extracts the policy by ``w``-weighted behaviour cloning.
Per batch ``(s, a, r, c, s', d, is_init)``, in this order:

1. ``e = r - sg(lambda) c + gamma (1 - d) nu(s') - nu(s)``, ``w = relu((f')^-1(e / alpha))``.
2. Initial states by importance weighting: ``nu_init = nu(s) is_init / p_init``.
3. Cost upper bound (``cost_ub_epsilon > 0``)::

       l      = (1 - gamma) chi(s) is_init / p_init + sg(w) (c + gamma (1 - d) chi(s') - chi(s))
       p      = B softmax(l / sg(tau))
       c_ub   = mean(p sg(w) c),   D_KL = mean(p log p - p + 1)
       L_chi  = mean(p l),         L_tau = tau (eps - sg(D_KL))

   (``cost_ub_epsilon = 0``: ``c_ub = mean(sg(w) c)``, no chi and no tau.)
4. ``L_nu = (1 - gamma) mean(nu_init) + mean(w e - alpha f(w))``.
5. ``L_lambda = lambda (qc_thres - sg(c_ub))``: lambda grows while the bound exceeds the threshold.
6. Policy: ``w`` recomputed with the new ``nu``; noisy inputs ``s + 0.1 std(s) N``,
   ``a + 0.1 std(a) N``; ``L_pi = - mean(w log N(a~; mu(s~), sigma(s~)))`` (the pre-tanh Normal
   scored at dataset actions, as OSRL; the deterministic action is ``tanh(mu)``).

``nu`` and ``chi`` are each the min of 2 state networks (one :class:`~corl.nn.EnsembleMLP`);
``lambda = softplus(lambda_raw)`` and ``tau = softplus(tau_raw)``, both raw values start at 1.

``threshold_mode = "osrl"`` compares ``c_ub`` (a per-step, normalised stationary expectation)
with OSRL's undiscounted-scale ``qc_thres`` (3.17 for CarCircle); ``"normalized"`` uses
``(1 - gamma) qc_thres``, the paper-consistent per-step threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from corl.algos.baselines.common import BatchPrep, OfflineSafeConfig, bounds_kwargs
from corl.nn import EnsembleMLP, TanhGaussianPolicy


@dataclass
class COptiDICEConfig(OfflineSafeConfig):
    """OSRL's ``COptiDICETrainConfig`` (CarCircle uses the base config)."""

    actor_lr: float = 1e-4
    critic_lr: float = 1e-4  # nu and chi
    scalar_lr: float = 1e-4  # lambda and tau
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    alpha: float = 0.5  # f-divergence weight
    f_type: str = "softchi"  # "chi2", "softchi" or "kl"
    cost_ub_epsilon: float = 0.01
    num_nu: int = 2
    num_chi: int = 2
    init_lambda_raw: float = 1.0
    init_tau_raw: float = 1.0
    noise_scale: float = 0.1  # policy-extraction input noise, in dataset stds
    threshold_mode: str = "osrl"  # "osrl" or "normalized" ((1 - gamma) qc_thres)
    log_std_min: float = -20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.f_type not in ("chi2", "softchi", "kl"):
            raise ValueError(f"f_type must be 'chi2', 'softchi' or 'kl', got {self.f_type!r}")
        if self.threshold_mode not in ("osrl", "normalized"):
            raise ValueError(f"threshold_mode must be 'osrl' or 'normalized', got {self.threshold_mode!r}")
        if self.alpha <= 0 or self.cost_ub_epsilon < 0:
            raise ValueError("alpha must be > 0 and cost_ub_epsilon >= 0")


# ----------------------------------------------------------------------------- f-divergences
def f_divergence(x: torch.Tensor, f_type: str) -> torch.Tensor:
    if f_type == "chi2":
        return 0.5 * (x - 1) ** 2
    if f_type == "softchi":
        return torch.where(x < 1, x * torch.log(x + 1e-10) - x + 1, 0.5 * (x - 1) ** 2)
    return x * torch.log(x + 1e-10)


def f_prime_inverse(y: torch.Tensor, f_type: str) -> torch.Tensor:
    if f_type == "chi2":
        return y + 1
    if f_type == "softchi":
        return torch.where(y < 0, torch.exp(y.clamp(max=0.0)), y + 1)
    return torch.exp(y - 1)


def initial_flags(episode_ends: torch.Tensor) -> torch.Tensor:
    """``is_init``: row 0 and every row that follows an episode end (OSRL's ``state_init``)."""
    flags = torch.zeros_like(episode_ends, dtype=torch.float32)
    flags[0] = 1.0
    flags[1:] = episode_ends[:-1].float()
    return flags


class COptiDICELearner:
    """One COptiDICE step per :meth:`update` (batches carry ``is_init``)."""

    def __init__(
        self,
        cfg: COptiDICEConfig,
        obs_dim: int,
        act_dim: int,
        qc_thres: float,
        p_init: float,
        obs_std: torch.Tensor,
        act_std: torch.Tensor,
        act_low=None,
        act_high=None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.qc_thres = float(qc_thres) * ((1 - cfg.gamma) if cfg.threshold_mode == "normalized" else 1.0)
        self.p_init = float(p_init)
        self.prep = BatchPrep(cfg, act_low, act_high, act_dim, self.device)
        self.obs_std, self.act_std = obs_std.to(self.device), (act_std / self.prep.scale.cpu()).to(self.device)
        self.policy_kwargs = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "hidden": list(cfg.hidden),
            "log_std_min": cfg.log_std_min,
            **bounds_kwargs(act_low, act_high),
        }
        self.actor = TanhGaussianPolicy(**self.policy_kwargs).to(self.device)
        self.nu = EnsembleMLP(obs_dim, 1, cfg.num_nu, cfg.hidden).to(self.device)
        self.chi = EnsembleMLP(obs_dim, 1, cfg.num_chi, cfg.hidden).to(self.device)
        self.lambda_raw = torch.nn.Parameter(torch.tensor(cfg.init_lambda_raw, device=self.device))
        self.tau_raw = torch.nn.Parameter(torch.tensor(cfg.init_tau_raw, device=self.device))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.nu_opt = torch.optim.Adam(self.nu.parameters(), lr=cfg.critic_lr)
        self.chi_opt = torch.optim.Adam(self.chi.parameters(), lr=cfg.critic_lr)
        self.lambda_opt = torch.optim.Adam([self.lambda_raw], lr=cfg.scalar_lr)
        self.tau_opt = torch.optim.Adam([self.tau_raw], lr=cfg.scalar_lr)
        self.step = 0

    @staticmethod
    def _state_value(net: EnsembleMLP, obs: torch.Tensor) -> torch.Tensor:
        return net(obs).squeeze(-1).min(0).values

    def _advantage(self, b: dict[str, torch.Tensor], lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(e, nu(s))`` with ``e = r - lambda c + gamma (1 - d) nu(s') - nu(s)``; nu(s), nu(s') in one pass."""
        both = self._state_value(self.nu, torch.cat([b["obs"], b["next_obs"]]))
        nu_s, nu_next = both.chunk(2)
        e = b["reward"] - lam * b["cost"] + self.cfg.gamma * b["not_done"] * nu_next - nu_s
        return e, nu_s

    def _weights(self, e: torch.Tensor) -> torch.Tensor:
        return F.relu(f_prime_inverse(e / self.cfg.alpha, self.cfg.f_type))

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg, b = self.cfg, self.prep(batch)
        is_init = batch["is_init"].float()
        lam = F.softplus(self.lambda_raw)
        e, nu_s = self._advantage(b, lam.detach())
        w = self._weights(e)
        w_sg = w.detach()
        nu_init = nu_s * is_init / self.p_init
        logs: dict[str, float] = {}

        if cfg.cost_ub_epsilon > 0:
            tau = F.softplus(self.tau_raw)
            chi_both = self._state_value(self.chi, torch.cat([b["obs"], b["next_obs"]]))
            chi_s, chi_next = chi_both.chunk(2)
            ell = (1 - cfg.gamma) * chi_s * is_init / self.p_init + w_sg * (
                b["cost"] + cfg.gamma * b["not_done"] * chi_next - chi_s
            )
            p = torch.softmax(ell / tau.detach(), 0) * ell.shape[0]
            kl = (p * torch.log(p + 1e-10) - p + 1).mean()
            cost_ub = (p * w_sg * b["cost"]).mean()
            chi_loss = (p * ell).mean()
            self.chi_opt.zero_grad(set_to_none=True)
            chi_loss.backward()
            self.chi_opt.step()
            tau_loss = tau * (cfg.cost_ub_epsilon - kl.detach())
            self.tau_opt.zero_grad(set_to_none=True)
            tau_loss.backward()
            self.tau_opt.step()
            logs.update({"chi/loss": float(chi_loss.detach()), "tau": float(tau.detach()), "kl": float(kl.detach())})
        else:
            cost_ub = (w_sg * b["cost"]).mean()

        nu_loss = (1 - cfg.gamma) * nu_init.mean() + (w * e - cfg.alpha * f_divergence(w, cfg.f_type)).mean()
        self.nu_opt.zero_grad(set_to_none=True)
        nu_loss.backward()
        self.nu_opt.step()

        lambda_loss = lam * (self.qc_thres - cost_ub.detach())
        self.lambda_opt.zero_grad(set_to_none=True)
        lambda_loss.backward()
        self.lambda_opt.step()

        actor_loss, _ = self._actor_loss(b, lam.detach())
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.step += 1
        logs.update(
            {
                "nu/loss": float(nu_loss.detach()),
                "lambda": float(lam.detach()),
                "cost_ub": float(cost_ub.detach()),
                "w/mean": float(w_sg.mean()),
                "w/max": float(w_sg.max()),
                "actor/loss": float(actor_loss.detach()),
            }
        )
        return logs

    def _actor_loss(self, b: dict[str, torch.Tensor], lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``- mean(w log N(a~; mu(s~), sigma(s~)))`` with ``w`` from the updated ``nu`` and the
        step's ``lambda`` (the value before its own update, as OSRL)."""
        with torch.no_grad():
            e, _ = self._advantage(b, lam)
            w = self._weights(e)
            obs = b["obs"] + self.cfg.noise_scale * self.obs_std * torch.randn_like(b["obs"])
            act = b["act"] + self.cfg.noise_scale * self.act_std * torch.randn_like(b["act"])
        log_prob = self.actor.distribution(obs).log_prob(act).sum(-1)
        return -(w * log_prob).mean(), w

    @torch.no_grad()
    def weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The current ``w(s, a)`` of a raw batch (diagnostics and tests)."""
        b = self.prep(batch)
        return self._weights(self._advantage(b, F.softplus(self.lambda_raw))[0])

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.act(obs, deterministic=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "nu": self.nu.state_dict(),
            "chi": self.chi.state_dict(),
            "lambda_raw": self.lambda_raw.detach().clone(),
            "tau_raw": self.tau_raw.detach().clone(),
            **{
                name: getattr(self, name).state_dict()
                for name in ("actor_opt", "nu_opt", "chi_opt", "lambda_opt", "tau_opt")
            },
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.nu.load_state_dict(state["nu"])
        self.chi.load_state_dict(state["chi"])
        with torch.no_grad():
            self.lambda_raw.copy_(state["lambda_raw"])
            self.tau_raw.copy_(state["tau_raw"])
        for name in ("actor_opt", "nu_opt", "chi_opt", "lambda_opt", "tau_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.step = int(state["step"])
