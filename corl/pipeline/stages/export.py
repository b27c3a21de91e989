"""The ``export`` stage: a train stage's recorded episodes as a dataset others can load.

Why a stage: the dataset a collection produces is an artifact like any other, keyed by the
episodes it came from and the export settings, so ``dataset.source = cvpo`` and a sweep reuse
it. It writes the episodes of a ``cvpo_train`` / ``mice_train`` artifact as a DSRL-format HDF5
into the dataset store (``$CORL_DATASETS`` or ./datasets, so ``corl datasets``, ``--dataset``
and dsrl's own loader find it), or as a Minari dataset in the local Minari store, optionally
through DSRL's reward/cost density filter. The artifact keeps the file's path and sha256.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corl.data.formats.episodes import read_episodes, write_episodes
from corl.errors import ConfigError, CorlError
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage


@dataclass
class ExportConfig:
    """Write the train stage's episodes as a dataset.

    ``format``: "dsrl" (an HDF5 file in the dataset store, ``$CORL_DATASETS`` or ./datasets) or
    "minari" (a dataset in the local Minari store). ``name``: file stem / Minari id; "" =
    ``<task>-<method>-<key8>`` (key8: the export artifact's key, so different filters or data
    never overwrite each other). ``density_filter``: DSRL's reward/cost grid filter with its
    per-task settings at ``density`` (seeded by ``--seed``).
    """

    format: str = "dsrl"
    name: str = ""
    density_filter: bool = False
    density: float = 0.5
    overwrite: bool = True


def _offline_name(task: Any) -> str:
    """The DSRL task recorded from this online task (its density-filter grid), else the task itself."""
    from corl.tasks import get_task, task_names

    for name in task_names():
        try:
            if get_task(name).online_task == task.name:
                return name
        except Exception:
            continue
    return task.name


def _minari_id(name: str) -> str:
    env = re.sub(r"\W", "", name.split("-v")[0])
    return env


def _export_destination(fctx: Any) -> dict[str, Any]:
    """Where the file goes joins the export's key: the same episodes exported with another
    ``CORL_DATASETS`` (or Minari store) must write there, not be served from the cache."""
    from corl.data.store import store_dir

    if fctx.config.format == "minari":
        where = os.environ.get("MINARI_DATASETS_PATH") or str(Path("~/.minari/datasets").expanduser())
    else:
        where = str(store_dir().resolve())
    return {"key": {"destination": where}}


def export_problem(artifact: Any, options: Any) -> str | None:
    """The ``stale`` hook: why a done export's dataset file cannot be used as it stands (it
    left the store or changed since), or None. The planner then marks the export ``stale``
    and the runner builds it again from the cached episodes (same bytes, same sha256)."""
    from corl.store.artifacts import cached_file_sha256

    out = artifact.outputs
    if "path" not in out:  # a Minari export: the store is Minari's
        return None
    path = Path(out["path"])
    if not path.is_file():
        return f"{path} is gone"
    if cached_file_sha256(path, options.cache_root) != out["sha256"]:
        return f"{path} changed since {artifact.dir.name} wrote it"
    return None


@register_stage(
    "export",
    config=ExportConfig,
    version="1",
    inputs=("episodes",),
    fingerprint=_export_destination,
    stale=export_problem,
    description="write recorded episodes as a DSRL HDF5 in the dataset store (or a Minari dataset)",
)
def export_stage(ctx: StageContext) -> StageResult:
    """The dataset file lives in the store, not the artifact, so ``corl datasets``, ``--dataset``
    and other tools find it; the artifact keeps its path and sha256 (and the filter report)."""
    from corl.data.dataset import TransitionDataset
    from corl.data.hashing import file_sha256
    from corl.data.store import store_dir

    cfg: ExportConfig = ctx.config
    if cfg.format not in ("dsrl", "minari"):
        raise ConfigError(f"{ctx.name}.format: expected 'dsrl' or 'minari', got {cfg.format!r}")
    src = ctx.input("episodes")
    if "episodes_file" not in src.outputs:
        raise CorlError(f"{ctx.name}: input {src.kind!r} recorded no episodes (expected cvpo_train or mice_train)")
    ctx.progress(0, 2)
    arrays, cols, meta = read_episodes(src.dir / src.outputs["episodes_file"])
    dataset = TransitionDataset.from_numpy(arrays, meta)
    report: dict[str, Any] = {}
    if cfg.density_filter:
        from corl.data.filtering import density_config_for, density_filter

        dataset, report = density_filter(dataset, density_config_for(_offline_name(ctx.task), cfg.density, ctx.seed))
        keep = _kept_episodes(cols, dataset)
        ok = len(keep) == dataset.num_episodes and (len(keep) == 0 or keep[-1] < len(cols.get("reward", [])))
        cols = {k: v[keep] for k, v in cols.items()} if ok else {}
        dataset.metadata.pop("selected_episodes", None)
        report = {k: v for k, v in report.items() if k != "config"}
    if len(dataset) == 0:
        raise CorlError(f"{ctx.name}: no episode left to export (density filter dropped all); use density_filter=false")
    method = src.outputs.get("method", "online")
    key8 = ctx.out_dir.name.rsplit("-", 1)[-1][:8]
    dataset.metadata.update({"train_artifact": src.dir.name, "exported_by": "corl export"})
    ctx.progress(1, 2)
    outputs: dict[str, Any] = {
        "format": cfg.format,
        "transitions": len(dataset),
        "episodes": dataset.num_episodes,
        "cost_limits": src.outputs.get("cost_limits"),
        "method": method,
    }
    if cfg.format == "dsrl":
        name = cfg.name or f"{ctx.task.name}-{method}-{key8}"
        path = (store_dir() / f"{name}.hdf5").resolve()
        if path.exists() and not cfg.overwrite:
            raise CorlError(f"{path} exists; set {ctx.name}.overwrite=true or another {ctx.name}.name")
        episodes = [dict(zip(cols, vals)) for vals in zip(*[v.tolist() for v in cols.values()])] if cols else []
        write_episodes(dataset.to_numpy(), episodes, {k: v for k, v in dataset.metadata.items()}, path)
        outputs.update(path=str(path), sha256=file_sha256(path))
    else:
        from corl.data.formats.minari import export_minari

        dataset_id = cfg.name or f"{_minari_id(ctx.task.name)}-{method}-{key8}-v0"
        location = export_minari(
            dataset, dataset_id, ctx.task, overwrite=cfg.overwrite, algorithm_name=f"corl-{method}"
        )
        outputs["episode_metadata"] = _annotate_minari(Path(location), cols)
        outputs.update(dataset_id=dataset_id, minari_path=location)
    if report:
        outputs["density_filter"] = report
    ctx.progress(2, 2)
    returns = dataset.episode_returns()
    metrics = {
        "episodes": float(dataset.num_episodes),
        "transitions": float(len(dataset)),
        "reward_return_mean": float(returns["reward"].mean()),
        "cost_return_mean": float(returns["cost"].mean()),
    }
    return StageResult(metrics=metrics, outputs=outputs)


def _annotate_minari(location: Path, cols: dict[str, np.ndarray]) -> bool:
    """Per-episode metadata as attributes ``corl_<name>`` of each Minari episode group.

    Only when Minari episodes and corl episodes correspond one to one (the exporter splits an
    episode whose next observations are not contiguous; the collector never produces those).
    """
    import h5py

    files = sorted(location.glob("data/*.hdf5"))
    if not cols or not files:
        return False
    with h5py.File(files[0], "a") as handle:
        groups = sorted((k for k in handle if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        if len(groups) != len(cols["reward"]):
            return False
        for i, name in enumerate(groups):
            for key, values in cols.items():
                handle[name].attrs[f"corl_{key}"] = values[i]
    return True


def _kept_episodes(cols: dict[str, np.ndarray], after: Any) -> np.ndarray:
    """Which episodes the density filter kept, by matching (reward, cost, length) in order.

    ``density_filter`` keeps episodes in their original order, so one ordered pass matches them.
    """
    if not cols:
        return np.zeros(0, dtype=int)
    ret = after.episode_returns()
    keep, i = [], 0
    for r, c, n in zip(ret["reward"], ret["cost"], ret["length"]):
        while i < len(cols["reward"]) and not (
            cols["length"][i] == n
            and abs(cols["reward"][i] - r) < 1e-3 * (1 + abs(r))
            and abs(cols["cost"][i] - c) < 1e-3 * (1 + abs(c))
        ):
            i += 1
        keep.append(i)
        i += 1
    return np.asarray(keep, dtype=int)


def find_export(task: Any, source: str) -> Path:
    """The newest exported dataset of ``source`` ("cvpo", "mice" or a file stem) for ``task``.

    A convenience for scripts and tests (``--dataset "$(...)"``): an offline task
    (``OfflineCarCircle-v0``) finds the exports of its online task (``SafetyCarCircle-v0``),
    which is what ``corl run cvpo --task SafetyCarCircle-v0`` writes; the newest file wins.
    The ``dataset`` stage's ``source`` option does not use it: it takes the file from the
    export artifact of the exact collection it ran or reused, so two collections are never
    confused (see ``corl/pipeline/stages/dataset.py``).
    """
    from corl.data.store import store_dir
    from corl.errors import DatasetError

    root = store_dir()
    explicit = root / f"{source}.hdf5"
    if explicit.is_file():
        return explicit
    names = {task.name, getattr(task, "online_task", None) or task.name}
    found = sorted({p for n in names for p in root.glob(f"{n}-{source}-*.hdf5")}, key=lambda p: p.stat().st_mtime)
    if not found:
        online = getattr(task, "online_task", None) or task.name
        raise DatasetError(
            f"no {source} export for {task.name} in {root}; create one with: corl run {source} --task {online}"
        )
    return found[-1]
