"""Recorded episodes on disk: a DSRL file with per-episode metadata, and the spill files.

Why a module of its own: the online collectors (``cvpo_train``, ``mice_train``) write every
episode they train on as a DSRL-format HDF5 plus an ``episodes/`` group of per-episode
metadata columns (cost limit, learner, seed, training step, ...), and the ``export`` stage
reads it back. ``dsrl`` ignores the extra group, so the file stays a plain DSRL dataset.
While training, the rows are appended to hidden ``.episodes-*.npz`` files at every checkpoint
(:class:`EpisodeSpill`) so a save costs the new rows, not the whole dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from corl.data.dataset import TRANSITION_KEYS
from corl.errors import CorlError
from corl.files import atomic_write_via

EPISODE_GROUP = "episodes"  # per-episode metadata arrays inside the HDF5 files (dsrl ignores them)


def concat_rows(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Row blocks (dicts of transition arrays) as one block; {} when none has a row."""
    parts = [p for p in parts if p and len(p["rewards"])]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in TRANSITION_KEYS}


def episode_columns(episodes: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-episode metadata as arrays (HDF5 attributes cap at 64 KiB; thousands of episodes do not fit)."""

    def col(key: str, dtype: Any, default: Any = 0) -> np.ndarray:
        return np.asarray([default if e.get(key) is None else e.get(key, default) for e in episodes], dtype=dtype)

    return {
        "cost_limit": col("cost_limit", np.float64, np.nan),
        "training_step": col("training_step", np.int64),
        "env_step": col("env_step", np.int64),
        "seed": col("seed", np.int64),
        "learner": col("learner", np.int64),
        "env_index": col("env_index", np.int64),
        "reward": col("reward", np.float64),
        "cost": col("cost", np.float64),
        "length": col("length", np.int64),
        "terminated": col("terminated", bool),
    }


def write_episodes(
    arrays: dict[str, np.ndarray], episodes: list[dict[str, Any]], metadata: dict[str, Any], path: Path
) -> Path:
    """A DSRL-format file plus an ``episodes/`` group of per-episode metadata, written atomically."""
    import h5py

    from corl.data.dataset import TransitionDataset
    from corl.data.formats.dsrl import write_dsrl

    def episode_group(handle: "h5py.File") -> None:
        if episodes:
            group = handle.create_group(EPISODE_GROUP)
            for key, value in episode_columns(episodes).items():
                group.create_dataset(key, data=value)

    return write_dsrl(TransitionDataset.from_numpy(arrays, metadata), path, extra=episode_group)


def read_episodes(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """(transition arrays, per-episode metadata columns ({} when absent), corl metadata) of a file."""
    import h5py

    from corl.data.formats.dsrl import read_hdf5_arrays

    arrays, meta = read_hdf5_arrays(path, TRANSITION_KEYS)
    with h5py.File(path, "r") as handle:
        cols = {k: v[()] for k, v in handle[EPISODE_GROUP].items()} if EPISODE_GROUP in handle else {}
    return arrays, cols, meta


class EpisodeSpill:
    """Recorded episodes on disk, appended at every checkpoint (hidden ``.episodes-*.npz`` files).

    Why: a paper-scale run records millions of transitions (MICE: 10M x 60-dim observations);
    saving them inside every checkpoint would rewrite gigabytes each time. Each save appends
    only the rows recorded since the previous one, and the checkpoint records how many rows
    are committed; files past that count (written just before a kill) are discarded on resume.
    Hidden names keep them out of the artifact's hashed files; they are deleted when done.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rows = 0

    def _files(self) -> list[tuple[int, int, Path]]:
        out = []
        for path in self.directory.glob(".episodes-*.npz"):
            _, offset, rows = path.stem.split("-")
            out.append((int(offset), int(rows), path))
        return sorted(out)

    def restore(self, committed: int) -> None:
        """Keep the files a checkpoint committed (``committed`` rows), delete the rest."""
        self.rows = 0
        for offset, rows, path in self._files():
            if offset == self.rows and offset + rows <= committed:
                self.rows += rows
            else:
                path.unlink(missing_ok=True)
        if self.rows != committed:
            raise CorlError(
                f"{self.directory}: recorded episodes missing ({self.rows} of {committed} rows); "
                "delete checkpoint.pt to restart this stage"
            )

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["rewards"]) if arrays else 0
        if n == 0:
            return
        final = self.directory / f".episodes-{self.rows:012d}-{n}.npz"
        atomic_write_via(final, lambda buffer: np.savez(buffer, **arrays))
        self.rows += n

    def load_all(self) -> dict[str, np.ndarray]:
        parts = []
        for _, _, path in self._files():
            with np.load(path) as data:
                parts.append({k: data[k] for k in TRANSITION_KEYS})
        return concat_rows(parts)

    def clear(self) -> None:
        for _, _, path in self._files():
            path.unlink(missing_ok=True)
