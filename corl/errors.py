"""User-facing errors.

A :class:`CorlError` is a user mistake or an environment problem that has a clear fix (a bad
file, an unknown option, a missing dataset). The CLI prints its message as one line and exits
with code 2, never with a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class CorlError(Exception):
    """An error whose message is the whole story: one line, naming the file/key/option."""

    exit_code = 2


class DatasetError(CorlError):
    """A dataset file is missing, unreadable or invalid."""


class ConfigError(CorlError):
    """A pipeline spec, preset or ``--set`` override is invalid."""


class TaskError(CorlError):
    """An unknown or unsupported task name."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates most similar to ``name`` (case-insensitive), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    hits = closest(name, candidates)
    return f" (did you mean {', '.join(repr(h) for h in hits)}?)" if hits else ""
