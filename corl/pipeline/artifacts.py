"""Artifact directories: keys, manifests, atomic writes and corruption checks.

An artifact is ``<root>/<task>/<kind>-<key>/``. Its key hashes everything that determines its
content (stage kind, the kind's code version, the resolved config, the input artifacts' keys,
the dataset's sha256 and, for seeded kinds, the seed), so equal keys mean reusable results and
any change of those gives a new directory, leaving the old one for other runs.

``manifest.json`` is written last, by rename, so its presence means "done". It stores the
sha256 of every file the stage wrote; a cache hit re-hashes them, so a truncated or altered
weights file is detected (and the artifact rebuilt) instead of being silently loaded.
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

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
CURVES = "training_curves.png"  # drawn from metrics.jsonl (corl.pipeline.curves): a view, not content
#: Files in an artifact directory that are bookkeeping, not content (not hashed).
BOOKKEEPING = (MANIFEST, METRICS, CHECKPOINT, CURVES)
KEY_LENGTH = 12


def cache_root(explicit: str | Path | None = None) -> Path:
    """``--checkpoints DIR``, else ``$CORL_CHECKPOINTS``, else ``./checkpoints``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("CORL_CHECKPOINTS")
    return Path(env).expanduser() if env else Path.cwd() / "checkpoints"


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
    """Write JSON to a temporary sibling, fsync, then rename: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(value, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptArtifact(f"{path}: unreadable manifest ({exc.__class__.__name__})") from None
    if not isinstance(manifest, dict) or "key" not in manifest or "files" not in manifest:
        raise CorruptArtifact(f"{path}: manifest lacks key/files")
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
def cached_file_sha256(path: str | Path, root: Path) -> str:
    """sha256 of a (large) file, memoised by (path, size, mtime) under the cache root.

    Planning needs the dataset's hash on every run, cached reruns included; re-reading a
    100 MB dataset each time would dominate a cached run. The memo is keyed by size and
    mtime_ns, so a rewritten file is re-hashed; stages that load the file verify for real.
    """
    path = Path(path).resolve()
    st = path.stat()
    memo_path = root / ".hash-cache.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    ident = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if ident in memo:
        return memo[ident]
    digest = file_sha256(path)
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{path}|")}
    memo[ident] = digest
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(memo_path, memo)
    except OSError:
        pass
    return digest
