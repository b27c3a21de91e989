"""Run records: one JSON file per ``corl run`` under ``<cache root>/runs/``.

Why records: they are what ``corl runs`` lists (pipeline, task, seed, stages, scores) and what
``corl cache prune`` keeps: an artifact no record references is safe to delete.

A prune deletes only what it can prove unreferenced: when any record is unreadable (not
UTF-8, not JSON, not a record), it deletes nothing and names the file. Partial directories
(no manifest) that hold nothing resumable (no ``checkpoint.pt``) and that no live process is
building are removed even when a failed run's record still names them: there is nothing in
them a rerun could use.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corl.errors import CorlError
from corl.files import UnreadableFile, read_json
from corl.store.artifacts import CHECKPOINT, MANIFEST, CorruptArtifact, read_manifest, write_json_atomic
from corl.store.lock import ArtifactLock, LockHeld


class PruneRefused(CorlError):
    """``corl cache prune`` cannot prove what is unreferenced (unreadable run records)."""


#: Fields ``corl runs`` reads from a record, and their JSON types.
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "started": (int, float),
    "wall_time": (int, float, type(None)),
    "pipeline": (str,),
    "task": (str,),
    "status": (str,),
    "preset": (str, type(None)),
    "scores": (dict,),
    "seed": (int, type(None)),
}


def runs_dir(root: Path) -> Path:
    return root / "runs"


def new_record_path(root: Path, pipeline: str, task: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return runs_dir(root) / f"{stamp}-{pipeline}-{task}-s{seed}-{os.getpid()}-{time.time_ns() % 10**6:06d}.json"


def write_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def read_record(path: Path) -> dict[str, Any]:
    """One run record, checked for what ``runs`` and ``prune`` read; :class:`UnreadableFile` if not."""
    record = read_json(path, dict, "run record")
    stages = record.get("stages", [])
    if not isinstance(stages, list) or not all(
        isinstance(s, dict)
        and isinstance(s.get("dir", ""), str)
        and isinstance(s.get("name"), str)
        and isinstance(s.get("status"), str)
        and s["status"]
        for s in stages
    ):
        raise UnreadableFile(
            f"{path}: unreadable run record: 'stages' must be a list of stage objects with name, status and dir"
        )
    for name, kinds in RECORD_FIELDS.items():
        if name in record and not isinstance(record[name], kinds):
            raise UnreadableFile(
                f"{path}: unreadable run record: field {name!r} has the wrong type ({type(record[name]).__name__})"
            )
    scores = record.get("scores", {})
    if not all(isinstance(v, dict) for v in scores.values()):
        raise UnreadableFile(f"{path}: unreadable run record: 'scores' must map labels to objects")
    return record


def read_records(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(readable records newest first, one line per unreadable record)."""
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    directory = runs_dir(root)
    if not directory.is_dir():
        return out, problems
    for path in directory.glob("*.json"):
        try:
            record = read_record(path)
        except FileNotFoundError:
            continue  # removed while we listed
        except UnreadableFile as exc:
            problems.append(str(exc))
            continue
        record["_path"] = str(path)
        out.append(record)
    out.sort(key=lambda r: r.get("started", 0), reverse=True)
    return out, sorted(problems)


def load_records(root: Path) -> list[dict[str, Any]]:
    """All readable records, newest first (:func:`read_records` also says which were not)."""
    return read_records(root)[0]


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
    corrupt: str = ""  # why its manifest does not check out (then ``done`` is False)
    resumable: bool = False  # a partial artifact holding a checkpoint a rerun resumes from

    @property
    def state(self) -> str:
        if self.done:
            return "done"
        if self.locked:
            return "building"
        if self.corrupt:
            return "corrupt"
        return "partial" if self.resumable else "empty"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def scan_cache(root: Path, records: list[dict[str, Any]] | None = None) -> list[CacheEntry]:
    """Every artifact directory under ``root`` with its state and how many runs reference it.

    Done means what ``corl run`` means by it: a manifest that :func:`read_manifest` accepts
    (files are not re-hashed here; a run does that on use).
    """
    refs: dict[str, int] = {}
    for record in load_records(root) if records is None else records:
        for stage in record.get("stages", []):
            if stage.get("dir"):
                refs[stage["dir"]] = refs.get(stage["dir"], 0) + 1
    entries: list[CacheEntry] = []
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
            manifest, corrupt = None, ""
            try:
                manifest = read_manifest(art)
            except CorruptArtifact as exc:
                corrupt = str(exc)
            wall = manifest.get("wall_time") if manifest else None
            entries.append(
                CacheEntry(
                    task_dir.name,
                    art.name,
                    art,
                    manifest is not None,
                    _size(art),
                    refs.get(rel, 0),
                    ArtifactLock(art).is_locked_by_other(),
                    wall if isinstance(wall, (int, float)) else None,
                    corrupt,
                    (art / CHECKPOINT).is_file(),
                )
            )
    return entries


def prune_candidates(entries: list[CacheEntry]) -> list[CacheEntry]:
    """Unreferenced artifacts, and partial ones with nothing to resume; never a locked one."""
    return [e for e in entries if not e.locked and (e.referenced_by == 0 or e.state == "empty")]


def prune(root: Path, dry_run: bool = True) -> list[CacheEntry]:
    """Remove (or, dry, list) what :func:`prune_candidates` selects.

    Raises :class:`PruneRefused`, deleting nothing, when any run record is unreadable: an
    artifact only that record references would look unreferenced.
    """
    records, problems = read_records(root)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PruneRefused(
            f"cache prune deleted nothing: {problems[0]}{more}; an artifact only an unreadable "
            f"run record references cannot be told from an unreferenced one. Fix or remove "
            f"the record{'s' if len(problems) > 1 else ''} under {runs_dir(root)} and prune again"
        )
    victims = prune_candidates(scan_cache(root, records))
    if dry_run:
        return victims
    removed = []
    for entry in victims:
        lock = ArtifactLock(entry.dir)
        try:
            lock.acquire(wait=False)
        except LockHeld:
            continue  # a run started building it since the scan
        try:
            if entry.referenced_by and ((entry.dir / MANIFEST).exists() or (entry.dir / CHECKPOINT).exists()):
                continue  # no longer empty: the run holding it wrote something since the scan
            shutil.rmtree(entry.dir, ignore_errors=True)
            removed.append(entry)
        finally:
            lock.release()
            lock.path.unlink(missing_ok=True)
    return removed


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
        record = read_record(path)  # garbage there: one line naming the file
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
            continue  # an upstream run's stage (cvpo:train) is not this run's policy
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
    return (
        record.get("preset"),
        tuple(sorted(record.get("overrides") or [])),
        (record.get("dataset") or {}).get("sha256"),
    )


def describe_settings(record: dict[str, Any], label: str | None = None) -> str:
    """``quick, --set bc.mode=all`` (and the policy's label first, when known)."""
    parts = [label] if label else []
    parts.append(f"preset {record.get('preset')}" if record.get("preset") else "no preset")
    parts += [f"--set {o}" for o in record.get("overrides") or []]
    sha = (record.get("dataset") or {}).get("sha256")
    if sha:
        parts.append(f"data {str(sha)[:8]}")
    return ", ".join(parts)
