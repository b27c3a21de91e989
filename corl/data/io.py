"""Read any supported dataset file by format name or by sniffing its keys."""

from __future__ import annotations

from pathlib import Path

from corl.data.dataset import TransitionDataset
from corl.errors import DatasetError

FORMATS = ("auto", "dsrl", "d4rl")


def sniff_format(path: str | Path) -> str:
    """Guess a file's format from its keys.

    ``d4rl`` only when the file has no per-step ``costs`` and carries D4RL's own groups
    (``infos/`` or ``metadata/``) or lacks ``next_observations`` (which D4RL derives); anything
    else is read as DSRL, so a DSRL file missing a key is reported as exactly that.
    """
    from corl.data.formats.dsrl import _open

    with _open(Path(path)) as handle:
        keys = set(handle.keys())
    if "costs" in keys:
        return "dsrl"
    if keys & {"infos", "metadata"} or "next_observations" not in keys:
        return "d4rl"
    return "dsrl"


def read_dataset(
    path: str | Path, fmt: str = "auto", obs_dim: int | None = None, act_dim: int | None = None
) -> TransitionDataset:
    """Load a DSRL or D4RL HDF5 file (validated) as a TransitionDataset."""
    if fmt not in FORMATS:
        raise DatasetError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if fmt == "auto":
        fmt = sniff_format(path)
    if fmt == "dsrl":
        from corl.data.formats.dsrl import read_dsrl

        return read_dsrl(path, obs_dim=obs_dim, act_dim=act_dim)
    from corl.data.formats.d4rl import read_d4rl

    return read_d4rl(path, obs_dim=obs_dim, act_dim=act_dim)
