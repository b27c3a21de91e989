"""D4RL's HDF5 format, read into a :class:`TransitionDataset`.

Layout: top-level ``observations`` (N, obs), ``actions`` (N, act), ``rewards`` (N,),
``terminals`` (N,), ``timeouts`` (N,); optionally ``next_observations`` (the MuJoCo ``-v2``
files ship it), ``costs`` (never in D4RL itself, but accepted so that a safe-RL file written in
D4RL's layout keeps its costs), ``infos/*`` (qpos, qvel, ...) and ``metadata/*``.

D4RL has no cost signal, so ``costs`` is all zeros unless the file has a ``costs`` key.

Next observations, when the file has none
-----------------------------------------
Within an episode the next observation of row ``i`` is row ``i + 1``. The rows where it
cannot be derived are handled like this (a deliberate difference from D4RL's
``qlearning_dataset``, which builds ``next_obs`` from the following row *everywhere*, so a
terminal row gets the next episode's first observation, drops timeout rows, and never emits
the file's final row, D4RL #145):

* a **terminal** row is kept: it never bootstraps (``not_done = 0``), so its next observation
  is irrelevant; corl fills it with the row's own observation instead of leaking the next
  episode's first observation into it;
* the last row of an episode that ends by **timeout** is dropped (it would have to bootstrap
  from an observation the file does not hold), and its timeout flag moves to the previous row
  of the same episode, which is now that episode's last row and bootstraps from the dropped
  row's observation -- correct, and the episode stays separate from the next one;
* the file's **final row**, unless terminal, is dropped the same way (its successor is not in
  the file) and the new last row is marked as a timeout (a cut-off episode).

Consequences a user should know: episode lengths shrink by one for every timed-out episode,
and episode reward returns miss that last step's reward (as with ``qlearning_dataset``); a
one-step episode ending by timeout disappears. ``metadata["dropped_rows"]`` counts the rows
removed and ``metadata["next_observations"]`` says whether they were ``"stored"`` or
``"derived"``. Files with ``next_observations`` keep every row.

Not handled: D4RL's chunked ``virtual/<id>/<key>`` files, and maze2d, whose "timeouts" mark
goal switches rather than truncation (D4RL #85) -- read as truncations here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from corl.data.dataset import TransitionDataset
from corl.data.formats.dsrl import _open
from corl.data.hashing import file_sha256
from corl.data.validation import check_declared, normalize_shapes, read_node, validate_arrays
from corl.errors import DatasetError

#: Keys a D4RL file must have (next_observations and costs are optional).
D4RL_REQUIRED: tuple[str, ...] = ("observations", "actions", "rewards", "terminals", "timeouts")
D4RL_OPTIONAL: tuple[str, ...] = ("next_observations", "costs")


def _plain(value: Any) -> Any:
    """An HDF5 scalar/array/bytes value as a JSON-friendly Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _plain(value[()])
        if value.size <= 64:
            return [_plain(v) for v in value.tolist()]
        return f"<array {value.dtype} {value.shape}>"
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str]]:
    """The transition arrays, ``metadata/*`` as plain values, and the ``infos/*`` key names."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    info_keys: list[str] = []
    with _open(path) as handle:
        present = tuple(k for k in D4RL_REQUIRED + D4RL_OPTIONAL if k in handle)
        check_declared(handle, present, path)
        for key in present:
            arrays[key] = read_node(handle, key, path)
        group = handle.get("metadata")
        if isinstance(group, h5py.Group):
            # Only small scalars/strings are kept: metadata is for records, not for data.
            def visit(name: str, node: Any) -> None:
                if isinstance(node, h5py.Dataset) and node.size <= 64:
                    meta[name] = _plain(node[()])

            group.visititems(visit)
            for name, value in group.attrs.items():
                meta.setdefault(name, _plain(value))
        infos = handle.get("infos")
        if isinstance(infos, h5py.Group):
            infos.visititems(lambda name, node: info_keys.append(name) if isinstance(node, h5py.Dataset) else None)
    return arrays, meta, sorted(info_keys)


def derive_next_observations(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Add ``next_observations`` from the following row and drop the rows that have none.

    See the module docstring for the rules. Returns the new arrays and how many rows were
    dropped. Flags must already be 1-D (``normalize_shapes``).
    """
    obs = arrays["observations"]
    n = obs.shape[0]
    terminals = arrays["terminals"].astype(bool)
    timeouts = arrays["timeouts"].astype(bool)
    timed_out = timeouts & ~terminals  # both flags set = a termination, which is kept
    next_obs = np.empty_like(obs)
    next_obs[:-1] = obs[1:]
    next_obs[terminals] = obs[terminals]
    # Rows that would need a successor the file does not hold.
    drop = timed_out.copy()
    if not terminals[-1]:
        drop[-1] = True
    # The row before a dropped one inherits the episode end, unless it is itself an end
    # (then the dropped row was a one-step episode, which simply disappears).
    ends = terminals | timeouts
    inherit = np.zeros(n, dtype=bool)
    inherit[:-1] = drop[1:] & ~ends[:-1]
    new_timeouts = timeouts | inherit
    keep = ~drop
    out = {key: value[keep] for key, value in arrays.items()}
    out["next_observations"] = next_obs[keep]
    out["terminals"] = terminals[keep]
    out["timeouts"] = new_timeouts[keep]
    return out, int(drop.sum())


def read_d4rl(path: str | Path, obs_dim: int | None = None, act_dim: int | None = None) -> TransitionDataset:
    """Load and validate a D4RL-format HDF5 file as a :class:`TransitionDataset` (on the CPU).

    ``obs_dim``/``act_dim`` (the task's) are checked when given. Errors are one-line
    :class:`DatasetError` naming the file and the key.
    """
    path = Path(path)
    arrays, d4rl_meta, info_keys = _read(path)
    arrays = normalize_shapes(arrays)
    required = D4RL_REQUIRED + tuple(k for k in D4RL_OPTIONAL if k in arrays)
    validate_arrays(arrays, path, obs_dim=obs_dim, act_dim=act_dim, required=required, kind="D4RL")
    for key in ("terminals", "timeouts"):
        arrays[key] = arrays[key].astype(bool)
    if "costs" not in arrays:
        arrays["costs"] = np.zeros(arrays["rewards"].shape[0], dtype=np.float32)
        has_costs = False
    else:
        has_costs = True
    dropped = 0
    if "next_observations" in arrays:
        source = "stored"
    else:
        source = "derived"
        arrays, dropped = derive_next_observations(arrays)
        if arrays["observations"].shape[0] == 0:
            raise DatasetError(
                f"{path}: key 'next_observations' absent and cannot be derived: every episode is one timed-out step"
            )
    metadata: dict[str, Any] = {
        "format": "d4rl",
        "path": str(path),
        "sha256": file_sha256(path),
        "next_observations": source,
        "dropped_rows": dropped,
        "has_costs": has_costs,
    }
    if d4rl_meta:
        metadata["d4rl_metadata"] = d4rl_meta
    if info_keys:
        metadata["info_keys"] = info_keys
    return TransitionDataset.from_numpy(arrays, metadata)
