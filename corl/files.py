"""The one atomic writer and the one JSON reader for every file corl owns.

Why one of each: a full disk, a read-only or immutable directory, or a garbage file must end
in the same way wherever it happens (one line naming the path, exit 2), and a failed write
must never leave a half-written file or a temporary file that keeps the disk full.

* :func:`atomic_write` writes bytes to a temporary sibling with plain ``os.write`` calls,
  fsyncs and renames it into place. Any ``OSError`` (``ENOSPC``, ``EROFS``, ``EACCES``, ...)
  removes the temporary file and becomes a :class:`DiskError` naming the path. Writers of
  structured formats (HDF5, torch) serialize to memory first and hand the bytes over here,
  because h5py crashes (signal 11) and ``torch.save`` raises ``RuntimeError: unexpected
  pos`` when the disk fills under them; in memory nothing can fail for lack of space, and the
  bytes then meet the disk through this one path.
* :func:`check_free_space` refuses a write that cannot fit, before any work is spent on it.
* :func:`read_json` reads a JSON file of the cache (manifest, run record, hash cache, lock
  file) and raises :class:`UnreadableFile` (one line) for anything that is not UTF-8 JSON of
  the expected type; each caller decides whether that is fatal, skipped or rebuilt.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from corl.errors import CorlError

#: errno values that describe the machine, not a bug: reported as one line naming the path.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (immutable or protected)",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EISDIR: "is a directory, expected a file",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or directory",
    errno.EFBIG: "file too large for this file system",
}
#: Free space a write needs beyond its bytes: a block for the file's metadata and rounding,
#: plus 1/64 of its size (indirect blocks of large files).
SPACE_MARGIN = 4096


class DiskError(CorlError):
    """A write or directory creation failed for a reason of the machine (full, read-only, ...)."""


class UnreadableFile(CorlError):
    """A file corl owns is not what it should be (not UTF-8, not JSON, wrong type)."""


def disk_error(path: str | Path, exc: OSError, action: str = "cannot write") -> DiskError:
    """``exc`` as one line naming ``path`` (the file the user can act on)."""
    why = ENVIRONMENT_ERRNOS.get(exc.errno or -1) or (exc.strerror or exc.__class__.__name__)
    return DiskError(f"{path}: {action}: {why}")


def is_environment_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def tmp_name(path: Path) -> Path:
    """The temporary sibling of ``path`` (hidden, pid-tagged, ends in ``.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def ensure_dir(path: str | Path) -> Path:
    """``mkdir -p`` that fails as one line (a file in the way, read-only, permission)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiskError(f"{path}: is a file, expected a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(path, exc, "cannot create directory") from None
    return path


def check_writable_target(path: str | Path) -> Path:
    """Fail now, before minutes of work, when ``path`` cannot be written: a directory in its
    place, a parent that cannot be created or is read-only."""
    path = Path(path)
    if path.is_dir():
        raise DiskError(f"{path}: is a directory, expected a file name to write")
    parent = ensure_dir(path.parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DiskError(f"{parent}: cannot write: permission denied or read-only file system")
    return path


def check_free_space(path: str | Path, needed: int) -> None:
    """Raise :class:`DiskError` when ``path``'s file system has less than ``needed`` bytes free."""
    directory = Path(path)
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return  # cannot tell: the write itself will say
    if free < needed + SPACE_MARGIN + needed // 64:
        raise DiskError(
            f"{path}: no space left on device (needs about {_human(needed)}, {_human(free)} free on {directory})"
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: str | Path, data: bytes, *, check_space: bool = True, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one, never half.

    On failure the temporary file is removed and a :class:`DiskError` names ``path``.
    """
    path = Path(path)
    ensure_dir(path.parent)
    if path.is_dir():
        raise DiskError(f"{path}: is a directory, expected a file")
    if check_space:
        check_free_space(path, len(data))
    tmp = tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise disk_error(path, exc) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def atomic_write_via(path: str | Path, fill: Callable[[io.BytesIO], None], **kwargs: Any) -> Path:
    """Serialize with ``fill(buffer)`` in memory, then :func:`atomic_write` the bytes."""
    buffer = io.BytesIO()
    fill(buffer)
    return atomic_write(path, buffer.getbuffer(), **kwargs)  # type: ignore[arg-type]


def write_json_atomic(path: str | Path, value: Any) -> Path:
    """JSON (indented, sorted keys) written with :func:`atomic_write`."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return atomic_write(path, text.encode())


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through memory and :func:`atomic_write` (no ``RuntimeError`` on a full disk)."""
    import torch

    return atomic_write_via(path, lambda buffer: torch.save(obj, buffer))


def append_line(path: str | Path, line: str) -> None:
    """Append one line (metrics logs); a full disk becomes a :class:`DiskError` naming ``path``."""
    try:
        with open(path, "a") as handle:
            handle.write(line)
    except OSError as exc:
        raise disk_error(path, exc) from None


def read_json(path: str | Path, expect: type | tuple[type, ...] = dict, what: str = "JSON file") -> Any:
    """Parse a JSON file corl owns; anything else is an :class:`UnreadableFile` naming it.

    ``FileNotFoundError`` passes through (absent is a state, not damage, for most callers).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise UnreadableFile(f"{path}: unreadable {what}: is a directory") from None
    except OSError as exc:
        raise UnreadableFile(
            f"{path}: unreadable {what}: {ENVIRONMENT_ERRNOS.get(exc.errno or -1, exc.strerror)}"
        ) from None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path}: unreadable {what}: not UTF-8 text ({len(raw)} bytes)") from None
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"{path}: unreadable {what}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise UnreadableFile(f"{path}: unreadable {what}: nested too deeply") from None
    if not isinstance(value, expect):
        names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise UnreadableFile(
            f"{path}: unreadable {what}: expected a JSON {_json_name(names)}, got {_json_name(type(value).__name__)}"
        )
    return value


def _json_name(py: str) -> str:
    return {
        "dict": "object",
        "list": "array",
        "str": "string",
        "NoneType": "null",
        "int": "number",
        "float": "number",
    }.get(py, py)
