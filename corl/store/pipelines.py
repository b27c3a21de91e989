"""Where pipeline spec files live, and their names.

Here (not in :mod:`corl.pipeline.spec`) because evaluation lists them too (``corl eval
--pipeline NAME`` knows the names a user may give) and evaluation never imports the engine.
"""

from __future__ import annotations

import os
from pathlib import Path


def pipeline_dirs() -> list[Path]:
    """Where ``corl run NAME`` looks for ``NAME.toml``: $CORL_PIPELINES, ./pipelines, the repo's."""
    dirs = []
    if os.environ.get("CORL_PIPELINES"):
        dirs.append(Path(os.environ["CORL_PIPELINES"]))
    dirs.append(Path.cwd() / "pipelines")
    dirs.append(Path(__file__).resolve().parents[2] / "pipelines")
    return dirs


def available_pipelines() -> list[str]:
    names = set()
    for d in pipeline_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)
