"""The ``dataset`` stage: locate and validate the task's dataset, keyed by its sha256.

Why no copy: datasets are hundreds of MB; the artifact records where the file is, its
sha256, which lookup step found it and the store's note (e.g. "corl's own sample, not
DSRL's"). Downstream stages load from the recorded path and re-verify the hash.

``source = "cvpo"`` / ``"mice"``: the data is what that online pipeline collects and exports
for the task's online counterpart (``OfflineCarCircle-v0`` -> ``SafetyCarCircle-v0``). The
kind's ``upstream`` hook names that run (``corl run cvpo --task SafetyCarCircle-v0 ...``); the
planner adds its stages to the same plan as ``cvpo:train`` and ``cvpo:export``, and the
export artifact arrives as the input ``collection``. The fingerprint takes the file from
that artifact's outputs (never "the newest file": two collections cannot be confused) and
keys the dataset by its sha256 as for any other file (the input's key is not key material,
so a re-export of the same bytes keeps every key). While the export is not built, the
dataset's key (and every key after it) is "pending"; the runner keys it once the export ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corl.data.store import load_task_dataset
from corl.errors import ConfigError, DatasetError, TaskError
from corl.pipeline.context import FingerprintContext, StageContext, StageResult, UpstreamRun, remember_dataset
from corl.pipeline.registry import register_stage
from corl.store.artifacts import cached_file_sha256

#: The input role under which a collected dataset's ``export`` artifact arrives (not keyed).
COLLECTION = "collection"

#: Left out of the artifact key while at their defaults, so existing dataset keys stay valid.
_IF_SET = {"key": "if_set"}


@dataclass
class DatasetConfig:
    """Where the task's dataset comes from.

    ``path``: a dataset file to use instead of ``--dataset`` / the store lookup ("" = lookup).
    ``source``: "" = that lookup; "cvpo" or "mice" = the file that pipeline exports for the
    task's online counterpart, collected first when not cached (see the module docstring).
    ``source_preset``: the collection's preset ("" = this run's ``--preset`` when the
    collection pipeline has one of that name, else none). ``source_seed``: the collection's
    seed (not this run's ``--seed``: every seed of the offline learner trains on the same
    data, as with DSRL's datasets). ``source_set``: the collection's ``--set`` overrides,
    e.g. ``["train.steps=20000", "train.cost_limits=[10.0, 20.0]"]``.
    """

    path: str = ""
    source: str = field(default="", metadata=_IF_SET)
    source_preset: str = field(default="", metadata=_IF_SET)
    source_seed: int = field(default=0, metadata=_IF_SET)
    source_set: list[str] = field(default_factory=list, metadata=_IF_SET)


def locate(fctx: FingerprintContext) -> dict[str, Any]:
    from corl.data.store import locate_dataset

    if fctx.config.source:
        return _collected(fctx)
    explicit = fctx.config.path or fctx.options.dataset_path
    source = locate_dataset(fctx.task, path=explicit or None, offline=fctx.options.offline)
    sha = source.sha256 or cached_file_sha256(source.path, fctx.options.cache_root)
    return {
        "key": {"sha256": sha},
        "sha256": sha,
        "path": str(Path(source.path).resolve()),
        "origin": source.origin,
        "note": source.note,
    }


# ------------------------------------------------------------------------------ dataset.source
def collectors() -> list[str]:
    """The valid ``dataset.source`` methods (each has ``pipelines/<name>.toml``)."""
    from corl.pipeline.stages.online import METHODS

    return sorted(METHODS)


def online_task(task: Any, source: str) -> str:
    """The task a collector trains on for ``task``: its online counterpart (DSRL tasks), or itself."""
    if task.kind == "online":
        return task.name
    if task.kind == "dsrl" and task.online_task:
        return task.online_task
    raise TaskError(
        f"dataset.source={source}: task {task.name} has no online counterpart to collect on "
        f"(DSRL Offline* and Safety* tasks have one); use the dataset lookup or --dataset"
    )


def collection(fctx: FingerprintContext) -> UpstreamRun | None:
    """The ``upstream`` hook: with ``source`` set, the collection run whose ``export`` artifact
    is the data (``corl run <source> --task <online task>``); the planner adds its stages to
    the plan as ``<source>:train``, ``<source>:export``."""
    from corl.errors import did_you_mean
    from corl.pipeline.results import RunRequest
    from corl.pipeline.spec import load_spec

    cfg = fctx.config
    method = cfg.source
    if not method:
        return None
    valid = collectors()
    if method not in valid:
        raise ConfigError(
            f"dataset.source: unknown source {method!r}{did_you_mean(method, valid)}; valid values: "
            f'{", ".join(valid)}, or "" (the task\'s dataset lookup)'
        )
    if cfg.path or fctx.options.dataset_path:
        other = "dataset.path" if cfg.path else "--dataset"
        raise ConfigError(f"dataset.source={method} and {other} both name the dataset; give one of them")
    label = f"dataset.source={method}"
    task = online_task(fctx.task, method)
    spec = load_spec(method)
    preset = cfg.source_preset or None
    parent = fctx.request
    if preset is None and parent is not None and parent.preset and parent.preset in spec.presets:
        preset = parent.preset
    exports = [name for name, stage in spec.stages.items() if stage.kind.name == "export"]
    if len(exports) != 1:
        raise ConfigError(f"{label}: pipelines/{method}.toml has {len(exports)} export stages, expected one")
    sub = RunRequest(pipeline=method, task=task, preset=preset, seed=cfg.source_seed, overrides=list(cfg.source_set))
    return UpstreamRun(sub, exports[0], role=COLLECTION, label=label)


def _collected(fctx: FingerprintContext) -> dict[str, Any]:
    """The fingerprint of a collected dataset: the export artifact's file, keyed by its sha256
    (never "the newest file": two collections cannot be confused); pending until it is built."""
    from corl.pipeline.stages.export import export_problem

    up = fctx.upstream
    if up is None:
        raise ConfigError("dataset.source: plan the run with corl.pipeline.runner.plan_pipeline")
    method, command = fctx.config.source, up.request.command()
    export = fctx.inputs.get(COLLECTION)
    if export is None:
        return {
            "key": {"pending": command},
            "pending": f"after the {method} collection runs",
            "sha256": None,
            "path": None,
            "origin": f"{method} export (pending)",
            "note": "",
            "collection": {"command": command},
        }
    out = export.outputs
    if "path" not in out:
        raise ConfigError(
            f"{up.label}: the export {export.dir.name} wrote format {out.get('format')!r}, not a DSRL file; "
            "drop export.format from dataset.source_set"
        )
    problem = export_problem(export, fctx.options)
    if problem:  # the planner rebuilds a stale export before this runs: only a race gets here
        raise DatasetError(f"{up.label}: {problem}; rerun")
    sha = out["sha256"]
    collection = {
        "pipeline": method,
        "task": up.request.task,
        "preset": up.request.preset,
        "seed": up.request.seed,
        "overrides": list(up.request.overrides),
        "command": command,
        "export": export.dir.name,
        "train": next((i["dir"] for i in export.manifest.get("inputs", {}).values()), None),
    }
    return {
        "key": {"sha256": sha},
        "sha256": sha,
        "path": str(Path(out["path"]).resolve()),
        "origin": f"{method} export {export.dir.name}",
        "note": f"collected by {method.upper()} on {up.request.task} ({command})",
        "collection": collection,
    }


# ------------------------------------------------------------------------------ the stage
@register_stage(
    "dataset",
    config=DatasetConfig,
    version="1",
    seeded=False,
    fingerprint=locate,
    upstream=collection,
    description="locate and validate the task's dataset (no copy), or collect it online (source)",
)
def dataset_stage(ctx: StageContext) -> StageResult:
    fp = ctx.fingerprint
    ctx.progress(0, 1)
    data = load_task_dataset(ctx.task, path=fp["path"])
    if data.metadata.get("sha256") != fp["sha256"]:
        raise DatasetError(f"{fp['path']}: file changed while planning (sha256 differs); rerun")
    remember_dataset(data)
    returns = data.episode_returns()
    limit = ctx.task.cost_limit
    metrics = {
        "transitions": float(len(data)),
        "episodes": float(len(returns["reward"])),
        "reward_return_mean": float(returns["reward"].mean()) if len(data) else 0.0,
        "cost_return_mean": float(returns["cost"].mean()) if len(data) else 0.0,
    }
    if limit is not None:
        metrics["safe_episodes"] = float((returns["cost"] <= limit).sum())
    ctx.progress(1, 1)
    outputs = {k: fp[k] for k in ("path", "sha256", "origin", "note")}
    if fp.get("collection"):
        outputs["collection"] = fp["collection"]
    outputs["collector"] = data.metadata.get("collector")
    return StageResult(metrics=metrics, outputs=outputs)
