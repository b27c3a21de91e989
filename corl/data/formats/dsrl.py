"""DSRL's HDF5 format, read and written.

Layout (what dsrl's ``OfflineEnv.get_dataset(h5path=...)`` reads): one HDF5 dataset per key at
the top level -- observations, next_observations, actions (float32, (N, dim)), rewards,
costs (float32, (N,)), terminals, timeouts (bool, (N,)). corl writes them chunked and
gzip-compressed, and keeps its own metadata (task, source, collector, seed, ...) as file
attributes, which dsrl ignores.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from corl.data.dataset import FLAG_KEYS, FLOAT_KEYS, TRANSITION_KEYS, TransitionDataset
from corl.data.hashing import file_sha256
from corl.data.validation import check_declared, normalize_shapes, read_node, validate_arrays
from corl.errors import DatasetError
from corl.files import atomic_write_via, check_writable_target

CORL_META_ATTR = "corl_metadata"


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            signature = handle.read(8)
        if signature == b"\x89HDF\r\n\x1a\n":
            raise DatasetError(
                f"{path}: HDF5 file is truncated or corrupt ({size} bytes): {exc.__class__.__name__}"
            ) from None
        raise DatasetError(f"{path}: not an HDF5 file (no HDF5 signature; {size} bytes)") from None


def read_hdf5_arrays(
    path: str | Path, keys: tuple[str, ...] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Top-level arrays (all, or ``keys`` that exist) and the corl metadata attribute."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    with _open(path) as handle:
        try:
            names = keys if keys is not None else tuple(k for k in handle.keys() if isinstance(handle[k], h5py.Dataset))
            present = tuple(k for k in names if k in handle)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise DatasetError(
                f"{path}: unreadable key table (truncated or corrupt file: {exc.__class__.__name__})"
            ) from None
        check_declared(handle, present, path)
        for key in present:
            arrays[key] = read_node(handle, key, path)
        try:
            raw = handle.attrs.get(CORL_META_ATTR)
        except (OSError, KeyError, ValueError, RuntimeError):
            raw = None
    return arrays, _metadata(raw, path)


def _metadata(raw: Any, path: Path) -> dict[str, Any]:
    """corl's metadata attribute (JSON text); anything else there is named, not trusted."""
    if raw is None:
        return {}
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, ValueError):
        raise DatasetError(f"{path}: attribute '{CORL_META_ATTR}' is not JSON text") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: attribute '{CORL_META_ATTR}' must be a JSON object, got {type(value).__name__}")
    return value


def read_dsrl(path: str | Path, obs_dim: int | None = None, act_dim: int | None = None) -> TransitionDataset:
    """Load and validate a DSRL-format file as a :class:`TransitionDataset` (on the CPU)."""
    path = Path(path)
    arrays, metadata = read_hdf5_arrays(path, TRANSITION_KEYS)
    arrays = normalize_shapes(arrays)
    validate_arrays(arrays, path, obs_dim=obs_dim, act_dim=act_dim)
    metadata = dict(metadata)
    metadata.setdefault("format", "dsrl")
    metadata["path"] = str(path)
    metadata["sha256"] = file_sha256(path)
    return TransitionDataset.from_numpy(arrays, metadata)


def write_dsrl(
    dataset: TransitionDataset,
    path: str | Path,
    compression: str | None = "gzip",
    extra: Callable[[h5py.File], None] | None = None,
) -> Path:
    """Write ``dataset`` in DSRL's format, atomically (temporary name, then rename).

    The HDF5 file is built in memory and its bytes written by :func:`corl.files.atomic_write`:
    h5py writing straight to a file system that fills up crashes the process (signal 11 in its
    close path), while here a full disk is one line naming ``path``, with no temporary file
    left. The cost is one copy of the compressed file in memory. ``extra(handle)`` may add
    groups of its own (the collectors' per-episode metadata) before the file is closed.
    """
    path = Path(path)
    check_writable_target(path)
    arrays = dataset.to_numpy()
    meta = {k: v for k, v in dataset.metadata.items() if k not in ("path", "sha256")}

    def fill(buffer: io.BytesIO) -> None:
        with h5py.File(buffer, "w") as handle:
            for key in FLOAT_KEYS:
                value = np.ascontiguousarray(arrays[key], dtype=np.float32)
                chunks = (min(len(value), 65536),) + value.shape[1:] if len(value) else None
                handle.create_dataset(
                    key, data=value, compression=compression, shuffle=compression is not None, chunks=chunks
                )
            for key in FLAG_KEYS:
                value = np.ascontiguousarray(arrays[key], dtype=bool)
                chunks = (min(len(value), 65536),) if len(value) else None
                handle.create_dataset(
                    key, data=value, compression=compression, shuffle=compression is not None, chunks=chunks
                )
            handle.attrs[CORL_META_ATTR] = json.dumps(meta, default=str, sort_keys=True)
            if extra is not None:
                extra(handle)

    return atomic_write_via(path, fill)
