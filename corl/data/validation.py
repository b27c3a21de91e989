"""Validation of transition arrays read from disk: each failure is one line naming file and key.

Two steps, because some checks must come before the bytes are read and some after:

* :func:`read_node` / :func:`check_declared` look only at what the file *declares* (node type,
  dtype, shape, stored bytes) and refuse before allocating: a forged header declaring 2^31
  rows must not make the reader ask for 64 GiB.
* :func:`validate_arrays` checks the values: keys, ranks, equal lengths, dimensions, finiteness
  *after* the cast to float32 (what training sees: 1e39 is finite as float64 and inf as
  float32), costs >= 0, flags in {0, 1}, episode ends, and, when a task is given, actions
  inside its action box. Everything a file implies about itself is checked without a task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from corl.data.dataset import FLAG_KEYS, FLOAT_KEYS, TRANSITION_KEYS
from corl.errors import DatasetError


def _fail(path: str | Path, key: str | None, message: str) -> DatasetError:
    where = f"{path}" + (f": key '{key}'" if key else "")
    return DatasetError(f"{where}: {message}")


#: Every task corl registers (Bullet-Safety-Gym, Safety-Gymnasium, gymnasium MuJoCo) acts in
#: the box [-1, 1]^act_dim; recorded actions may exceed it by this much (float noise, unclipped
#: exploration noise) before a file is called wrong.
ACTION_BOUND = 1.0
ACTION_TOLERANCE = 0.01
FLOAT32_MAX = float(np.finfo(np.float32).max)


def memory_budget() -> int:
    """Bytes a dataset may need in memory: half the machine's RAM, or ``$CORL_MAX_DATASET_BYTES``."""
    env = os.environ.get("CORL_MAX_DATASET_BYTES")
    if env:
        return int(float(env))
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _is_numeric(dtype: np.dtype) -> bool:
    return dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def read_node(handle: h5py.File, key: str, path: str | Path) -> np.ndarray:
    """Read one top-level HDF5 dataset after checking what it declares (type, dtype, stored size)."""
    node = handle[key]
    if not isinstance(node, h5py.Dataset):
        raise _fail(path, key, "is an HDF5 group, expected a dataset")
    try:
        dtype, shape = node.dtype, node.shape
    except (OSError, ValueError, TypeError) as exc:
        raise _fail(path, key, f"unreadable header (truncated or corrupt file: {exc.__class__.__name__})") from None
    if shape is None:
        raise _fail(path, key, "is an empty (null) dataset, expected an array")
    if not _is_numeric(dtype):
        expected = "bool or 0/1 flags" if key in FLAG_KEYS else "numbers"
        raise _fail(path, key, f"expected {expected}, got dtype {dtype}")
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    budget = memory_budget()
    if declared > budget:
        raise _fail(
            path,
            key,
            f"declares shape {shape} ({_gib(declared)}), more than the {_gib(budget)} "
            "a dataset may use on this machine (set CORL_MAX_DATASET_BYTES to allow more)",
        )
    try:
        unfiltered = node.compression is None and not node.shuffle and not node.fletcher32 and node.scaleoffset is None
        if unfiltered and declared and node.id.get_storage_size() < declared:
            raise _fail(
                path,
                key,
                f"declares shape {shape} ({declared} bytes) but the file stores only "
                f"{node.id.get_storage_size()} bytes (truncated or forged header)",
            )
        return node[()]
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise DatasetError(
            f"{path}: key {key!r} unreadable (truncated or corrupt file: {exc.__class__.__name__})"
        ) from None


def check_declared(handle: h5py.File, keys: tuple[str, ...], path: str | Path) -> None:
    """All of ``keys`` together must fit the memory budget (float32 copies included)."""
    total = 0
    for key in keys:
        node = handle.get(key)
        if isinstance(node, h5py.Dataset) and node.shape is not None:
            n = int(np.prod(node.shape, dtype=np.float64))
            total += n * (node.dtype.itemsize + 4) if _is_numeric(node.dtype) else 0
    budget = memory_budget()
    if total > budget:
        raise DatasetError(
            f"{path}: declares {_gib(total)} of arrays, more than the {_gib(budget)} a dataset may "
            "use on this machine (set CORL_MAX_DATASET_BYTES to allow more)"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _first_bad(mask: np.ndarray) -> int:
    return int(np.argwhere(mask)[0][0])


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

    ``act_dim`` given means a task is known: actions must then also lie in its action box.
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
        raise _fail(
            path,
            "next_observations",
            f"shape {arrays['next_observations'].shape[1:]} differs from observations' {arrays['observations'].shape[1:]}",
        )
    if obs_dim is not None and arrays["observations"].shape[1] != obs_dim:
        raise _fail(
            path,
            "observations",
            f"observation dim {arrays['observations'].shape[1]} does not match the task's {obs_dim}",
        )
    if act_dim is not None and arrays["actions"].shape[1] != act_dim:
        raise _fail(path, "actions", f"action dim {arrays['actions'].shape[1]} does not match the task's {act_dim}")
    for key in FLOAT_KEYS:
        if key not in arrays:
            continue
        value = arrays[key]
        if not _is_numeric(value.dtype):
            raise _fail(path, key, f"expected numbers, got dtype {value.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is what we look for
            finite = np.isfinite(value) if value.dtype == np.float32 else np.isfinite(value.astype(np.float32))
        if not finite.all():
            bad = _first_bad(~finite)
            row_value = value[bad] if value.ndim == 1 else value[bad][~finite[bad]][0]
            why = "" if not np.isfinite(row_value) else f": {row_value:.3g} overflows float32 (max {FLOAT32_MAX:.3g})"
            raise _fail(path, key, f"contains NaN or inf (first at row {bad}){why}")
    if "costs" in arrays:
        negative = arrays["costs"] < 0
        if negative.any():
            bad = _first_bad(negative)
            raise _fail(
                path,
                "costs",
                f"negative cost {float(arrays['costs'][bad]):.4g} at row {bad}: "
                "costs count constraint violations and must be >= 0",
            )
    if act_dim is not None and "actions" in arrays:
        outside = np.abs(arrays["actions"]) > ACTION_BOUND + ACTION_TOLERANCE
        if outside.any():
            row = _first_bad(outside.any(axis=1))
            worst = float(np.abs(arrays["actions"]).max())
            raise _fail(
                path,
                "actions",
                f"action {float(arrays['actions'][row][outside[row]][0]):.4g} at row {row} "
                f"lies outside the task's action box [-{ACTION_BOUND:g}, {ACTION_BOUND:g}] "
                f"(largest magnitude {worst:.4g})",
            )
    for key in FLAG_KEYS:
        if key not in arrays:
            continue
        flags = arrays[key]
        if not _is_numeric(flags.dtype):
            raise _fail(path, key, f"expected bool or 0/1 flags, got dtype {flags.dtype}")
        if flags.dtype != bool:
            wrong = (flags != 0) & (flags != 1)
            if wrong.any():
                bad = _first_bad(wrong)
                raise _fail(path, key, f"value {flags[bad]!r} at row {bad}: expected 0/1 flags")
    ends = np.zeros(n, dtype=bool)
    for key in FLAG_KEYS:
        if key in arrays:
            ends |= arrays[key].astype(bool)
    if not ends.any():
        raise _fail(path, "terminals", "no episode ends: neither terminals nor timeouts is ever set")
