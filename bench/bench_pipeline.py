"""Pipeline engine overhead: what caching, progress, metrics and checkpoints cost.

Two numbers, each printed in a table with its ratio:

1. Cached rerun: wall time of ``corl run bc --preset quick`` when every stage is cached, as a
   fraction of the first (uncached) run. Measured in-process (the engine alone: spec, dataset
   hash memo, manifest verification, run record) and end to end as a CLI subprocess
   (including interpreter start-up and imports, which dominate a cached run).
2. Per-step training overhead: the same BC update loop (same learner, same batches) run bare
   and inside the runner's ``TrainLoop`` with a live rich progress bar, ``metrics.jsonl``
   every ``log_every`` steps and checkpoints every ``every_steps`` steps; ratio of per-step
   times (median over interleaved repeats, so machine load hits both alike). On a shared
   machine that ratio is noisy (it can come out below 1), so the loop's own cost is also
   measured directly: the same TrainLoop around a no-op update, per step, as a fraction of
   a bare BC step.

Usage: ``.venv/bin/python bench/bench_pipeline.py [--steps 3000] [--repeats 3] [--no-e2e]``
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")

from corl.algos.baselines.bc import BCConfig, BCLearner  # noqa: E402
from corl.cli.progress import RichCallbacks  # noqa: E402
from corl.pipeline.checkpoint import Checkpointer  # noqa: E402
from corl.pipeline.context import InterruptFlag, RunOptions, StageContext  # noqa: E402
from corl.pipeline.runner import RunRequest, run_pipeline  # noqa: E402
from corl.tasks import get_task  # noqa: E402

TASK = "OfflineCarCircle-v0"


def cached_rerun(root: Path, e2e: bool) -> list[tuple[str, float, float]]:
    rows = []
    req = RunRequest(pipeline="bc", task=TASK, preset="quick", device="cpu", offline=True, checkpoints=str(root / "a"))
    t0 = time.perf_counter()
    first = run_pipeline(req)
    t_first = time.perf_counter() - t0
    assert first.ran == ["dataset", "bc", "evaluate"], first.ran
    t0 = time.perf_counter()
    second = run_pipeline(req)
    t_cached = time.perf_counter() - t0
    assert second.ran == [], second.ran
    rows.append(("in-process (engine only)", t_first, t_cached))
    if e2e:
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"}
        cmd = [
            sys.executable,
            "-m",
            "corl",
            "run",
            "bc",
            "--task",
            TASK,
            "--preset",
            "quick",
            "--offline",
            "--device",
            "cpu",
            "--checkpoints",
            str(root / "b"),
        ]
        walls = []
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
        rows.append(("CLI subprocess (with start-up)", walls[0], walls[1]))
    return rows


def per_step(steps: int, repeats: int, root: Path) -> tuple[float, float, dict]:
    from corl.data.store import load_task_dataset

    task = get_task(TASK)
    data = load_task_dataset(task, offline=True)
    cfg = BCConfig(batch_size=256, hidden=[128, 128], steps=steps)
    mean, std = data.observation_stats()

    def fresh() -> tuple[BCLearner, torch.Generator]:
        torch.manual_seed(0)
        gen = torch.Generator()
        gen.manual_seed(0)
        return BCLearner(cfg, task.obs_dim, task.act_dim, obs_mean=mean, obs_std=std), gen

    def bare() -> float:
        learner, gen = fresh()
        t0 = time.perf_counter()
        for _ in range(steps):
            learner.update(data.sample(cfg.batch_size, gen))
        return (time.perf_counter() - t0) / steps

    def with_runner(i: int) -> tuple[float, int]:
        learner, gen = fresh()
        out = root / f"loop{i}"
        out.mkdir(parents=True)
        console = Console(file=io.StringIO(), force_terminal=True, width=160)
        callbacks = RichCallbacks(console)
        ck = Checkpointer(out, every_steps=1000, every_seconds=60.0)
        ctx = StageContext(
            "bc",
            "bc",
            task,
            cfg,
            0,
            torch.device("cpu"),
            out,
            {},
            RunOptions(),
            ck,
            callbacks,
            InterruptFlag(),
            log_every=100,
        )
        callbacks.stage_started("bc", "bc", steps, 0)
        loop = ctx.train_loop(steps, lambda: {"learner": learner.state_dict(), "gen": gen.get_state()}, lambda s: None)
        t0 = time.perf_counter()
        for _ in loop:
            loop.log(learner.update(data.sample(cfg.batch_size, gen)))
        elapsed = (time.perf_counter() - t0) / steps
        callbacks.progress.stop()
        return elapsed, ck.saves

    def machinery_only(i: int, n: int = 20000) -> float:
        """Seconds per step of the loop itself (progress, metrics, checkpoint checks), no-op update."""
        out = root / f"noop{i}"
        out.mkdir(parents=True)
        callbacks = RichCallbacks(Console(file=io.StringIO(), force_terminal=True, width=160))
        ctx = StageContext(
            "noop",
            "noop",
            task,
            cfg,
            0,
            torch.device("cpu"),
            out,
            {},
            RunOptions(),
            Checkpointer(out, every_steps=10**9, every_seconds=1e9),
            callbacks,
            InterruptFlag(),
            log_every=100,
        )
        callbacks.stage_started("noop", "noop", n, 0)
        loop = ctx.train_loop(n, lambda: {}, lambda s: None)
        metrics = {"bc/nll": 0.5}
        t0 = time.perf_counter()
        for _ in loop:
            loop.log(metrics)
        elapsed = (time.perf_counter() - t0) / n
        callbacks.progress.stop()
        return elapsed

    per_step.machinery = statistics.median(machinery_only(i) for i in range(3))  # type: ignore[attr-defined]
    bare_times, runner_times, saves = [], [], 0
    bare()  # warm-up (allocator, kernels)
    for i in range(repeats):
        bare_times.append(bare())
        t, saves = with_runner(i)
        runner_times.append(t)
    return statistics.median(bare_times), statistics.median(runner_times), {"checkpoints": saves, "log_every": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-e2e", action="store_true", help="skip the CLI subprocess measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = cached_rerun(root, not args.no_e2e)
        table = Table(title="cached rerun vs first run (corl run bc --preset quick)", title_justify="left")
        for col in ("measure", "first run (s)", "cached rerun (s)", "ratio"):
            table.add_column(col)
        for name, first, cached in rows:
            table.add_row(name, f"{first:.2f}", f"{cached:.3f}", f"{cached / first:.4f}")
        console.print(table)

        b, r, info = per_step(args.steps, args.repeats, root)
        table = Table(
            title=f"per-step training overhead (BC, {args.steps} steps, median of {args.repeats})", title_justify="left"
        )
        for col in ("loop", "ms/step", "ratio"):
            table.add_column(col)
        table.add_row("bare learner loop", f"{b * 1e3:.3f}", "1.000")
        table.add_row(
            f"runner TrainLoop (rich bar, metrics every {info['log_every']}, {info['checkpoints']} checkpoints)",
            f"{r * 1e3:.3f}",
            f"{r / b:.3f}",
        )
        machinery = per_step.machinery  # type: ignore[attr-defined]
        table.add_row(
            "loop machinery alone (no-op update), per step",
            f"{machinery * 1e3:.4f}",
            f"{machinery / b:.4f} of a bare BC step",
        )
        console.print(table)


if __name__ == "__main__":
    main()
