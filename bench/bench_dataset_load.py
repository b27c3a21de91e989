"""Benchmark: corl's validated DSRL load against a bare h5py read of the same arrays.

What it measures and why it is fair:

* one DSRL file with N transitions (default 1M, obs 8 / act 2 like OfflineCarCircle-v0,
  300-step episodes, random-walk observations rather than white noise, so gzip sees
  correlated values as in real trajectories) is written with corl's own writer into a
  temporary directory;
* wall time: in one process, repetitions alternate (a) ``read_dsrl`` (read, validate,
  sha256 of the file, tensors) and (b) a bare ``h5py`` read of the same 7 arrays into numpy, so
  both see the same page cache and CPU contention (the order flips every repetition); medians
  are reported. A second loop times read_dsrl's stages one by one, to show where the
  difference goes;
* peak memory: each reader runs once in a fresh subprocess (both import the same modules:
  numpy, torch, h5py, corl). After the imports the kernel's peak-RSS mark is reset (``5`` to
  ``/proc/self/clear_refs``), then one read runs, and the report is peak RSS during the read
  minus RSS before it. RSS, unlike tracemalloc, also sees HDF5's C buffers and torch's
  allocations; resetting the mark matters because importing torch peaks higher than a 1M
  read, which would hide the read in a plain ``ru_maxrss``. Where clear_refs cannot be
  written (not Linux) the child falls back to ``ru_maxrss`` and says so.

Run: ``.venv/bin/python bench/bench_dataset_load.py [--transitions N] [--reps R]``.

Decision recorded from the first runs (2 cores shared with other jobs, so noisy): read_dsrl
was 1.16-1.42x the bare read over four runs, with the same peak memory (no extra copies); the
overhead is sha256 of the file (0.04-0.12 s for 49 MiB) plus validation (0.01-0.03 s). Under the 1.5x bar, so the hash is still computed on
every load: it is what the run record cites, and a (path, size, mtime) cache would trade a
small saving for a way to cite a stale hash.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corl.data.dataset import TRANSITION_KEYS, TransitionDataset  # noqa: E402
from corl.data.formats.dsrl import read_dsrl, read_hdf5_arrays, write_dsrl  # noqa: E402
from corl.data.hashing import file_sha256  # noqa: E402
from corl.data.validation import normalize_shapes, validate_arrays  # noqa: E402


def make_file(path: Path, n: int, obs_dim: int = 8, act_dim: int = 2, episode: int = 300, seed: int = 0) -> Path:
    """A CarCircle-shaped dataset: random-walk observations, 0/1 costs, timeouts every 300."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(scale=0.05, size=(n + 1, obs_dim)).astype(np.float32)
    walk = np.cumsum(steps, axis=0, dtype=np.float32)
    timeouts = np.zeros(n, dtype=bool)
    timeouts[episode - 1 :: episode] = True
    arrays = dict(
        observations=walk[:-1],
        next_observations=walk[1:],
        actions=np.tanh(rng.normal(size=(n, act_dim))).astype(np.float32),
        rewards=rng.gamma(2.0, 0.5, size=n).astype(np.float32),
        costs=(rng.random(n) < 0.1).astype(np.float32),
        terminals=np.zeros(n, dtype=bool),
        timeouts=timeouts,
    )
    return write_dsrl(TransitionDataset.from_numpy(arrays, {"task": "OfflineCarCircle-v0"}), path)


def bare_read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: handle[key][()] for key in TRANSITION_KEYS}


def corl_read(path: Path) -> TransitionDataset:
    return read_dsrl(path, obs_dim=8, act_dim=2)


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in MiB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure_memory(which: str, path: Path) -> dict[str, float | str]:
    """Run in a fresh process: RSS before one read and the peak RSS during it (MiB)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak mark (Linux)
        before, _ = _rss_mib()
        method = "VmHWM after clear_refs"
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        method = "ru_maxrss (peak mark could not be reset)"
    result = corl_read(path) if which == "corl" else bare_read(path)
    try:
        _, peak = (
            _rss_mib()
            if method.startswith("VmHWM")
            else (0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        )
    finally:
        del result
    return {"before_mib": before, "peak_mib": peak, "delta_mib": peak - before, "method": method}


def time_once(fn, path: Path) -> float:
    start = time.perf_counter()
    result = fn(path)
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--memory-child", choices=("corl", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child:
        print(json.dumps(measure_memory(args.memory_child, args.path)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    with tempfile.TemporaryDirectory(prefix="corl-bench-") as tmp:
        path = Path(tmp) / "OfflineCarCircle-v0.hdf5"
        start = time.perf_counter()
        make_file(path, args.transitions)
        write_s = time.perf_counter() - start
        size_mib = path.stat().st_size / 2**20
        console.print(f"wrote {args.transitions:,} transitions, {size_mib:.1f} MiB in {write_s:.1f} s: {path}")

        bare_read(path)  # warm the page cache for both readers
        corl_times, bare_times = [], []
        for rep in range(args.reps):
            order = ((corl_read, corl_times), (bare_read, bare_times))
            for fn, sink in order if rep % 2 == 0 else order[::-1]:
                sink.append(time_once(fn, path))
        stages: dict[str, list[float]] = {"read arrays": [], "validate": [], "sha256": [], "tensors": []}
        for _ in range(args.reps):
            t0 = time.perf_counter()
            arrays, meta = read_hdf5_arrays(path, TRANSITION_KEYS)
            t1 = time.perf_counter()
            validate_arrays(normalize_shapes(arrays), path, obs_dim=8, act_dim=2)
            t2 = time.perf_counter()
            file_sha256(path)
            t3 = time.perf_counter()
            TransitionDataset.from_numpy(arrays, meta)
            t4 = time.perf_counter()
            for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[name].append(seconds)
            del arrays

        memory = {}
        for which in ("corl", "bare"):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", which, "--path", str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            memory[which] = json.loads(out.stdout.strip().splitlines()[-1])

    bare_med = statistics.median(bare_times)
    corl_med = statistics.median(corl_times)
    table = Table(
        title=f"DSRL load: {args.transitions:,} transitions, obs 8, act 2, {size_mib:.0f} MiB gzip; median of {args.reps}"
    )
    for column in ("reader", "wall s", "x bare", "read peak MiB", "RSS MiB before"):
        table.add_column(column, justify="left" if column == "reader" else "right")
    for name, seconds, mem in (
        ("corl read_dsrl", corl_med, memory["corl"]),
        ("bare h5py (7 arrays)", bare_med, memory["bare"]),
    ):
        table.add_row(
            name, f"{seconds:.3f}", f"{seconds / bare_med:.2f}", f"{mem['delta_mib']:.0f}", f"{mem['before_mib']:.0f}"
        )
    console.print(table)
    breakdown = Table(title="read_dsrl stages (separate loop, medians)")
    breakdown.add_column("stage")
    breakdown.add_column("wall s", justify="right")
    breakdown.add_column("x bare", justify="right")
    for name, values in stages.items():
        seconds = statistics.median(values)
        breakdown.add_row(name, f"{seconds:.3f}", f"{seconds / bare_med:.2f}")
    console.print(breakdown)
    console.print(
        f"memory: fresh subprocess per reader, {memory['corl']['method']}; peak during the read minus RSS before it"
    )
    console.print(f"ratio corl/bare: {corl_med / bare_med:.2f}")


if __name__ == "__main__":
    main()
