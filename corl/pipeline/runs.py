"""Run records: one JSON file per ``corl run`` under ``<cache root>/runs/``.

Why records: they are what ``corl runs`` lists (pipeline, task, seed, stages, scores) and what
``corl cache prune`` keeps: an artifact no record references is safe to delete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corl.pipeline.artifacts import MANIFEST, write_json_atomic
from corl.pipeline.lock import ArtifactLock


def runs_dir(root: Path) -> Path:
    return root / "runs"


def new_record_path(root: Path, pipeline: str, task: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return runs_dir(root) / f"{stamp}-{pipeline}-{task}-s{seed}-{os.getpid()}-{time.time_ns() % 10**6:06d}.json"


def write_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def load_records(root: Path) -> list[dict[str, Any]]:
    """All readable records, newest first."""
    out = []
    directory = runs_dir(root)
    if not directory.is_dir():
        return out
    for path in directory.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        record["_path"] = str(path)
        out.append(record)
    out.sort(key=lambda r: r.get("started", 0), reverse=True)
    return out


@dataclass
class CacheEntry:
    task: str
    name: str  # <kind>-<key>
    dir: Path
    done: bool
    size_bytes: int
    referenced_by: int
    locked: bool
    wall_time: float | None


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def scan_cache(root: Path) -> list[CacheEntry]:
    """Every artifact directory under ``root`` with its state and how many runs reference it."""
    refs: dict[str, int] = {}
    for record in load_records(root):
        for stage in record.get("stages", []):
            if stage.get("dir"):
                refs[stage["dir"]] = refs.get(stage["dir"], 0) + 1
    entries = []
    if not root.is_dir():
        return entries
    for task_dir in sorted(root.iterdir()):
        # runs/: the records; logs/: --logger output (corl.pipeline.loggers), neither is an artifact
        if not task_dir.is_dir() or task_dir.name in ("runs", "logs") or task_dir.name.startswith("."):
            continue
        for art in sorted(task_dir.iterdir()):
            if not art.is_dir() or art.name.startswith("."):
                continue
            rel = f"{task_dir.name}/{art.name}"
            manifest = None
            if (art / MANIFEST).exists():
                try:
                    manifest = json.loads((art / MANIFEST).read_text())
                except (OSError, json.JSONDecodeError):
                    manifest = None
            entries.append(CacheEntry(task_dir.name, art.name, art, manifest is not None, _size(art),
                                      refs.get(rel, 0), ArtifactLock(art).is_locked_by_other(),
                                      manifest.get("wall_time") if manifest else None))
    return entries


def prune(root: Path, dry_run: bool = True) -> list[CacheEntry]:
    """Remove (or, dry, list) artifacts no run record references; locked ones are kept."""
    victims = [e for e in scan_cache(root) if e.referenced_by == 0 and not e.locked]
    if not dry_run:
        for entry in victims:
            lock = ArtifactLock(entry.dir)
            lock.acquire(wait=False)
            try:
                shutil.rmtree(entry.dir, ignore_errors=True)
            finally:
                lock.release()
                lock.path.unlink(missing_ok=True)
    return victims


# ------------------------------------------------------------------------------ ids and settings
SHORT_ID_LENGTH = 6


def record_id(record: dict[str, Any]) -> str:
    """A record's full id: its file name without ``.json``."""
    return Path(record["_path"]).stem


def short_id(record: dict[str, Any]) -> str:
    """Six hex characters of the full id's sha1: what ``corl runs`` shows and ``--run`` accepts."""
    import hashlib

    return hashlib.sha1(record_id(record).encode()).hexdigest()[:SHORT_ID_LENGTH]


def find_records(root: Path, given: str) -> list[dict[str, Any]]:
    """Records matching ``given``: a record path, a full id, a short id, or a unique part of a full id."""
    path = Path(given).expanduser()
    if path.suffix == ".json" and path.is_file():
        record = json.loads(path.read_text())
        record["_path"] = str(path)
        return [record]
    records = load_records(root)
    exact = [r for r in records if record_id(r) == given or short_id(r) == given]
    return exact or [r for r in records if given in record_id(r)]


def policy_label(record: dict[str, Any], root: Path) -> str | None:
    """The label the run's last policy-producing stage gave its policy (``BC-Safe``, ``DRCORL``, ...)."""
    label = None
    for stage in record.get("stages", []):
        if ":" in stage.get("name", "") or not stage.get("dir"):
            continue  # a prerequisite run's stage (cvpo:train) is not this run's policy
        try:
            outputs = json.loads((root / stage["dir"] / MANIFEST).read_text()).get("outputs", {})
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(outputs.get("policy"), dict) and outputs.get("label"):
            label = str(outputs["label"])
    return label


def settings(record: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two runs of a pipeline on a task different methods or data, the seed aside:
    preset, ``--set`` overrides (sorted) and the dataset's sha256. ``corl eval PIPELINE`` refuses
    to pick between runs whose settings differ."""
    return (record.get("preset"), tuple(sorted(record.get("overrides") or [])),
            (record.get("dataset") or {}).get("sha256"))


def describe_settings(record: dict[str, Any], label: str | None = None) -> str:
    """``quick, --set bc.mode=all`` (and the policy's label first, when known)."""
    parts = [label] if label else []
    parts.append(f"preset {record.get('preset')}" if record.get("preset") else "no preset")
    parts += [f"--set {o}" for o in record.get("overrides") or []]
    sha = (record.get("dataset") or {}).get("sha256")
    if sha:
        parts.append(f"data {str(sha)[:8]}")
    return ", ".join(parts)
