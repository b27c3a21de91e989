"""Observation attacks: what the policy sees is perturbed, the simulator state is not.

Every attack perturbs a batch of observations ``obs (B, obs_dim)`` inside the L-inf box
``|delta_i| <= eps * obs_std_i``, with ``obs_std`` the per-dimension standard deviation of
the dataset's observations (MICRO's budget: relative to the data's spread, so one ``eps``
means the same thing on every dimension and task). Attacks plug into
``rollout(..., obs_transform=attack)``.

* ``random``: ``delta`` uniform in the box, fresh every step.
* ``action_diff``: MICRO's zero-order search. Draw ``candidates`` uniform deltas and keep the
  one that changes the policy's action the most. For a Gaussian policy (anything with
  ``.distribution(obs)``, e.g. :class:`~corl.nn.policies.TanhGaussianPolicy`) the change is
  the symmetric KL ``KL(p||q) + KL(q||p)`` between the *pre-tanh* Normals at the clean and
  the attacked observation, summed over action dims (as MICRO); other distributions (CVPO's
  full-covariance Gaussian) use torch's registered KL. For a deterministic policy
  there is no distribution, so the change is the squared L2 distance between the actions.
* ``min_Q``: MICRO's zero-order search for the delta minimising
  ``min_i Q_i(s_clean, mu(s_clean + delta))``: the critic judges, at the true state, the
  action the policy takes at the perturbed one. ``delta = 0`` is always a candidate (so the
  attack never does better than no attack, and ``eps = 0`` reproduces clean play exactly).
* ``steps=K > 0`` (not in MICRO): after the search, ``K`` projected sign-gradient steps
  (FGSM/PGD style) of size ``2.5 * radius / K`` on the same objective, starting from the
  search's best delta (or a uniform one when ``candidates=0``: the KL objective has zero
  gradient at ``delta = 0``). The best iterate per row is kept, so the gradient variant is
  never weaker than the search it starts from on the same draw.

Determinism: all randomness comes from one ``torch.Generator`` (a fresh one seeded with 0
when none is given), so the same generator state and observations give the same output.
Outputs are clamped into ``[obs - radius, obs + radius]``, so they are inside the box even
after floating-point rounding.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from corl.errors import CorlError, did_you_mean

ATTACKS: tuple[str, ...] = ("random", "action_diff", "min_Q")

_ALIASES = {"random": "random", "action_diff": "action_diff", "min_q": "min_Q"}

Policy = Callable[[Tensor], Tensor] | nn.Module


def _canonical(name: str) -> str:
    key = name.strip().replace("-", "_").lower()
    if key not in _ALIASES:
        raise CorlError(f"unknown attack {name!r}{did_you_mean(name, ATTACKS)}; choose one of {', '.join(ATTACKS)}")
    return _ALIASES[key]


def _is_gaussian(policy: Policy) -> bool:
    return callable(getattr(policy, "distribution", None))


def _mean_action(policy: Policy, obs: Tensor) -> Tensor:
    """The deterministic (mean) action, differentiable: ``policy(obs)`` for corl's policies."""
    return policy(obs)


def _symmetric_kl(mu_p: Tensor, std_p: Tensor, mu_q: Tensor, std_q: Tensor) -> Tensor:
    """``KL(p||q) + KL(q||p)`` of diagonal Normals, summed over the last dim (closed form:
    the log-variance terms cancel)."""
    var_p, var_q = std_p.pow(2), std_q.pow(2)
    diff2 = (mu_p - mu_q).pow(2)
    kl = (var_p + diff2) / (2 * var_q) + (var_q + diff2) / (2 * var_p) - 1.0
    return kl.sum(-1)


def _diag_normal(dist: torch.distributions.Distribution) -> tuple[Tensor, Tensor] | None:
    """``(mean, std)`` of a diagonal Normal (``Normal`` or ``Independent(Normal)``), else None."""
    base = dist.base_dist if isinstance(dist, torch.distributions.Independent) else dist
    if isinstance(base, torch.distributions.Normal):
        return base.loc, base.scale
    return None


def _q_value(critic: nn.Module | Callable, obs: Tensor, act: Tensor) -> Tensor:
    """``min`` over an ensemble critic's members (MICRO's ``min_i Q_i``), shape ``(B,)``."""
    reduced = getattr(critic, "reduced", None)
    if callable(reduced):
        return reduced(obs, act, "min")
    q = critic(obs, act)
    if q.dim() == 2 and q.shape[-1] == 1:
        q = q.squeeze(-1)
    if q.dim() == 2:  # (num_q, B)
        q = q.min(0).values
    return q


class ObservationAttack:
    """A callable ``obs (B, obs_dim) -> attacked obs`` (see the module docstring).

    Built by :func:`make_attack`; attributes ``name``, ``eps``, ``candidates``, ``steps`` are
    kept for reports.
    """

    def __init__(
        self,
        name: str,
        eps: float,
        obs_std: Tensor,
        policy: Policy | None,
        critic: nn.Module | Callable | None,
        candidates: int,
        steps: int,
        generator: torch.Generator,
    ) -> None:
        self.name = name
        self.eps = float(eps)
        self.obs_std = obs_std
        self.policy = policy
        self.critic = critic
        self.candidates = int(candidates)
        self.steps = int(steps)
        self.generator = generator
        self.gaussian = policy is not None and _is_gaussian(policy)

    def __repr__(self) -> str:
        extra = f", candidates={self.candidates}, steps={self.steps}" if self.name != "random" else ""
        return f"ObservationAttack({self.name!r}, eps={self.eps}{extra})"

    @property
    def label(self) -> str:
        """Short name for tables and plots, e.g. ``min_Q+pgd10``."""
        return self.name + (f"+pgd{self.steps}" if self.steps and self.name != "random" else "")

    # ----------------------------------------------------------------- helpers
    def _uniform(self, shape: Sequence[int], radius: Tensor) -> Tensor:
        u = torch.rand(tuple(shape), generator=self.generator, device=self.generator.device)
        return (2.0 * u.to(device=radius.device, dtype=radius.dtype) - 1.0) * radius

    def _objective(
        self, clean: Tensor, attacked: Tensor, clean_dist: tuple[Tensor, Tensor] | None, clean_action: Tensor | None
    ) -> Tensor:
        """Per-row score to *maximise* (min_Q returns ``-Q``). ``clean``/``attacked`` are
        ``(M, obs_dim)`` with matching rows."""
        if self.name == "action_diff":
            if self.gaussian:
                dist = self.policy.distribution(attacked)  # type: ignore[union-attr]
                diag = _diag_normal(dist)
                if diag is not None and clean_dist is not None:
                    return _symmetric_kl(clean_dist[0], clean_dist[1], diag[0], diag[1])
                # any other distribution (e.g. full-covariance): torch's registered KL
                ref = self.policy.distribution(clean)  # type: ignore[union-attr]
                kl = torch.distributions.kl_divergence(ref, dist) + torch.distributions.kl_divergence(dist, ref)
                return kl.sum(-1) if kl.dim() > 1 else kl
            return (_mean_action(self.policy, attacked) - clean_action).pow(2).sum(-1)  # type: ignore[arg-type]
        return -_q_value(self.critic, clean, _mean_action(self.policy, attacked))  # type: ignore[arg-type]

    def _clean_reference(self, obs: Tensor) -> tuple[tuple[Tensor, Tensor] | None, Tensor | None]:
        if self.name == "action_diff" and self.gaussian:
            diag = _diag_normal(self.policy.distribution(obs))  # type: ignore[union-attr]
            return (None if diag is None else (diag[0].detach(), diag[1].detach())), None
        if self.name == "action_diff":
            return None, _mean_action(self.policy, obs).detach()  # type: ignore[arg-type]
        return None, None

    # ----------------------------------------------------------------- attack
    def __call__(self, obs: Tensor) -> Tensor:
        squeeze = obs.dim() == 1
        x = obs.unsqueeze(0) if squeeze else obs
        if self.eps == 0.0:
            return obs.clone()
        radius = (self.eps * self.obs_std).to(device=x.device, dtype=x.dtype)
        if radius.shape[-1] != x.shape[-1]:
            raise CorlError(f"attack obs_std has {radius.shape[-1]} dims but observations have {x.shape[-1]}")
        lo, hi = x - radius, x + radius
        if self.name == "random":
            delta = self._uniform(x.shape, radius)
        else:
            delta = self._search(x, radius)
        return torch.clamp(x + delta, lo, hi).squeeze(0) if squeeze else torch.clamp(x + delta, lo, hi)

    def _search(self, x: Tensor, radius: Tensor) -> Tensor:
        b, d = x.shape
        with torch.no_grad():
            clean_dist, clean_action = self._clean_reference(x)
            n = self.candidates
            if n > 0:
                deltas = self._uniform((n, b, d), radius)
                if self.name == "min_Q":  # MICRO keeps delta = 0 among min_Q's candidates
                    deltas = torch.cat([torch.zeros_like(deltas[:1]), deltas], 0)
                n_all = deltas.shape[0]
                rep = lambda t: None if t is None else t.unsqueeze(0).expand(n_all, *t.shape).reshape(n_all * b, -1)
                ref_dist = None if clean_dist is None else (rep(clean_dist[0]), rep(clean_dist[1]))
                score = self._objective(
                    rep(x), (x.unsqueeze(0) + deltas).reshape(n_all * b, d), ref_dist, rep(clean_action)
                ).reshape(n_all, b)
                best_score, idx = score.max(0)
                best = deltas[idx, torch.arange(b, device=x.device)]
            else:
                best = self._uniform((b, d), radius) if self.name == "action_diff" else torch.zeros_like(x)
                best_score = self._objective(x, x + best, clean_dist, clean_action)
        if self.steps > 0:
            best = self._pgd(x, radius, best, best_score, clean_dist, clean_action)
        return best

    def _pgd(
        self,
        x: Tensor,
        radius: Tensor,
        start: Tensor,
        start_score: Tensor,
        clean_dist: tuple[Tensor, Tensor] | None,
        clean_action: Tensor | None,
    ) -> Tensor:
        """Projected sign-gradient ascent on the objective, keeping each row's best iterate.

        Runs with inference mode and no-grad lifted (a rollout may call the attack under
        ``torch.inference_mode()``) on clones, since inference tensors cannot join autograd.
        """
        with torch.inference_mode(False), torch.enable_grad():
            x, radius, start, start_score = (t.clone() for t in (x, radius, start, start_score))
            if clean_dist is not None:
                clean_dist = (clean_dist[0].clone(), clean_dist[1].clone())
            if clean_action is not None:
                clean_action = clean_action.clone()
            return self._pgd_loop(x, radius, start, start_score, clean_dist, clean_action)

    def _pgd_loop(
        self,
        x: Tensor,
        radius: Tensor,
        start: Tensor,
        start_score: Tensor,
        clean_dist: tuple[Tensor, Tensor] | None,
        clean_action: Tensor | None,
    ) -> Tensor:
        alpha = 2.5 * radius / self.steps
        best, best_score = start, start_score
        delta = start.clone()
        for _ in range(self.steps):
            with torch.enable_grad():
                delta.requires_grad_(True)
                score = self._objective(x, x + delta, clean_dist, clean_action)
                (grad,) = torch.autograd.grad(score.sum(), delta)
            with torch.no_grad():
                delta = torch.maximum(torch.minimum(delta + alpha * grad.sign(), radius), -radius)
                new_score = self._objective(x, x + delta, clean_dist, clean_action)
                better = new_score > best_score
                best = torch.where(better.unsqueeze(-1), delta, best)
                best_score = torch.where(better, new_score, best_score)
        return best.detach()


def make_attack(
    name: str,
    eps: float,
    obs_std: Tensor | np.ndarray | Sequence[float],
    policy: Policy | None,
    critic: nn.Module | Callable | None = None,
    candidates: int = 50,
    steps: int = 0,
    generator: torch.Generator | None = None,
) -> ObservationAttack:
    """Build an observation attack (``random``, ``action_diff`` or ``min_Q``; see module doc).

    ``obs_std`` is the per-dimension std of the dataset's observations; dimensions with
    zero std are never perturbed. ``candidates`` and ``steps`` are ignored by ``random``.
    Bad arguments give a one-line :class:`CorlError` (``min_Q`` needs a critic: ``--critic``).
    """
    canonical = _canonical(name)
    eps = float(eps)
    if not np.isfinite(eps) or eps < 0:
        raise CorlError(f"attack eps must be finite and >= 0, got {eps}")
    std = torch.as_tensor(np.asarray(obs_std, dtype=np.float32) if not isinstance(obs_std, Tensor) else obs_std)
    std = std.detach().to(torch.float32).flatten()
    if std.numel() == 0 or not torch.isfinite(std).all() or (std < 0).any():
        raise CorlError("attack obs_std must be a non-empty vector of finite, non-negative per-dimension stds")
    if candidates < 0 or steps < 0:
        raise CorlError(f"attack candidates and steps must be >= 0, got candidates={candidates}, steps={steps}")
    if canonical != "random":
        if policy is None:
            raise CorlError(f"the {canonical} attack needs the policy under attack")
        if candidates == 0 and steps == 0:
            raise CorlError(f"the {canonical} attack needs candidates > 0 or steps > 0")
    if canonical == "min_Q" and critic is None:
        raise CorlError("the min_Q attack needs a Q critic: pass --critic (a critics artifact or checkpoint)")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return ObservationAttack(canonical, eps, std, policy, critic, candidates, steps, generator)


__all__ = ["ATTACKS", "ObservationAttack", "make_attack"]
