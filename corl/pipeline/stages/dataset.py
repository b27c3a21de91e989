"""The ``dataset`` stage: locate and validate the task's dataset, keyed by its sha256.

Why no copy: datasets are hundreds of MB; the artifact records where the file is, its
sha256, which lookup step found it and the store's note (e.g. "corl's own sample, not
DSRL's"). Downstream stages load from the recorded path and re-verify the hash.

``source = "cvpo"`` / ``"mice"``: the data is what that online pipeline collects and exports
for the task's online counterpart (``OfflineCarCircle-v0`` -> ``SafetyCarCircle-v0``). The
fingerprint has the runner run ``pipelines/<source>.toml`` first (a prerequisite run: same
cache root, device, locks and resume; its ``train`` and ``export`` artifacts are cached like
any stage, so a second run reuses them), then takes the file from the export artifact's
outputs (never "the newest file": two collections cannot be confused) and keys the dataset
by its sha256 as for any other file. A dry run only plans the collection; when it is not
cached, the dataset's key (and every key after it) is honestly "pending".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corl.data.store import load_task_dataset
from corl.errors import ConfigError, CorlError, DatasetError, TaskError
from corl.pipeline.context import FingerprintContext, StageContext, StageResult, remember_dataset
from corl.pipeline.registry import register_stage
from corl.store.artifacts import cached_file_sha256

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


def _collected(fctx: FingerprintContext) -> dict[str, Any]:
    from corl.errors import did_you_mean
    from corl.pipeline.results import RunInterrupted, RunRequest
    from corl.pipeline.spec import load_spec

    cfg = fctx.config
    method = cfg.source
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
    prerequisite = getattr(fctx, "prerequisite", None)
    parent = getattr(fctx, "request", None)
    if prerequisite is None:
        raise CorlError(f"{label}: needs the pipeline runner to collect (plan with corl.pipeline.runner.plan_pipeline)")
    preset = cfg.source_preset or None
    if preset is None and parent is not None and parent.preset and parent.preset in load_spec(method).presets:
        preset = parent.preset
    sub = RunRequest(pipeline=method, task=task, preset=preset, seed=cfg.source_seed, overrides=list(cfg.source_set))
    try:
        pre = prerequisite(sub, label)
        exports = [s.name for s in pre.plan.stages if s.kind == "export"]
        if len(exports) != 1:
            raise ConfigError(f"{label}: pipelines/{method}.toml has {len(exports)} export stages, expected one")
        export = pre.artifacts.get(exports[0])
        problem = _export_problem(export, fctx.options.cache_root) if export is not None else None
        if problem and not pre.dry_run:  # the file left the store or changed: export it again (train is cached)
            _discard(export.dir)
            pre = prerequisite(sub, f"{label}, re-export ({problem})")
            export = pre.artifacts.get(exports[0])
            problem = _export_problem(export, fctx.options.cache_root) if export is not None else "not exported"
            if problem:
                raise DatasetError(f"{label}: {problem} right after exporting it again")
    except (RunInterrupted, KeyboardInterrupt):
        raise
    except CorlError as exc:  # name the option that started the collection
        if type(exc) in (CorlError, ConfigError, DatasetError, TaskError) and not str(exc).startswith(label):
            raise type(exc)(f"{label} ({sub.command()}): {exc}") from None
        raise
    command = sub.command()
    if export is None or problem:
        why = f"after the {method} collection" + (f" re-exports ({problem})" if problem else " runs")
        return {
            "key": {"pending": command},
            "pending": why,
            "sha256": None,
            "path": None,
            "origin": f"{method} export (pending)",
            "note": "",
            "collection": {"command": command},
        }
    out = export.outputs
    sha = out["sha256"]
    train = next((a.dir.name for name, a in pre.artifacts.items() if name != exports[0]), None)
    collection = {
        "pipeline": method,
        "task": task,
        "preset": preset,
        "seed": cfg.source_seed,
        "overrides": list(cfg.source_set),
        "command": command,
        "export": export.dir.name,
        "train": train,
    }
    return {
        "key": {"sha256": sha},
        "sha256": sha,
        "path": str(Path(out["path"]).resolve()),
        "origin": f"{method} export {export.dir.name}",
        "note": f"collected by {method.upper()} on {task} ({command})",
        "collection": collection,
    }


def _export_problem(export: Any, cache_root: Path) -> str | None:
    """Why an export artifact's file cannot be used as it stands (None: it can)."""
    out = export.outputs
    if "path" not in out:
        raise ConfigError(
            f"the export {export.dir.name} wrote format {out.get('format')!r}, not a DSRL file; "
            "drop export.format from dataset.source_set"
        )
    path = Path(out["path"])
    if not path.is_file():
        return f"{path} is gone"
    if cached_file_sha256(path, cache_root) != out["sha256"]:
        return f"{path} changed since {export.dir.name} wrote it"
    return None


def _discard(directory: Path) -> None:
    from corl.store.artifacts import discard
    from corl.store.lock import ArtifactLock

    lock = ArtifactLock(directory)
    lock.acquire(wait=True)
    try:
        discard(directory)
    finally:
        lock.release()


# ------------------------------------------------------------------------------ the stage
@register_stage(
    "dataset",
    config=DatasetConfig,
    version="1",
    seeded=False,
    fingerprint=locate,
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
