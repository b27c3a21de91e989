"""Wall and CPU clocks for the speed benches, counting env worker processes' CPU too.

With ``workers > 1`` the simulators run in gymnasium ``AsyncVectorEnv`` processes
(:class:`corl.envs.workers.GroupedVectorEnv`), whose CPU time ``time.process_time`` does not
see. :class:`Clock` adds their user + system time, read from ``/proc/<pid>/stat`` (Linux; 0 where
it cannot be read), so CPU-time rates stay comparable across worker layouts.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def worker_pids(env: Any) -> list[int]:
    """The worker processes of a vector env (none for an in-process one)."""
    inner = getattr(env, "inner", env)  # GroupedVectorEnv wraps an AsyncVectorEnv
    return [p.pid for p in getattr(inner, "processes", []) or [] if p.pid is not None]


def process_cpu(pids: Sequence[int]) -> float:
    """Summed user + system CPU seconds of ``pids`` so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14-15)
        except (OSError, IndexError, ValueError):
            pass
    return total


class Clock:
    """``since()`` → ``(wall s, cpu s of this process + the given worker processes)`` since ``start``."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self.start()

    def _now(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), process_cpu(self.pids)

    def start(self) -> None:
        self.t0 = self._now()

    def since(self) -> dict[str, float]:
        wall, cpu, workers = (b - a for a, b in zip(self.t0, self._now()))
        return {"wall_s": wall, "cpu_s": cpu + workers, "worker_cpu_s": workers}
