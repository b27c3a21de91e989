"""Artifact directories: keys, manifests, atomic writes and corruption checks.

An artifact is ``<root>/<task>/<kind>-<key>/``. Its key hashes everything that determines its
content (stage kind, the kind's code version, the resolved config, the input artifacts' keys,
the dataset's sha256 and, for seeded kinds, the seed), so equal keys mean reusable results and
any change of those gives a new directory, leaving the old one for other runs.

``manifest.json`` is written last, by rename, so its presence means "done". It stores the
sha256 of every file the stage wrote (``metrics.jsonl`` included); a cache hit re-hashes them,
so a truncated or altered file is detected (and the artifact rebuilt) instead of being
silently loaded. A manifest counts as done only when it has every field downstream stages
read (:data:`MANIFEST_FIELDS`, with their types): a forged or half-edited one is corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from corl.data.hashing import file_sha256
from corl.errors import CorlError
from corl.files import DiskError, UnreadableFile, read_json
from corl.files import write_json_atomic as _write_json_atomic

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
CURVES = "training_curves.png"  # drawn from metrics.jsonl (corl.pipeline.curves): a view, not content
#: Files in an artifact directory that are bookkeeping, not content (not hashed): the manifest
#: itself, the resume checkpoint (removed when the stage finishes) and the curves' PNG (redrawn from
#: metrics.jsonl). ``metrics.jsonl`` is
#: content: the curves of a finished stage are part of its result.
BOOKKEEPING = (MANIFEST, CHECKPOINT, CURVES)
#: What a done manifest must hold, and the JSON type of each (what downstream stages read).
MANIFEST_FIELDS: dict[str, type] = {"key": str, "kind": str, "files": dict, "outputs": dict, "final_metrics": dict}
#: Files of a cache root that are not artifacts.
HASH_CACHE = ".hash-cache.json"
KEY_LENGTH = 12


def cache_root(explicit: str | Path | None = None) -> Path:
    """``--checkpoints DIR``, else ``$CORL_CHECKPOINTS``, else ``./checkpoints``."""
    if explicit:
        root, where = Path(explicit).expanduser(), "--checkpoints"
    elif os.environ.get("CORL_CHECKPOINTS"):
        root, where = Path(os.environ["CORL_CHECKPOINTS"]).expanduser(), "$CORL_CHECKPOINTS"
    else:
        root, where = Path.cwd() / "checkpoints", "cache root"
    if root.exists() and not root.is_dir():
        raise DiskError(f"{where} {root}: is a file, expected a directory (the artifact cache root)")
    return root


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def artifact_key(
    kind: str,
    version: str,
    config: dict[str, Any],
    input_keys: dict[str, str],
    dataset_sha256: str | None,
    seed: int | None,
    fingerprint: dict[str, Any] | None = None,
) -> str:
    """The content key of a stage's artifact (12 hex chars of a sha256)."""
    material = {
        "kind": kind,
        "version": version,
        "config": config,
        "inputs": input_keys,
        "dataset_sha256": dataset_sha256,
        "seed": seed,
        "fingerprint": fingerprint or {},
    }
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()[:KEY_LENGTH]


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary sibling, fsync, then rename: readers see old or new, never half
    (:func:`corl.files.atomic_write`: a full or read-only disk is one line naming the path)."""
    _write_json_atomic(path, value)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("corl-saferl", "torch", "numpy", "gymnasium", "dsrl", "bullet-safety-gym", "h5py"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def content_files(directory: Path) -> dict[str, str]:
    """sha256 of every regular content file (relative path -> hex), bookkeeping excluded."""
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if not path.is_file() or rel in BOOKKEEPING or path.name.startswith("."):
            continue
        out[rel] = file_sha256(path)
    return out


@dataclass
class Artifact:
    """A finished (manifest-bearing) artifact directory."""

    dir: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def outputs(self) -> dict[str, Any]:
        return self.manifest.get("outputs", {})

    @property
    def metrics(self) -> dict[str, float]:
        return self.manifest.get("final_metrics", {})


class CorruptArtifact(Exception):
    """An artifact whose manifest or files do not check out; the message says why."""


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest, None when absent (not done); raises CorruptArtifact when unreadable."""
    path = directory / MANIFEST
    try:
        manifest = read_json(path, dict, "manifest")
    except FileNotFoundError:
        return None
    except UnreadableFile as exc:
        raise CorruptArtifact(str(exc)) from None
    missing = [name for name in MANIFEST_FIELDS if name not in manifest]
    if missing:
        raise CorruptArtifact(f"{path}: manifest lacks {', '.join(missing)}")
    for name, kind in MANIFEST_FIELDS.items():
        if not isinstance(manifest[name], kind):
            raise CorruptArtifact(
                f"{path}: manifest field {name!r} is a {type(manifest[name]).__name__}, expected a {kind.__name__}"
            )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise CorruptArtifact(f"{path}: manifest field 'files' must map file names to sha256 strings")
    return manifest


def verify(directory: Path, expected_key: str | None = None) -> Artifact | None:
    """A verified artifact, None if not done; raises CorruptArtifact on any mismatch."""
    manifest = read_manifest(directory)
    if manifest is None:
        return None
    if expected_key is not None and manifest["key"] != expected_key:
        raise CorruptArtifact(f"{directory}: manifest key {manifest['key']} != directory key {expected_key}")
    for rel, digest in manifest["files"].items():
        path = directory / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise CorruptArtifact(f"{directory / MANIFEST}: file entry {rel!r} points outside the artifact")
        if not path.is_file():
            raise CorruptArtifact(f"{path}: missing")
        actual = file_sha256(path)
        if actual != digest:
            raise CorruptArtifact(f"{path}: sha256 mismatch (manifest {digest[:12]}, file {actual[:12]})")
    return Artifact(directory, manifest)


def discard(directory: Path) -> None:
    """Remove an artifact directory's contents (used to rebuild a corrupt artifact)."""
    if directory.exists():
        trash = directory.with_name(f".{directory.name}.trash.{os.getpid()}.{time.time_ns()}")
        os.replace(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)


# ------------------------------------------------------------------------ file hash cache
def file_identity(path: Path) -> str:
    """What must stay equal for a memoised hash to be reused: path, device, inode, size,
    mtime_ns and ctime_ns. ``ctime`` is the point: every write to a file (and every
    ``utime`` that restores its mtime) sets ctime to now, and no user call can set it back,
    so an in-place edit with its mtime restored still changes the identity."""
    st = path.stat()
    return f"{path}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def cached_file_sha256(path: str | Path, root: Path) -> str:
    """sha256 of a (large) file, memoised by :func:`file_identity` under the cache root.

    Planning needs the dataset's hash on every run, cached reruns included; re-reading a
    100 MB dataset each time would dominate a cached run. The memo is keyed by the file's
    identity including inode and ctime (see :func:`file_identity`), so any write to the file
    since it was hashed, mtime restored or not, makes it hashed again; stages that load the
    file also verify its content hash for real. A memo that is unreadable (garbage, not a JSON
    object) is rebuilt: it holds nothing that cannot be recomputed.
    """
    path = Path(path).resolve()
    memo_path = root / HASH_CACHE
    try:
        memo = read_json(memo_path, dict, "hash cache")
    except (FileNotFoundError, UnreadableFile):
        memo = {}
    ident = file_identity(path)
    cached = memo.get(ident)
    if isinstance(cached, str) and len(cached) == 64:
        return cached
    digest = file_sha256(path)
    if file_identity(path) != ident:  # written while we hashed: do not memoise a moving target
        return digest
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{path}|")}
    memo[ident] = digest
    try:
        _write_json_atomic(memo_path, memo)
    except CorlError:
        pass  # a read-only cache root: hashing again next time is the only cost
    return digest
