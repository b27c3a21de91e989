"""Q critics for the ``min_Q`` attack, read from the artifacts (or files) that hold them.

Why a separate loader (and not ``corl.store.policies``): critics are saved by each method
in its own layout (DRCORL's ``critics.pt`` is the whole ``CriticLearner`` state with
optimizers; MICRO's policy artifact keeps its SAC critic in ``critic.pt``; a user may hand in
a training checkpoint), and an attack only needs ``q(obs, act) -> (E, B)``. Every layout
ends in an :class:`~corl.nn.critics.EnsembleQ` ``state_dict``, so the architecture is
*inferred from the tensor shapes* (members, input width, hidden widths, LayerNorm) instead of
trusting a separately stored config that could drift from the weights.

Where a critic comes from, in order:

1. the artifact's own ``outputs["critic"]`` spec ``{"file", "key", "kwargs"?, "what"}``
   (MICRO's policy artifact writes one);
2. a loader registered for the artifact's kind (:func:`register_critic_source`): DRCORL's
   ``drcorl_critics`` gives its *reward* Q (the IQL-pre-trained twin ``Q_r``: the min_Q
   attack minimises the return the policy expects, not its cost);
3. for ``--critic FILE``: the first ``EnsembleQ`` state found in the file, preferring the keys
   ``q_r``, ``critic``, ``state_dict`` (so a ``critics.pt``, a ``critic.pt`` or a stage's
   ``checkpoint.pt`` all work).

Files are read with ``torch.load(weights_only=True)``: a critic file never executes code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from corl.errors import CorlError
from corl.nn.critics import EnsembleQ
from corl.store.artifacts import Artifact, CorruptArtifact, verify

#: Keys searched first when a file holds several modules (reward critic before anything else).
PREFERRED_KEYS: tuple[str, ...] = ("q_r", "critic", "state_dict", "trainer", "learner", "state")

_LAYER = re.compile(r"^net\.net\.(\d+)\.(weight|bias)$")


@dataclass
class LoadedCritic:
    """A critic ready for :func:`corl.eval.attacks.make_attack` (``module(obs, act) -> (E, B)``)."""

    module: EnsembleQ
    source: str  # where it was read from (artifact dir or file, and the key inside)
    what: str  # what it estimates, for the report (e.g. "reward Q (IQL pre-trained)")
    num_q: int
    in_dim: int

    def __call__(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.module(obs, act)


CriticSource = Callable[[Artifact], tuple[Path, str, str] | None]
_SOURCES: dict[str, CriticSource] = {}


def register_critic_source(kind: str, source: CriticSource) -> None:
    """Teach :func:`critic_from_artifact` where artifacts of ``kind`` keep a Q critic.

    ``source(artifact)`` returns ``(file, key, what)``: the file, the key of the EnsembleQ
    state inside it ("" for the file itself, dotted for nested) and a short description;
    or None when this artifact has none.
    """
    _SOURCES[kind] = source


def _drcorl_critics(artifact: Artifact) -> tuple[Path, str, str] | None:
    file = artifact.outputs.get("file", "critics.pt")
    return artifact.dir / file, "q_r", "reward Q_r (DRCORL IQL critics stage)"


register_critic_source("drcorl_critics", _drcorl_critics)


# ----------------------------------------------------------------------------- architecture
def is_ensemble_q_state(state: Any) -> bool:
    """True when ``state`` looks like an :class:`EnsembleQ` ``state_dict``."""
    if not isinstance(state, Mapping) or not state:
        return False
    layers = [k for k in state if isinstance(k, str) and _LAYER.match(k)]
    if not layers or not all(torch.is_tensor(state[k]) for k in layers):
        return False
    weights = [state[k] for k in layers if k.endswith(".weight")]
    return any(w.dim() == 3 for w in weights) and all(w.dim() in (1, 3) for w in weights)  # 1-D: LayerNorm


def build_ensemble_q(state: Mapping[str, torch.Tensor], kwargs: Mapping[str, Any] | None = None) -> EnsembleQ:
    """An :class:`EnsembleQ` with ``state`` loaded; the architecture from the shapes.

    ``EnsembleMLP`` stores weights as ``(E, in, out)`` at ``net.net.<i>.weight``; a 1-D
    ``.weight`` at an index is a LayerNorm. The activation is ReLU (every corl critic's) unless
    ``kwargs`` names another.
    """
    weights = sorted(
        ((int(m.group(1)), state[k]) for k in state if (m := _LAYER.match(k)) and k.endswith(".weight")),
        key=lambda t: t[0],
    )
    linear = [(i, w) for i, w in weights if w.dim() == 3]
    if not linear:
        raise CorlError("critic state has no ensemble layers (expected net.net.<i>.weight of shape (E, in, out))")
    num_q, in_dim = int(linear[0][1].shape[0]), int(linear[0][1].shape[1])
    hidden = [int(w.shape[2]) for _, w in linear[:-1]]
    if int(linear[-1][1].shape[2]) != 1:
        raise CorlError(f"critic's last layer has {int(linear[-1][1].shape[2])} outputs; a Q critic has 1")
    layer_norm = any(w.dim() == 1 for _, w in weights)
    activation = str((kwargs or {}).get("activation", "relu"))
    # obs/act split does not matter to the module (it concatenates them); keep the width right.
    module = EnsembleQ(in_dim - 1, 1, num_q, hidden, activation, layer_norm)
    try:
        module.load_state_dict(dict(state))
    except RuntimeError as exc:
        raise CorlError(
            f"critic state does not fit an EnsembleQ {hidden} x{num_q}: {str(exc).splitlines()[0]}"
        ) from None
    return module.eval().requires_grad_(False)


def _find_state(payload: Any, key: str) -> tuple[Mapping[str, torch.Tensor], str] | None:
    """The EnsembleQ state at dotted ``key`` (""=payload), else the first found by a search."""
    node = payload
    if key:
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None and is_ensemble_q_state(node):
            return node, key
    return _search(payload, "")


def _search(node: Any, path: str, depth: int = 0) -> tuple[Mapping[str, torch.Tensor], str] | None:
    if is_ensemble_q_state(node):
        return node, path
    if not isinstance(node, Mapping) or depth > 5:
        return None
    keys = [k for k in PREFERRED_KEYS if k in node] + [k for k in node if k not in PREFERRED_KEYS]
    for k in keys:
        if isinstance(k, str) and ("target" in k or "optimizer" in k):
            continue  # a target network or optimizer state is never the critic to attack with
        found = _search(node[k], f"{path}.{k}" if path else str(k), depth + 1)
        if found is not None:
            return found
    return None


def load_critic_file(
    path: str | Path,
    key: str = "",
    what: str = "Q critic",
    device: torch.device | str = "cpu",
    kwargs: Mapping[str, Any] | None = None,
) -> LoadedCritic:
    """A critic from a ``.pt`` file (``weights_only``); ``key`` is a hint, else searched."""
    path = Path(path)
    if not path.is_file():
        raise CorlError(f"--critic {path}: no such file or artifact directory")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CorlError(f"{path}: not a weights-only torch file ({exc.__class__.__name__})") from None
    found = _find_state(payload, key)
    if found is None:
        raise CorlError(f"{path}: holds no EnsembleQ critic state (looked under {', '.join(PREFERRED_KEYS)})")
    state, where = found
    module = build_ensemble_q(state, kwargs).to(device)
    return LoadedCritic(
        module, f"{path}" + (f"[{where}]" if where else ""), what, module.num_q, int(module.net.net[0].in_dim)
    )


def critic_from_artifact(artifact: Artifact, device: torch.device | str = "cpu") -> LoadedCritic | None:
    """The artifact's Q critic, or None when it keeps none (see the module docstring)."""
    spec = artifact.outputs.get("critic")
    if isinstance(spec, Mapping) and "file" in spec:
        return load_critic_file(
            artifact.dir / spec["file"],
            str(spec.get("key", "")),
            str(spec.get("what", f"Q critic of {artifact.kind}")),
            device,
            spec.get("kwargs"),
        )
    source = _SOURCES.get(artifact.kind)
    if source is None:
        return None
    found = source(artifact)
    if found is None:
        return None
    file, key, what = found
    return load_critic_file(file, key, what, device)


def load_critic(path: str | Path, device: torch.device | str = "cpu") -> LoadedCritic:
    """``--critic PATH``: a finished artifact directory that keeps a critic, or a ``.pt`` file."""
    path = Path(path).expanduser()
    if path.is_dir():
        try:
            artifact = verify(path)
        except CorruptArtifact as exc:
            raise CorlError(f"--critic {path}: {exc}") from None
        if artifact is None:
            raise CorlError(f"--critic {path}: not a finished artifact (no manifest.json)")
        critic = critic_from_artifact(artifact, device)
        if critic is None:
            known = sorted(set(_SOURCES) | {"micro_policy"})
            raise CorlError(
                f"--critic {path}: a {artifact.kind} artifact keeps no Q critic; "
                f"use one of kind {', '.join(known)} or a .pt file"
            )
        return critic
    return load_critic_file(path, device=device)


def check_critic_dims(critic: LoadedCritic, obs_dim: int, act_dim: int) -> None:
    """One-line error when the critic was trained for other observation/action sizes."""
    if critic.in_dim != obs_dim + act_dim:
        raise CorlError(
            f"critic {critic.source} takes {critic.in_dim} inputs but the task has "
            f"obs {obs_dim} + act {act_dim} = {obs_dim + act_dim}"
        )


__all__ = [
    "LoadedCritic",
    "register_critic_source",
    "build_ensemble_q",
    "is_ensemble_q_state",
    "load_critic_file",
    "critic_from_artifact",
    "load_critic",
    "check_critic_dims",
]
