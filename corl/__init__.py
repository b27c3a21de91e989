"""corl: offline-first safe (constrained) reinforcement learning.

The Python API (the functions the ``corl`` command calls; see :mod:`corl.api`)::

    import corl
    run = corl.run("bc", task="OfflineCarCircle-v0", preset="quick")
    corl.evaluate(run, episodes=10); policy = corl.load_policy(run)

They are imported on first use, so ``import corl`` stays cheap (no torch, no simulators).

Layers, imports running one way (down; ``lint-imports`` checks it, see pyproject.toml):
``cli`` -> ``api`` -> ``pipeline`` -> ``export``, ``eval``, ``collect`` -> ``store`` -> ``algos``
-> ``nn``, ``data``, ``envs`` -> ``tasks`` -> ``compat``, ``files``, ``errors``.
"""

from __future__ import annotations

from typing import Any

from corl.version import __version__

_API = ("run", "plan", "evaluate", "load_policy", "load_dataset", "make_env", "export_policy", "Run", "Policy")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from corl import api

        return getattr(api, name)
    raise AttributeError(f"module 'corl' has no attribute {name!r}")
