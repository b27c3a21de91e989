"""`corl sweep` on this machine: runs per hour with 1 vs 2 workers, and the stage work that
merging runs into one graph saves.

The sweep: BC-Safe on the bundled OfflineCarCircle-v0 sample, 2 seeds x 2 evaluation cost
limits (10 and 20, as DSRL evaluates one policy at several thresholds) = 4 runs of
dataset -> bc -> evaluate. Upstream stages are shared: the dataset by all 4 runs, each
seed's bc by its 2 evaluations, so the graph has 7 nodes for 12 stages.

1. Runs/hour: the sweep in a fresh cache root with ``--workers 1`` (nodes one after another
   in the driver) and ``--workers 2`` (a pool of 2 processes, 1 torch thread each),
   alternated ``--repeats`` times; the best (lowest) wall time per setting, and the ratio (on
   a shared machine the minimum is the measurement least inflated by other processes; every
   wall time is printed too). The pool's times include starting its worker processes.
2. Work saved by deduplication: the stage wall times from the manifests, summed per run
   (a shared stage counted once per run that needs it: the work of running the 4 runs one by
   one, each in its own cache) against summed per node (what the graph ran); printed as the
   fraction saved and the ratio.

Usage: ``.venv/bin/python bench/bench_sweep.py [--steps 1500] [--episodes 4] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")
os.environ.setdefault("CORL_OFFLINE", "1")

from corl.pipeline.executors import InProcessBackend, PoolBackend  # noqa: E402
from corl.pipeline.sweep import parse_sweep, plan_sweep, run_sweep  # noqa: E402

TASK = "OfflineCarCircle-v0"


def sweep_spec(steps: int, episodes: int):
    raw = {
        "tasks": [TASK],
        "seeds": "0-1",
        "datasets": [str(REPO / "datasets" / "samples" / f"{TASK}.hdf5")],
        "set": [
            f"bc.steps={steps}",
            "bc.batch_size=256",
            "bc.hidden=[64, 64]",
            f"evaluate.episodes={episodes}",
            "evaluate.num_envs=2",
        ],
        "grid": {"evaluate.cost_limit": [10.0, 20.0]},
        "methods": [{"label": "BC-Safe", "pipeline": "bc"}],
    }
    return parse_sweep(raw, REPO / "bench" / "bench_sweep.toml")


def run_once(spec, workers: int, root: Path):
    runs = spec.expand(checkpoints=str(root))
    graph = plan_sweep(spec, runs)
    backend = InProcessBackend() if workers == 1 else PoolBackend(workers, threads=1)
    t0 = time.perf_counter()
    outcome = run_sweep(spec, runs, graph, backend, root, f"bench_sweep --workers {workers}")
    wall = time.perf_counter() - t0
    if not outcome.ok:
        sys.exit(f"sweep failed: {[(r.node, r.reason) for r in outcome.failures]}")
    return graph, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    spec = sweep_spec(args.steps, args.episodes)
    walls: dict[int, list[float]] = {1: [], 2: []}
    saved = None
    with tempfile.TemporaryDirectory(prefix="corl-bench-sweep-") as tmp:
        for rep in range(args.repeats):
            for workers in (1, 2):
                root = Path(tmp) / f"w{workers}-r{rep}"
                graph, wall = run_once(spec, workers, root)
                walls[workers].append(wall)
                if saved is None:  # stage work from the manifests of this sweep
                    node_wall = {
                        nid: json.loads((root / nid / "manifest.json").read_text())["wall_time"] for nid in graph.nodes
                    }
                    per_node = sum(node_wall.values())
                    per_run = sum(node_wall[nid] for ids in graph.run_nodes for nid in ids.values())
                    saved = (graph, per_run, per_node)

    console = Console(width=120)
    n_runs = len(spec.expand())
    table = Table(
        title=f"corl sweep: {n_runs} runs (bc {args.steps} steps, evaluate {args.episodes} episodes), "
        f"median of {args.repeats}",
        title_justify="left",
    )
    for col in ("executor", "wall (s)", "runs/hour", "ratio vs 1 worker"):
        table.add_column(col, justify="right")
    base = min(walls[1])
    for workers in (1, 2):
        wall = min(walls[workers])
        label = "--workers 1 (in the driver)" if workers == 1 else f"--workers {workers} (process pool)"
        table.add_row(
            label,
            f"{wall:.1f} ({', '.join(f'{w:.1f}' for w in walls[workers])})",
            f"{n_runs * 3600 / wall:.0f}",
            f"{base / wall:.2f}x",
        )
    console.print(table)
    graph, per_run, per_node = saved
    work = Table(
        title="stage work: runs one by one vs one deduplicated graph (manifest wall times)", title_justify="left"
    )
    for col in ("", "stages", "stage work (s)"):
        work.add_column(col, justify="right")
    work.add_row("runs one by one", str(graph.stage_count), f"{per_run:.1f}")
    work.add_row("one graph", str(len(graph.nodes)), f"{per_node:.1f}")
    console.print(work)
    console.print(
        f"deduplication saves {1 - per_node / per_run:.0%} of the stage work "
        f"({per_run / per_node:.2f}x less); 2 workers run {base / min(walls[2]):.2f}x the "
        f"runs/hour of 1 on this machine ({os.cpu_count()} CPUs, shared)"
    )


if __name__ == "__main__":
    main()
