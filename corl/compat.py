"""Python 3.11 compatibility shim for safety-gymnasium 0.4.0 (and the dsrl tasks built on it).

Why: safety-gymnasium declares dataclass fields whose defaults are numpy arrays
(``color: np.array = COLOR['goal']``). Python 3.11 made ``dataclasses`` reject unhashable
defaults (``ValueError: mutable default <class 'numpy.ndarray'> for field color``), so the
package fails at import. While the shim is active, an ndarray default is turned into a
``default_factory`` that returns a copy, before the dataclass check runs: the behaviour the
authors intended, with no shared mutable state between instances.

dsrl imports ``safety_gymnasium.builder`` lazily (when an env is made), so the shim stays
installed for the life of the process once :func:`install_safety_gymnasium_shim` ran.

When it can go: once safety-gymnasium ships a release that imports on Python >= 3.11 and dsrl
accepts it (dsrl 0.1.0 pins 0.4.0). Remove this module and its call in ``corl.envs.factory``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import warnings

import numpy as np

_ORIGINAL_GET_FIELD = dataclasses._get_field  # type: ignore[attr-defined]
_installed = False


def _array_factory(value: np.ndarray):
    return functools.partial(np.array, value, copy=True)


def _get_field_accepting_arrays(cls, a_name, a_type, *args, **kwargs):
    default = cls.__dict__.get(a_name, dataclasses.MISSING)
    if isinstance(default, np.ndarray):
        setattr(cls, a_name, dataclasses.field(default_factory=_array_factory(default)))
    elif isinstance(default, dataclasses.Field) and isinstance(default.default, np.ndarray):
        default.default_factory = _array_factory(default.default)  # type: ignore[misc]
        default.default = dataclasses.MISSING
    return _ORIGINAL_GET_FIELD(cls, a_name, a_type, *args, **kwargs)


def install_safety_gymnasium_shim() -> None:
    """Patch ``dataclasses`` so safety-gymnasium's ndarray defaults become factories (idempotent)."""
    global _installed
    if _installed:
        return
    if sys.version_info >= (3, 11):
        dataclasses._get_field = _get_field_accepting_arrays  # type: ignore[attr-defined]
    _installed = True


def shim_is_installed() -> bool:
    return _installed


class QuietFd:
    """Silence a stream's file descriptor (PyBullet's start-up banner), under any host.

    bullet-safety-gym's own ``RedirectStream`` assumes ``sys.stdout`` is the process's real
    stdout: it calls ``fileno()`` (which a test runner's or notebook's stream lacks) and looks
    up the C symbol named after the stream (which fails under pytest's capture). This drop-in
    redirects the descriptor when there is one, flushes every C stream with ``fflush(NULL)``,
    and does nothing when the stream has no descriptor.
    """

    def __init__(self, stream=None, file: str = os.devnull) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.file = file
        self.saved_fd: int | None = None

    def __enter__(self) -> "QuietFd":
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self  # io.UnsupportedOperation is an OSError/ValueError subclass
        self.stream.flush()
        self.target = open(self.file, "w")
        self.fd = fd
        self.saved_fd = os.dup(fd)
        os.dup2(self.target.fileno(), fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved_fd is None:
            return
        import ctypes

        ctypes.CDLL(None).fflush(None)
        os.dup2(self.saved_fd, self.fd)
        os.close(self.saved_fd)
        self.target.close()
        self.saved_fd = None


def install_bullet_stream_fix() -> None:
    """Replace bullet-safety-gym's ``RedirectStream`` with :class:`QuietFd` (idempotent).

    builder.py also uses it at import time (around ``import pybullet``), so it is imported with
    the interpreter's original streams in place first.
    """
    saved = sys.stdout, sys.stderr
    if sys.__stdout__ is not None and sys.__stderr__ is not None:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        from bullet_safety_gym.envs import builder
    finally:
        sys.stdout, sys.stderr = saved
    builder.RedirectStream = QuietFd


@functools.lru_cache(maxsize=None)
def import_dsrl():
    """Import dsrl (and with it safety-gymnasium's and bullet-safety-gym's task registrations).

    dsrl's MetaDrive part needs the legacy ``gym`` package, which is not part of corl's stack;
    its import error is silenced (``DSRL_SUPPRESS_IMPORT_ERROR``), and the other suites still
    register because dsrl imports them first.
    """
    install_safety_gymnasium_shim()
    os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bullet_safety_gym  # noqa: F401  registers Safety*-v0 bullet tasks

        install_bullet_stream_fix()
        import dsrl  # noqa: F401
        import dsrl.offline_bullet_safety_gym  # noqa: F401
        import dsrl.offline_safety_gymnasium  # noqa: F401
        import safety_gymnasium  # noqa: F401  registers Safety* gymnasium tasks
    import dsrl as module

    return module
