"""Benchmark: corl's MICE training loop against the bare simulator, and against another checkout.

Issue 18 item 3 asks for MICE's own work (intrinsic cost, rollout bookkeeping, CPO update,
critic regression) to cost little next to the simulator. What it measures:

* **bare**: the same vector env the training loop uses (``--num-envs`` copies of ``--task`` in a
  gymnasium ``SyncVectorEnv`` built by ``corl.envs.factory.make_env``), uniform random actions,
  nothing recorded, ``--steps`` env steps (summed over envs);
* **mice (this tree)** and, with ``--compare-tree PATH`` (e.g. a checkout of main made with
  ``git worktree add /tmp/main main``), **mice (PATH)**: ``train_online`` with a
  ``MICETrainer`` at the paper's settings (10 envs, ``steps_per_epoch`` 20k, 64x64 tanh nets,
  CG 15, critics 10 x minibatch 128) for ``--steps`` env steps, i.e. one epoch and one update.

Every variant runs in its own subprocess (``PYTHONPATH`` set to its tree, ``CORL_THREADS``
torch threads), one after the other, on a fresh env set seeded alike. The first reset of the
envs (Safety-Gymnasium compiles the MuJoCo model from XML there) is timed apart and excluded
from the loop rate; the resets at episode ends are inside the loop, for every variant alike.
Reported per variant: env steps/s by wall time and by the subprocess's CPU time
(``time.process_time``; on a shared machine the CPU figure is the steadier one, as other
processes' load inflates wall time unevenly), the ratio to bare, and for MICE the CPU split
into env stepping + acting (``collector.step``), per-step bookkeeping (``observe`` on steps
without an update) and the epoch update.

``--workers N`` (N > 1) times bare and this tree's MICE a second time with the 10 envs in N
worker processes (``corl.envs.workers``, gymnasium's async vector env; the learner stays in the
main process); the CPU-time rates then count the workers' CPU as well (``bench/_clock.py``), and
each loop's ratio is given against the bare loop of the same layout and against bare in one
process. ``--compare-tree`` is timed in one process only (the baseline as it ran).

``--parallel`` starts the variants at once (on a machine shared with other jobs that buys this
bench a larger share of the CPU; only the CPU-time rates are comparable then).

Run: ``CORL_THREADS=1 .venv/bin/python bench/bench_mice_speed.py [--steps 20000] [--num-envs 10]
[--workers 2] [--compare-tree /tmp/main-before-18] [--parallel] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ workers (subprocess)
def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def worker_bare(task: str, num_envs: int, steps: int, seed: int, workers: int) -> dict:
    import numpy as np
    from _clock import Clock, worker_pids

    from corl.envs.factory import make_vector_env

    env = make_vector_env(task, num_envs, workers=workers)
    clock = Clock(worker_pids(env))
    env.reset(seed=[seed + j for j in range(num_envs)])
    reset = clock.since()
    rng = np.random.default_rng(seed)
    space = env.single_action_space
    done_steps = 0
    clock.start()
    while done_steps < steps:
        env.step(rng.uniform(space.low, space.high, size=(num_envs, *space.shape)).astype(np.float32))
        done_steps += num_envs
    loop = clock.since()
    env.close()
    return {"env_steps": done_steps, **loop, "reset_wall_s": reset["wall_s"], "reset_cpu_s": reset["cpu_s"]}


def worker_mice(task: str, num_envs: int, steps: int, seed: int, steps_per_epoch: int, workers: int) -> dict:
    import torch
    from _clock import Clock, worker_pids

    torch.set_num_threads(int(os.environ.get("CORL_THREADS", "1")))  # as the CLI does (CPU-time rates)
    from corl.algos.mice.config import MICEConfig
    from corl.algos.mice.learner import MICETrainer
    from corl.algos.online.collector import OnlineCollector, train_online

    torch.manual_seed(seed)
    cfg = MICEConfig(steps_per_epoch=steps_per_epoch, cost_limit=25.0, seed=seed)
    trainer = MICETrainer.for_task(task, num_envs, cfg)
    kwargs = {"workers": workers} if workers > 1 else {}  # a tree from before the env workers has none
    collector = OnlineCollector(task, num_envs, seed, record=False, **kwargs)
    clock = Clock(worker_pids(collector.env))
    collector.reset()
    reset = clock.since()
    split = {"collect": [0.0, 0.0], "observe": [0.0, 0.0], "update": [0.0, 0.0]}
    step_fn, observe_fn = collector.step, trainer.observe

    def timed_step(*a, **k):
        t0 = _clock()
        out = step_fn(*a, **k)
        w, c = _since(t0)
        split["collect"][0] += w
        split["collect"][1] += c
        return out

    def timed_observe(step):
        t0 = _clock()
        out = observe_fn(step)
        w, c = _since(t0)
        key = "update" if out else "observe"
        split[key][0] += w
        split[key][1] += c
        return out

    collector.step = timed_step  # type: ignore[method-assign]
    trainer.observe = timed_observe  # type: ignore[method-assign]
    clock.start()
    res = train_online(trainer, task, steps, num_envs=num_envs, seed=seed, record=False, collector=collector)
    loop = clock.since()
    collector.close()
    last = res.logs[-1] if res.logs else {}
    return {
        "env_steps": res.env_steps,
        **loop,
        "reset_wall_s": reset["wall_s"],
        "reset_cpu_s": reset["cpu_s"],
        "updates": len(res.logs),
        "split": split,
        "last_update": {k: last.get(k) for k in ("cpo_case", "kl", "loss_v_r", "loss_v_c", "constraint")},
    }


# ------------------------------------------------------------------------------ driver
def _start_variant(kind: str, tree: Path, workers: int, args: argparse.Namespace) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(tree), CORL_THREADS=os.environ.get("CORL_THREADS", "1"))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--task",
        args.task,
        "--num-envs",
        str(args.num_envs),
        "--steps",
        str(args.steps),
        "--steps-per-epoch",
        str(args.steps_per_epoch),
        "--seed",
        str(args.seed),
        "--workers",
        str(workers),
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tree)


def _finish_variant(kind: str, tree: Path, proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{kind} in {tree} failed (rc {proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="SafetyPointGoal1-v0")
    ap.add_argument("--num-envs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--steps-per-epoch", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-tree", type=Path, default=None, help="another checkout (e.g. main) to time as well")
    ap.add_argument(
        "--workers", type=int, default=1, help="N > 1: also time bare and MICE with the envs in N worker processes"
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--parallel", action="store_true", help="run the variants at once (only the CPU-time rates are then comparable)"
    )
    ap.add_argument("--worker", choices=["bare", "mice"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "bare":
        print(json.dumps(worker_bare(args.task, args.num_envs, args.steps, args.seed, args.workers)))
        return
    if args.worker == "mice":
        print(
            json.dumps(worker_mice(args.task, args.num_envs, args.steps, args.seed, args.steps_per_epoch, args.workers))
        )
        return

    layouts = [1] if args.workers <= 1 else [1, args.workers]
    variants = [(f"bare, workers {w}", "bare", ROOT, w) for w in layouts]
    variants += [(f"mice (this tree), workers {w}", "mice", ROOT, w) for w in layouts]
    if args.compare_tree is not None:
        variants.append((f"mice ({args.compare_tree}), workers 1", "mice", args.compare_tree.resolve(), 1))
    results = {}
    if args.parallel:  # all at once: CPU-time rates stay per process, wall rates share the CPU
        procs = {name: (kind, tree, _start_variant(kind, tree, w, args)) for name, kind, tree, w in variants}
        print(f"running {', '.join(procs)} in parallel ...", flush=True)
        results = {name: _finish_variant(kind, tree, proc) for name, (kind, tree, proc) in procs.items()}
    else:
        for name, kind, tree, w in variants:
            print(f"running {name} ...", flush=True)
            results[name] = _finish_variant(kind, tree, _start_variant(kind, tree, w, args))
    bare1 = results["bare, workers 1"]
    print(
        f"\n{args.task}, {args.num_envs} envs, {args.steps} env steps, CORL_THREADS="
        f"{os.environ.get('CORL_THREADS', '1')}, {os.cpu_count()} cores (first reset excluded from the rates; "
        "cpu = this process + env workers)"
    )
    print(
        f"{'variant':<52} {'steps/s wall':>12} {'steps/s cpu':>12} {'/bare1 wall':>11} {'/bareW wall':>11}"
        f" {'/bare1 cpu':>10} {'/bareW cpu':>10} {'reset cpu s':>11}"
    )
    for (name, _, _, w), r in zip(variants, results.values()):
        bare_w = results[f"bare, workers {w}"]
        r["rate_wall"] = r["env_steps"] / r["wall_s"]
        r["rate_cpu"] = r["env_steps"] / r["cpu_s"]
        r["ratio_wall"] = r["rate_wall"] / (bare1["env_steps"] / bare1["wall_s"])
        r["ratio_cpu"] = r["rate_cpu"] / (bare1["env_steps"] / bare1["cpu_s"])
        r["ratio_wall_same_layout"] = r["rate_wall"] / (bare_w["env_steps"] / bare_w["wall_s"])
        r["ratio_cpu_same_layout"] = r["rate_cpu"] / (bare_w["env_steps"] / bare_w["cpu_s"])
        print(
            f"{name:<52} {r['rate_wall']:>12.1f} {r['rate_cpu']:>12.1f} {r['ratio_wall']:>11.3f}"
            f" {r['ratio_wall_same_layout']:>11.3f} {r['ratio_cpu']:>10.3f} {r['ratio_cpu_same_layout']:>10.3f}"
            f" {r['reset_cpu_s']:>11.1f}"
        )
    for name, r in results.items():
        if "split" in r:
            s = r["split"]
            print(
                f"  {name}: main-process cpu s  collect {s['collect'][1]:.1f}  observe {s['observe'][1]:.1f}  "
                f"update {s['update'][1]:.1f}; env workers {r['worker_cpu_s']:.1f}  (updates: {r['updates']})"
            )
    if args.compare_tree is not None:
        old = results[f"mice ({args.compare_tree}), workers 1"]
        for w in layouts:
            new = results[f"mice (this tree), workers {w}"]
            print(
                f"this tree (workers {w}) / {args.compare_tree}: wall {new['rate_wall'] / old['rate_wall']:.2f}x, "
                f"cpu {new['rate_cpu'] / old['rate_cpu']:.2f}x; MICE-side cpu s (observe + update): "
                f"{sum(new['split'][k][1] for k in ('observe', 'update')):.1f} vs "
                f"{sum(old['split'][k][1] for k in ('observe', 'update')):.1f}"
            )
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
