"""Where a task's dataset comes from: one lookup order, recorded with every run.

For ``--task T`` the first hit wins (design "Datasets"):

1. ``explicit``   -- the ``--dataset PATH`` the user gave (missing: an error, no fallback,
   because silently training on something else would be worse).
2. ``store``      -- ``$CORL_DATASETS/T.hdf5`` (default ``./datasets``): corl's own store.
3. ``dsrl-cache`` -- DSRL's cache, ``$DSRL_DATASET_DIR`` or ``~/.dsrl/datasets``, under DSRL's
   file name (``task.dataset_file``). For D4RL tasks the cache is ``$D4RL_DATASET_DIR`` or
   ``~/.d4rl/datasets`` instead (origin ``d4rl-cache``). A file with a ``.sha256`` sidecar
   (written by our downloader) is re-hashed; a mismatch means corrupt, so it is skipped.
4. ``download``   -- DSRL's file from its current host (Hugging Face, or ``$CORL_DSRL_MIRROR``)
   into DSRL's cache, only when online (``offline=False``, or ``offline=None`` and
   ``CORL_OFFLINE`` unset) and with a short timeout (``$CORL_DOWNLOAD_TIMEOUT``, default
   10 s). A failed download is noted and the search goes on. D4RL files are never downloaded.
5. ``sample``     -- the bundled ``datasets/samples/T.hdf5`` next to the package (or
   ``$CORL_SAMPLES_DIR``). It is corl's own small collected sample, not DSRL's data, and the
   note says so, because numbers trained on it are not comparable with published ones.

Nothing found: one-line :class:`DatasetError` naming every place searched and the commands
that would produce the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from corl.data.download import Progress, download_file, dsrl_url, read_sidecar, sidecar_path, verify_file
from corl.data.hashing import file_sha256
from corl.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover
    from corl.data.dataset import TransitionDataset
    from corl.tasks import TaskSpec

Origin = Literal["explicit", "store", "dsrl-cache", "d4rl-cache", "download", "sample"]

SAMPLE_NOTE = (
    "corl's own collected sample, not {owner}'s dataset: results are not comparable with published {owner} numbers"
)
DEFAULT_TIMEOUT_S = 10.0
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class DatasetSource:
    """Where a task's data was found, which step of the lookup found it, and anything to tell the user."""

    path: Path
    origin: Origin
    note: str = ""
    sha256: str | None = None  # known when the lookup already hashed the file (verified download)


@dataclass(frozen=True)
class LocalDataset:
    """One dataset file on this machine, for ``corl datasets list``."""

    location: str  # store, dsrl-cache, d4rl-cache or sample
    task: str  # best guess of the task it belongs to ("?" when unknown)
    size_mb: float
    checksum: str  # "sidecar" when a recorded sha256 exists, "-" otherwise
    path: str


# --------------------------------------------------------------------------- places
def store_dir() -> Path:
    """corl's own dataset store: ``$CORL_DATASETS`` or ``./datasets``."""
    return Path(os.environ.get("CORL_DATASETS") or "datasets")


def dsrl_cache_dir() -> Path:
    """DSRL's download cache, as dsrl itself resolves it."""
    env = os.environ.get("DSRL_DATASET_DIR")
    return Path(env) if env else Path.home() / ".dsrl" / "datasets"


def d4rl_cache_dir() -> Path:
    """D4RL's download cache, as d4rl itself resolves it."""
    env = os.environ.get("D4RL_DATASET_DIR")
    return Path(env) if env else Path.home() / ".d4rl" / "datasets"


def samples_dir() -> Path:
    """The bundled samples, located from the package (so the working directory does not matter)."""
    env = os.environ.get("CORL_SAMPLES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "datasets" / "samples"


def is_offline(offline: bool | None = None) -> bool:
    """An explicit ``offline`` wins; otherwise ``CORL_OFFLINE`` set to 1/true/yes means offline."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("CORL_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _timeout() -> float:
    try:
        return float(os.environ.get("CORL_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise DatasetError(f"CORL_DOWNLOAD_TIMEOUT={os.environ['CORL_DOWNLOAD_TIMEOUT']!r}: expected seconds") from None


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == HDF5_SIGNATURE


def _trusted(path: Path, searched: list[str], label: str, verify: bool = True) -> tuple[bool, str | None]:
    """Whether a found file may be used: a sidecar, if any, must match (else it is corrupt)."""
    recorded = read_sidecar(path)
    if recorded is None or not verify:
        return True, None
    sha = file_sha256(path)
    if sha == recorded:
        return True, sha
    searched.append(f"{label} {path} (ignored: sha256 differs from {sidecar_path(path).name}, corrupt)")
    return False, None


# --------------------------------------------------------------------------- lookup
def locate_dataset(
    task: "TaskSpec",
    path: str | Path | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
    verify: bool = True,
) -> DatasetSource:
    """Find the dataset file for ``task`` in the documented order (module docstring).

    ``verify=False`` skips re-hashing files that have a sidecar: for listings (``corl tasks``)
    that must stay fast; anything that trains or evaluates on the file keeps the default.
    """
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            what = "is a directory" if explicit.is_dir() else "no such file"
            raise DatasetError(f"{explicit}: {what} (given as --dataset for task {task.name})")
        return DatasetSource(explicit, "explicit", "given with --dataset")

    searched: list[str] = []
    notes: list[str] = []
    is_d4rl = task.kind == "d4rl"

    stored = store_dir() / f"{task.name}.hdf5"
    if stored.is_file():
        ok, sha = _trusted(stored, searched, "store", verify)
        if ok:
            return DatasetSource(stored, "store", "corl dataset store ($CORL_DATASETS)", sha)
    else:
        searched.append(f"store {stored}")

    cache_origin: Origin = "d4rl-cache" if is_d4rl else "dsrl-cache"
    cache = d4rl_cache_dir() if is_d4rl else dsrl_cache_dir()
    cached = cache / task.dataset_file if task.dataset_file else None
    if cached is not None:
        if cached.is_file():
            ok, sha = _trusted(cached, searched, cache_origin, verify)
            if ok:
                owner = "D4RL" if is_d4rl else "DSRL"
                return DatasetSource(cached, cache_origin, f"{owner}'s file from its cache", sha)
            notes.append(f"ignored corrupt {cached} (sha256 differs from its sidecar)")
        else:
            searched.append(f"{cache_origin} {cached}")

    if task.kind == "dsrl" and task.dataset_file:
        if is_offline(offline):
            searched.append("DSRL download (skipped: offline)")
        else:
            url = dsrl_url(task.dataset_file)
            assert cached is not None
            try:
                result = download_file(url, cached, timeout=_timeout(), progress=progress)
            except DatasetError as exc:
                searched.append(f"DSRL download ({exc})")
                notes.append(f"download failed: {exc}")
            else:
                if _is_hdf5(result.path):
                    return DatasetSource(result.path, "download", f"downloaded from {url}", result.sha256)
                # e.g. an HTML login or error page served with status 200: do not cache it.
                result.path.unlink(missing_ok=True)
                sidecar_path(result.path).unlink(missing_ok=True)
                searched.append(f"DSRL download ({url}: response is not an HDF5 file, discarded)")
                notes.append(f"download from {url} was not an HDF5 file")
    elif is_d4rl:
        searched.append("no D4RL download (corl does not fetch D4RL files; place them yourself)")

    sample = samples_dir() / f"{task.name}.hdf5"
    if sample.is_file():
        ok, sha = _trusted(sample, searched, "sample", verify)
        if ok:
            owner = "D4RL" if is_d4rl else "DSRL"
            note = SAMPLE_NOTE.format(owner=owner)
            if notes:
                note += "; " + "; ".join(notes)
            return DatasetSource(sample, "sample", note, sha)
    else:
        searched.append(f"sample {sample}")

    raise DatasetError(_not_found_message(task, searched, cached, stored))


def _not_found_message(task: "TaskSpec", searched: list[str], cached: Path | None, stored: Path) -> str:
    fixes = []
    if task.kind != "d4rl":
        fixes.append(f"`corl datasets collect --task {task.name} -o {stored}`")
    if cached is not None:
        owner = "D4RL" if task.kind == "d4rl" else "DSRL"
        fixes.append(f"place {owner}'s {task.dataset_file} at {cached}")
    if task.kind == "dsrl" and any("offline" in s for s in searched):
        fixes.append("go online (unset CORL_OFFLINE / drop --offline) to download it")
    fixes.append("pass --dataset PATH")
    return f"no dataset for task {task.name}: searched {'; '.join(searched)}; to fix: {', or '.join(fixes)}"


def load_task_dataset(
    task: "TaskSpec",
    path: str | Path | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
) -> "TransitionDataset":
    """Locate, read and validate ``task``'s dataset; its metadata records where it came from.

    D4RL tasks read D4RL's format; every other task reads DSRL's. ``metadata`` gains
    ``origin``, ``note``, ``path`` and ``sha256`` (the run record cites them).
    """
    source = locate_dataset(task, path=path, offline=offline, progress=progress)
    if task.kind == "d4rl":
        from corl.data.formats.d4rl import read_d4rl

        dataset = read_d4rl(source.path, obs_dim=task.obs_dim, act_dim=task.act_dim)
    else:
        from corl.data.formats.dsrl import read_dsrl

        dataset = read_dsrl(source.path, obs_dim=task.obs_dim, act_dim=task.act_dim)
    dataset.metadata.setdefault("task", task.name)
    dataset.metadata["origin"] = source.origin
    dataset.metadata["note"] = source.note
    dataset.metadata["path"] = str(source.path)
    if "sha256" not in dataset.metadata:
        dataset.metadata["sha256"] = source.sha256 or file_sha256(source.path)
    return dataset


# --------------------------------------------------------------------------- listing
def _task_by_file() -> dict[str, str]:
    """DSRL/D4RL host file name -> task name (empty when the registry cannot be built)."""
    try:
        from corl.tasks import registry

        return {s.dataset_file: s.name for s in registry().values() if s.dataset_file}
    except Exception:
        return {}


def _known_task(stem: str) -> str:
    try:
        from corl.tasks import registry

        return registry()[stem].name if stem in registry() else "?"
    except Exception:
        return "?"


def list_local_datasets() -> list[LocalDataset]:
    """Every HDF5 file in the store, DSRL's and D4RL's caches and the samples, with a task guess.

    Cheap on purpose (no hashing): ``checksum`` only says whether a sidecar exists; the lookup
    verifies it when the file is used.
    """
    by_file = _task_by_file()
    places = (
        ("store", store_dir()),
        ("dsrl-cache", dsrl_cache_dir()),
        ("d4rl-cache", d4rl_cache_dir()),
        ("sample", samples_dir()),
    )
    out: list[LocalDataset] = []
    seen: set[Path] = set()
    for location, directory in places:
        if not directory.is_dir():
            continue
        for file in sorted(directory.iterdir()):
            if not file.is_file() or file.name.startswith(".") or file.suffix not in (".hdf5", ".h5"):
                continue
            real = file.resolve()
            if real in seen:
                continue
            seen.add(real)
            task = by_file.get(file.name) if location.endswith("cache") else None
            out.append(
                LocalDataset(
                    location=location,
                    task=task or _known_task(file.stem),
                    size_mb=round(file.stat().st_size / 1e6, 3),
                    checksum="sidecar" if read_sidecar(file) is not None else "-",
                    path=str(file),
                )
            )
    return out


__all__ = [
    "DatasetSource",
    "LocalDataset",
    "locate_dataset",
    "load_task_dataset",
    "list_local_datasets",
    "store_dir",
    "dsrl_cache_dir",
    "d4rl_cache_dir",
    "samples_dir",
    "is_offline",
    "verify_file",
]
