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


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%H:%M:%S", time.localtime(holder.get("started", 0)))
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
        for candidate in (self.path, self.path.with_name(self.path.name + ".excl")):
            try:
                return json.loads(candidate.read_text() or "null")
            except (OSError, json.JSONDecodeError):
                continue
        return None

    def _info(self) -> bytes:
        return json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
        }).encode()

    def _try_flock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
        previous = os.pread(fd, 4096, 0)
        if previous.strip():
            try:
                old = json.loads(previous)
                if old.get("pid") != os.getpid():
                    self.recovered_from = old  # lock file of a process that died holding it
            except json.JSONDecodeError:
                pass
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._info(), 0)
        self._fd = fd
        return True

    def _try_excl(self) -> bool:
        marker = self.path.with_name(self.path.name + ".excl")
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                old = json.loads(marker.read_text() or "null") or {}
            except (OSError, json.JSONDecodeError):
                old = {}
            if old.get("host") == socket.gethostname() and not _pid_alive(int(old.get("pid", -1))):
                marker.unlink(missing_ok=True)
                self.recovered_from = old
                return self._try_excl()
            return False
        os.write(fd, self._info())
        os.close(fd)
        return True

    def acquire(self, wait: bool = True, timeout: float | None = None,
                on_wait: Callable[[str], None] | None = None, poll: float = 0.25) -> None:
        """Take the lock; if held, wait (telling ``on_wait`` who holds it) or raise LockHeld."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
