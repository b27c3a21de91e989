"""Policies as artifacts: how a training stage saves one and ``evaluate`` rebuilds it.

A saved policy is ``policy.pt`` (a plain ``state_dict`` plus optional observation
normalisation tensors, loadable with ``weights_only=True``) and a JSON-able spec
``{"file", "builder", "kwargs", "normalize_obs"}`` kept in the producing stage's manifest
outputs. Builders are registered by name so a method with its own policy class (e.g. a
diffusion policy) can plug into the same ``evaluate`` stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from corl.errors import ConfigError, did_you_mean

PolicyFn = Callable[[torch.Tensor], torch.Tensor]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_policy_builder(name: str, builder: Callable[..., nn.Module]) -> None:
    _BUILDERS[name] = builder


def _builtin() -> None:
    from corl.nn import DeterministicPolicy, TanhGaussianPolicy
    from corl.nn.policies import CholeskyGaussianPolicy, DiagGaussianPolicy

    _BUILDERS.setdefault("tanh_gaussian", TanhGaussianPolicy)
    _BUILDERS.setdefault("deterministic", DeterministicPolicy)
    _BUILDERS.setdefault("diag_gaussian", DiagGaussianPolicy)  # CVPO, MICE
    _BUILDERS.setdefault("cholesky_gaussian", CholeskyGaussianPolicy)  # CVPO's original parameterisation
    from corl.algos.bcql import BCQPolicy

    _BUILDERS.setdefault("bcq", BCQPolicy)  # BCQ-Lag: VAE sample + perturbation
    from corl.algos.cdt import CDTPolicy

    _BUILDERS.setdefault("cdt", CDTPolicy)  # CDT: transformer with per-env histories and targets
    from corl.algos.fisor import FISORPolicy

    _BUILDERS.setdefault("fisor", FISORPolicy)  # FISOR: DDPM candidates, least feasibility value


def save_policy(
    out_dir: Path,
    module: nn.Module,
    builder: str,
    kwargs: dict[str, Any],
    obs_mean: torch.Tensor | None = None,
    obs_std: torch.Tensor | None = None,
    file: str = "policy.pt",
) -> dict[str, Any]:
    """Write the policy's weights (atomically) and return its spec for ``outputs["policy"]``."""
    from corl.files import torch_save_atomic

    payload: dict[str, Any] = {"state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}}
    if obs_mean is not None and obs_std is not None:
        payload["obs_mean"] = obs_mean.detach().cpu()
        payload["obs_std"] = obs_std.detach().cpu()
    torch_save_atomic(payload, Path(out_dir) / file)
    return {"file": file, "builder": builder, "kwargs": kwargs, "normalize_obs": obs_mean is not None}


def load_policy_module(
    artifact_dir: Path, spec: dict[str, Any], device: torch.device | str = "cpu"
) -> tuple[nn.Module, torch.Tensor | None, torch.Tensor | None]:
    """(module in eval mode on ``device``, obs mean or None, obs std or None)."""
    _builtin()
    builder = spec["builder"]
    if builder not in _BUILDERS:
        raise ConfigError(f"{artifact_dir}: unknown policy builder {builder!r}{did_you_mean(builder, _BUILDERS)}")
    module = _BUILDERS[builder](**spec["kwargs"])
    payload = torch.load(Path(artifact_dir) / spec["file"], map_location="cpu", weights_only=True)
    module.load_state_dict(payload["state_dict"])
    module.to(device).eval()
    mean = payload.get("obs_mean")
    std = payload.get("obs_std")
    if mean is not None:
        mean, std = mean.to(device), std.to(device)
    return module, mean, std


def load_policy_fn(artifact_dir: Path, spec: dict[str, Any], device: torch.device | str = "cpu") -> PolicyFn:
    """A batched, deterministic ``obs -> action`` callable (normalisation applied inside)."""
    module, mean, std = load_policy_module(artifact_dir, spec, device)

    @torch.no_grad()
    def policy_fn(obs: torch.Tensor) -> torch.Tensor:
        if mean is not None:
            obs = (obs - mean) / std
        if hasattr(module, "act"):
            return module.act(obs, deterministic=True)
        return module(obs)

    policy_fn.module = module  # type: ignore[attr-defined]  # for attacks that need gradients
    for hook in ("reset", "observe", "set_targets"):  # policies with memory (CDT): see corl.eval.rollout
        if hasattr(module, hook):
            setattr(policy_fn, hook, getattr(module, hook))
    return policy_fn
