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
        if not task_dir.is_dir() or task_dir.name in ("runs",) or task_dir.name.startswith("."):
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
