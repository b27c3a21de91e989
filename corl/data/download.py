"""Fetch dataset files over HTTP(S) without ever leaving a partial file behind.

Why so careful: a half-downloaded HDF5 file sitting at the final name is indistinguishable from
a real dataset until something reads the missing tail mid-training. So a download streams to a
hidden temporary name in the destination directory, checks the byte count against
``Content-Length`` when the server sent one, fsyncs, and only then renames into place (atomic
on one filesystem). Its sha256 goes into a sidecar ``<file>.sha256``; :func:`verify_file`
recomputes it later so a file changed or truncated after the download is not trusted.

DSRL's files moved from the host dsrl 0.1.0 still points at to the Hugging Face dataset repo
``YYY-45/DSRL`` (see the stack notes); :func:`dsrl_url` builds that address, and
``CORL_DSRL_MIRROR`` replaces its base (tests point it at a loopback server). Only the standard
library (urllib) is used, so no new dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from corl.data.hashing import file_sha256
from corl.errors import DatasetError

DSRL_BASE_URL = "https://huggingface.co/datasets/YYY-45/DSRL/resolve/main"
MIRROR_ENV = "CORL_DSRL_MIRROR"
SIDECAR_SUFFIX = ".sha256"
CHUNK = 1 << 16

#: ``progress(bytes_so_far, total_or_None)`` is called after every chunk.
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class DownloadResult:
    """Where the file landed, its sha256 and its size in bytes."""

    path: Path
    sha256: str
    bytes: int


def dsrl_base_url() -> str:
    """DSRL's file host: ``$CORL_DSRL_MIRROR`` when set, else the Hugging Face repo."""
    return (os.environ.get(MIRROR_ENV) or DSRL_BASE_URL).rstrip("/")


def dsrl_url(file_name: str) -> str:
    """The download address of one DSRL file (e.g. ``SafetyCarCircle-v0-100-1450.hdf5``)."""
    return f"{dsrl_base_url()}/{file_name}"


def sidecar_path(path: str | Path) -> Path:
    """``dest.sha256`` next to ``dest``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | Path, sha256: str) -> Path:
    """Record ``sha256`` for ``path`` in the sha256sum format (``<hex>  <name>``)."""
    side = sidecar_path(path)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{sha256}  {Path(path).name}\n")
    os.replace(tmp, side)
    return side


def read_sidecar(path: str | Path) -> str | None:
    """The recorded sha256 of ``path``, or None when there is no (readable) sidecar."""
    side = sidecar_path(path)
    try:
        text = side.read_text().strip()
    except OSError:
        return None
    return text.split()[0].lower() if text else None


def verify_file(path: str | Path) -> bool | None:
    """Recompute ``path``'s sha256 and compare it with its sidecar.

    True: matches. False: differs (the file is corrupt or was changed; do not trust it).
    None: there is no sidecar, so nothing to compare against.
    """
    expected = read_sidecar(path)
    if expected is None:
        return None
    return file_sha256(path) == expected


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def clean_stale_parts(dest: str | Path) -> list[Path]:
    """Remove temporary files of ``dest`` left by downloads whose process died (kill -9, power loss).

    The temporary name carries the downloader's pid, so a live concurrent download is left alone.
    """
    dest = Path(dest)
    removed = []
    if not dest.parent.is_dir():
        return removed
    prefix = f".{dest.name}."
    for candidate in dest.parent.iterdir():
        name = candidate.name
        if not (name.startswith(prefix) and name.endswith(".part")):
            continue
        pid_text = name[len(prefix) : -len(".part")]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
            continue
        _cleanup(candidate)
        removed.append(candidate)
    return removed


def _cleanup(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


def download_file(
    url: str,
    dest: str | Path,
    timeout: float = 10.0,
    expected_sha256: str | None = None,
    progress: Progress | None = None,
) -> DownloadResult:
    """Download ``url`` to ``dest`` atomically and record its sha256 in ``dest.sha256``.

    ``timeout`` bounds connecting and every read (a stalled server fails within it). Any
    failure -- HTTP error, refused connection, timeout, a body shorter than Content-Length,
    a sha256 different from ``expected_sha256`` -- raises one-line :class:`DatasetError`,
    removes the temporary file and leaves whatever was at ``dest`` before untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_parts(dest)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    received = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "corl-downloader"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length_header = response.headers.get("Content-Length")
            total = int(length_header) if length_header and length_header.isdigit() else None
            with open(tmp, "wb") as out:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, total)
                out.flush()
                os.fsync(out.fileno())
        if total is not None and received != total:
            raise DatasetError(f"{url}: download incomplete ({received} of {total} bytes); {dest} not written")
        sha = digest.hexdigest()
        if expected_sha256 is not None and sha != expected_sha256.lower():
            raise DatasetError(
                f"{url}: sha256 {sha} does not match the expected {expected_sha256.lower()}; {dest} not written"
            )
        # A sidecar left from an earlier file must never vouch for this one, even for the
        # instant between the rename and the new sidecar.
        sidecar_path(dest).unlink(missing_ok=True)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        write_sidecar(dest, sha)
        return DownloadResult(path=dest, sha256=sha, bytes=received)
    except DatasetError:
        raise
    except urllib.error.HTTPError as exc:
        raise DatasetError(f"{url}: HTTP {exc.code} {exc.reason}; {dest} not written") from None
    except (socket.timeout, TimeoutError):
        raise DatasetError(
            f"{url}: timed out after {timeout:g}s ({received} bytes received); {dest} not written"
        ) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise DatasetError(f"{url}: timed out after {timeout:g}s connecting; {dest} not written") from None
        raise DatasetError(f"{url}: cannot connect ({reason}); {dest} not written") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # Connection resets, IncompleteRead, bad status lines, disk errors.
        detail = str(exc).splitlines()[0] if str(exc) else "connection closed"
        raise DatasetError(
            f"{url}: download failed ({exc.__class__.__name__}: {detail}; {received} bytes received); {dest} not written"
        ) from None
    finally:
        _cleanup(tmp)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable too (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
