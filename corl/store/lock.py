"""One lock per artifact directory, so two runs never write the same artifact.

Mechanism: ``fcntl.flock`` on a lock file next to the directory. The kernel drops the lock when
its process dies (Ctrl-C, ``kill -9``, a crash), so a lock left by a dead process is free by
construction; the file's content (pid, host, start time, command) only serves to tell a
waiting user who holds it. Where ``flock`` is unsupported (some network filesystems) we fall
back to an ``O_EXCL`` marker file whose holder's pid is checked for liveness on the same host.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from corl.errors import CorlError
from corl.files import disk_error, ensure_dir


class LockHeld(CorlError):
    """Another live process holds the artifact's lock (and we were told not to wait)."""


def lock_path(artifact_dir: Path) -> Path:
    return artifact_dir.with_name(f".{artifact_dir.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse_info(raw: bytes) -> dict[str, Any] | None:
    """A lock file's holder info, or None for an empty, garbage or foreign file (never raises:
    the lock itself is the kernel's flock; the content only names the holder)."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            return _parse_info(handle.read(4096))
    except OSError:
        return None


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    stamp = holder.get("started")
    started = (
        time.strftime("%H:%M:%S", time.localtime(stamp))
        if isinstance(stamp, (int, float)) and 0 <= stamp < 1e11
        else "?"
    )
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {started}: {holder.get('command', '?')})"


class ArtifactLock:
    """Exclusive lock on one artifact directory; use as a context manager or acquire/release."""

    def __init__(self, artifact_dir: Path) -> None:
        self.path = lock_path(artifact_dir)
        self.artifact_dir = artifact_dir
        self._fd: int | None = None
        self._excl = False
        self.recovered_from: dict[str, Any] | None = None

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock, from the lock file's content; garbage there is nobody we can name."""
        for candidate in (self.path, self.path.with_name(self.path.name + ".excl")):
            info = _read_info(candidate)
            if info is not None:
                return info
        return None

    def _info(self) -> bytes:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.time(),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
            }
        ).encode()

    def _try_flock(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise disk_error(self.path, exc, "cannot create lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                self._excl = True
                return self._try_excl()
            raise
        old = _parse_info(os.pread(fd, 4096, 0))
        if old is not None and old.get("pid") != os.getpid():
            self.recovered_from = old  # lock file of a process that died holding it
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._info(), 0)
        except OSError:
            pass  # a full disk: the flock holds all the same; only the holder's name is lost
        self._fd = fd
        return True

    def _try_excl(self) -> bool:
        marker = self.path.with_name(self.path.name + ".excl")
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            old = _read_info(marker) or {}
            pid = old.get("pid")
            if old.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
                marker.unlink(missing_ok=True)
                self.recovered_from = old
                return self._try_excl()
            return False
        os.write(fd, self._info())
        os.close(fd)
        return True

    def acquire(
        self,
        wait: bool = True,
        timeout: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        poll: float = 0.25,
    ) -> None:
        """Take the lock; if held, wait (telling ``on_wait`` who holds it) or raise LockHeld."""
        ensure_dir(self.path.parent)
        attempt = self._try_excl if self._excl else self._try_flock
        if attempt():
            return
        who = describe(self.holder())
        if not wait:
            raise LockHeld(f"{self.artifact_dir} is being built by {who}; rerun when it is done, or pass --wait")
        if on_wait is not None:
            on_wait(f"waiting for {self.artifact_dir.name}: locked by {who}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            time.sleep(poll)
            attempt = self._try_excl if self._excl else self._try_flock
            if attempt():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise LockHeld(f"{self.artifact_dir}: still locked by {describe(self.holder())} after {timeout:.0f}s")

    def release(self) -> None:
        if self._excl:
            self.path.with_name(self.path.name + ".excl").unlink(missing_ok=True)
            self._excl = False
            return
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def is_locked_by_other(self) -> bool:
        """True when some other process holds the lock right now (non-destructive probe)."""
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return False

    def __enter__(self) -> "ArtifactLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
