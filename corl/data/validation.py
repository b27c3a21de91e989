"""Validation of transition arrays read from disk: each failure is one line naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from corl.data.dataset import FLAG_KEYS, FLOAT_KEYS, TRANSITION_KEYS
from corl.errors import DatasetError


def _fail(path: str | Path, key: str | None, message: str) -> DatasetError:
    where = f"{path}" + (f": key '{key}'" if key else "")
    return DatasetError(f"{where}: {message}")


def normalize_shapes(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Squeeze accidental (N, 1) shapes of scalar-per-step keys, as dsrl's loader does."""
    for key in ("rewards", "costs", "terminals", "timeouts"):
        value = arrays.get(key)
        if value is not None and value.ndim == 2 and value.shape[1] == 1:
            arrays[key] = value[:, 0]
    return arrays


def validate_arrays(
    arrays: Mapping[str, np.ndarray],
    path: str | Path,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    required: tuple[str, ...] = TRANSITION_KEYS,
    kind: str = "DSRL",
) -> None:
    """Check keys, shapes, equal lengths, finite values and that episodes end somewhere.

    ``kind`` only names the format in the missing-key message (the D4RL reader requires fewer
    keys than the DSRL one). Raises :class:`DatasetError` with one line:
    ``FILE: key 'K': what was expected``.
    """
    for key in required:
        if key not in arrays:
            raise _fail(path, key, f"missing (a {kind} dataset needs {', '.join(required)})")
    n = arrays["observations"].shape[0] if arrays["observations"].ndim else 0
    if n == 0:
        raise _fail(path, "observations", "empty: expected at least one transition")
    for key in ("observations", "next_observations", "actions"):
        if key in arrays and arrays[key].ndim != 2:
            raise _fail(path, key, f"expected a 2-D array (N, dim), got shape {arrays[key].shape}")
    for key in ("rewards", "costs", "terminals", "timeouts"):
        if key in arrays and arrays[key].ndim != 1:
            raise _fail(path, key, f"expected a 1-D array (N,), got shape {arrays[key].shape}")
    for key in required:
        if arrays[key].shape[0] != n:
            raise _fail(path, key, f"length {arrays[key].shape[0]} differs from observations' {n}")
    if "next_observations" in arrays and arrays["next_observations"].shape[1:] != arrays["observations"].shape[1:]:
        raise _fail(path, "next_observations", f"shape {arrays['next_observations'].shape[1:]} differs from observations' {arrays['observations'].shape[1:]}")
    if obs_dim is not None and arrays["observations"].shape[1] != obs_dim:
        raise _fail(path, "observations", f"observation dim {arrays['observations'].shape[1]} does not match the task's {obs_dim}")
    if act_dim is not None and arrays["actions"].shape[1] != act_dim:
        raise _fail(path, "actions", f"action dim {arrays['actions'].shape[1]} does not match the task's {act_dim}")
    for key in FLOAT_KEYS:
        if key not in arrays:
            continue
        value = arrays[key]
        if not np.issubdtype(value.dtype, np.number) and value.dtype != bool:
            raise _fail(path, key, f"expected numbers, got dtype {value.dtype}")
        finite = np.isfinite(value)
        if not finite.all():
            bad = int(np.argwhere(~finite)[0][0])
            raise _fail(path, key, f"contains NaN or inf (first at row {bad})")
    for key in FLAG_KEYS:
        if key in arrays and not (np.issubdtype(arrays[key].dtype, np.number) or arrays[key].dtype == bool):
            raise _fail(path, key, f"expected bool or 0/1 flags, got dtype {arrays[key].dtype}")
    ends = np.zeros(n, dtype=bool)
    for key in FLAG_KEYS:
        if key in arrays:
            ends |= arrays[key].astype(bool)
    if not ends.any():
        raise _fail(path, "terminals", "no episode ends: neither terminals nor timeouts is ever set")
