"""One parser for the value lists evaluation options take: ``LO:HI:N`` or ``A,B,C``.

``--eps``, ``--sim2real PARAM=...`` and ``--cost-limits`` all read a list of non-negative
numbers; each used to parse it its own way. Errors are one line naming the option and the
syntax it expects.
"""

from __future__ import annotations

import math

import numpy as np

from corl.errors import CorlError


def parse_values(
    text: str, what: str, noun: str, example_range: str | None, example_list: str, shown: str | None = None
) -> tuple[float, ...]:
    """``"lo:hi:n"`` -> ``n`` evenly spaced values (ends included; only when ``example_range``
    is given); ``"a,b,c"`` -> those (empty items ignored). Values must be finite and >= 0.

    ``what`` names the option in errors (``--eps``, ``sim2real scales``, ...), ``noun`` the
    values (``budgets``); the examples show the expected syntax; ``shown`` is quoted in errors
    instead of ``text`` (e.g. the whole ``PARAM=SCALES``).
    """
    raw = text.strip()
    shown = text if shown is None else shown
    if example_range is None:
        expected = f"numbers separated by commas, e.g. {example_list}"
    else:
        expected = f"LO:HI:N (e.g. {example_range}) or A,B,C (e.g. {example_list})"
    try:
        if ":" in raw and example_range is not None:
            parts = raw.split(":")
            if len(parts) != 3:
                raise ValueError
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
            if n < 1:
                raise ValueError
            values = tuple(float(v) for v in np.linspace(lo, hi, n))
        else:
            values = tuple(float(p) for p in raw.split(",") if p.strip())
    except ValueError:
        raise CorlError(f"bad {what} {shown!r}: expected {expected}") from None
    bad = [v for v in values if not math.isfinite(v) or v < 0]
    if not values or bad:
        raise CorlError(f"bad {what} {shown!r}: {noun} must be finite and >= 0 (got {bad[0] if bad else 'none'})")
    return values
