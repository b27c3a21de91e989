"""DSRL's HDF5 format, read and written.

Layout (what dsrl's ``OfflineEnv.get_dataset(h5path=...)`` reads): one HDF5 dataset per key at
the top level -- observations, next_observations, actions (float32, (N, dim)), rewards,
costs (float32, (N,)), terminals, timeouts (bool, (N,)). corl writes them chunked and
gzip-compressed, and keeps its own metadata (task, source, collector, seed, ...) as file
attributes, which dsrl ignores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from corl.data.dataset import FLAG_KEYS, FLOAT_KEYS, TRANSITION_KEYS, TransitionDataset
from corl.data.hashing import file_sha256
from corl.data.validation import normalize_shapes, validate_arrays
from corl.errors import DatasetError

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
            raise DatasetError(f"{path}: HDF5 file is truncated or corrupt ({size} bytes): {exc.__class__.__name__}") from None
        raise DatasetError(f"{path}: not an HDF5 file (no HDF5 signature; {size} bytes)") from None


def read_hdf5_arrays(path: str | Path, keys: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Top-level arrays (all, or ``keys`` that exist) and the corl metadata attribute."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    with _open(path) as handle:
        names = keys if keys is not None else tuple(k for k in handle.keys() if isinstance(handle[k], h5py.Dataset))
        for key in names:
            if key not in handle:
                continue
            if not isinstance(handle[key], h5py.Dataset):
                raise DatasetError(f"{path}: key '{key}' is an HDF5 group, expected a dataset")
            try:
                arrays[key] = handle[key][()]
            except (OSError, KeyError, ValueError) as exc:
                raise DatasetError(f"{path}: key '{key}' unreadable (truncated or corrupt file: {exc.__class__.__name__})") from None
        raw = handle.attrs.get(CORL_META_ATTR)
    metadata = json.loads(raw) if raw is not None else {}
    return arrays, metadata


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


def write_dsrl(dataset: TransitionDataset, path: str | Path, compression: str | None = "gzip") -> Path:
    """Write ``dataset`` in DSRL's format, atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    arrays = dataset.to_numpy()
    meta = {k: v for k, v in dataset.metadata.items() if k not in ("path", "sha256")}
    try:
        with h5py.File(tmp, "w") as handle:
            for key in FLOAT_KEYS:
                value = np.ascontiguousarray(arrays[key], dtype=np.float32)
                chunks = (min(len(value), 65536),) + value.shape[1:] if len(value) else None
                handle.create_dataset(key, data=value, compression=compression, shuffle=compression is not None, chunks=chunks)
            for key in FLAG_KEYS:
                value = np.ascontiguousarray(arrays[key], dtype=bool)
                chunks = (min(len(value), 65536),) if len(value) else None
                handle.create_dataset(key, data=value, compression=compression, shuffle=compression is not None, chunks=chunks)
            handle.attrs[CORL_META_ATTR] = json.dumps(meta, default=str, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
