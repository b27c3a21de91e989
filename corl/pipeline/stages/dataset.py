"""The ``dataset`` stage: locate and validate the task's dataset, keyed by its sha256.

Why no copy: datasets are hundreds of MB; the artifact records where the file is, its
sha256, which lookup step found it and the store's note (e.g. "corl's own sample, not
DSRL's"). Downstream stages load from the recorded path and re-verify the hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corl.pipeline.artifacts import cached_file_sha256
from corl.pipeline.context import FingerprintContext, StageContext, StageResult, read_task_dataset, remember_dataset
from corl.pipeline.registry import register_stage


@dataclass
class DatasetConfig:
    """``path``: a dataset file to use instead of ``--dataset`` / the store lookup ("" = lookup)."""

    path: str = ""


def locate(fctx: FingerprintContext) -> dict[str, Any]:
    from corl.data.store import locate_dataset

    explicit = fctx.config.path or fctx.options.dataset_path
    source = locate_dataset(fctx.task, path=explicit or None, offline=fctx.options.offline)
    sha = source.sha256 or cached_file_sha256(source.path, fctx.options.cache_root)
    return {"key": {"sha256": sha}, "sha256": sha, "path": str(Path(source.path).resolve()),
            "origin": source.origin, "note": source.note}


@register_stage("dataset", config=DatasetConfig, version="1", seeded=False, fingerprint=locate,
                description="locate and validate the task's dataset (no copy)")
def dataset_stage(ctx: StageContext) -> StageResult:
    fp = ctx.fingerprint
    ctx.progress(0, 1)
    data = read_task_dataset(ctx.task, fp["path"])
    if data.metadata.get("sha256") != fp["sha256"]:
        from corl.errors import DatasetError

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
    outputs["collector"] = data.metadata.get("collector")
    return StageResult(metrics=metrics, outputs=outputs)
