"""Benchmark: CVPO's ``fsrl`` preset (FSRL's CarCircle work per env step) against the bare simulator.

Issue 18 item 4. FSRL's CVPO on SafetyCarCircle-v0 (10 envs, 0.2 updates per env step,
batch 256, Adam E-step) ran end to end at 0.21 of the bare simulator rate; the ``fsrl`` preset
of ``pipelines/cvpo.toml`` does the same work per env step. In one process, one after the other:

1. **bare**: a ``SyncVectorEnv`` of ``--num-envs`` copies of the task (``corl.envs.factory.make_env``),
   uniform random actions, ``--bare-steps`` env steps;
2. **end to end**: ``train_online`` with a ``CVPOTrainer`` built from the resolved preset
   (``load_spec("cvpo").resolve(task, "fsrl")``, the stage's own config path) for ``--steps``
   env steps, episodes recorded as the ``cvpo_train`` stage does; ``collector.step`` (simulator
   + acting + recording) is timed apart, giving the collector share and the collector's own
   rate against bare;
3. **E-step cost per update**: on batches sampled from the trained run's replay buffer, the
   time of one E-step with the Adam dual step (the preset) and with the SLSQP solver
   (``estep_solver="slsqp"``, the original's), and of a whole update with each, on copies of
   the trained learner.

``--workers N`` (N > 1) repeats 1 and 2 with the envs in N worker processes (``corl.envs.workers``,
gymnasium's async vector env; the learner stays in this process): the table then gives each
end-to-end rate against bare in one process and against bare with the same layout.

Rates are env steps per second by wall time and by CPU time: this process's
(``time.process_time``) plus the env workers' (``bench/_clock.py``); on a shared machine the
CPU figure is the steadier one. Reward and
cost at the end: the mean of the last round's training episodes (stochastic policy) and of
``--eval-episodes`` deterministic episodes on fresh env seeds (not timed).

Run: ``CORL_THREADS=1 .venv/bin/python bench/bench_cvpo_fsrl.py [--steps 36000] [--workers 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _clock import Clock, worker_pids

from corl.algos.cvpo import CVPOTrainer
from corl.algos.cvpo.config import CVPOConfig
from corl.algos.online.collector import OnlineCollector, episode_summary, train_online
from corl.envs.factory import make_env, make_vector_env
from corl.pipeline.spec import load_spec
from corl.pipeline.stages.online import _sub_config
from corl.tasks import get_task


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def bare(task: str, num_envs: int, steps: int, seed: int, workers: int = 1) -> dict:
    env = make_vector_env(task, num_envs, workers=workers)
    env.reset(seed=[seed + j for j in range(num_envs)])
    rng = np.random.default_rng(seed)
    space = env.single_action_space
    done = 0
    clock = Clock(worker_pids(env))
    while done < steps:
        env.step(rng.uniform(space.low, space.high, size=(num_envs, *space.shape)).astype(np.float32))
        done += num_envs
    out = {"env_steps": done, **clock.since()}
    env.close()
    return out


def preset_config(task: str, preset: str, seed: int) -> tuple[CVPOConfig, int]:
    import corl.pipeline.stages  # noqa: F401  (registers the stage kinds)

    stage = load_spec("cvpo").resolve(task, preset)["train"]
    limit = stage.cost_limit if stage.cost_limit is not None else get_task(task).cost_limit
    return _sub_config(CVPOConfig, stage, cost_limit=float(limit), seed=seed), int(stage.num_envs)


def end_to_end(
    task: str, cfg: CVPOConfig, num_envs: int, steps: int, seed: int, workers: int = 1
) -> tuple[dict, CVPOTrainer]:
    torch.manual_seed(seed)
    trainer = CVPOTrainer.for_task(task, cfg)
    collector = OnlineCollector(task, num_envs, seed, record=True, fixed_horizon=cfg.fixed_horizon, workers=workers)
    collector.reset()
    collect = [0.0, 0.0]
    step_fn = collector.step

    def timed_step(*a, **k):
        t0 = _clock()
        out = step_fn(*a, **k)
        w, c = _since(t0)
        collect[0] += w
        collect[1] += c
        return out

    collector.step = timed_step  # type: ignore[method-assign]
    clock = Clock(worker_pids(collector.env))
    res = train_online(trainer, task, steps, num_envs=num_envs, seed=seed, collector=collector)
    total = clock.since()
    collector.close()
    updates = int(sum(log.get("updates", 0) for log in res.logs))
    last = res.episodes[-num_envs:]
    return (
        {
            "env_steps": res.env_steps,
            **total,
            "collect_wall_s": collect[0],
            "collect_cpu_s": collect[1] + total["worker_cpu_s"],  # the workers only step envs
            "updates": updates,
            "rounds": len(res.logs),
            "train_last_round": episode_summary(last),
            "episodes": len(res.episodes),
            "last_log": {k: res.logs[-1].get(k) for k in ("eta", "lambda", "qc", "kl_mu", "kl_sigma")}
            if res.logs
            else {},
        },
        trainer,
    )


def estep_cost(trainer: CVPOTrainer, updates: int, seed: int) -> dict:
    out = {}
    torch.manual_seed(seed)
    batches = [trainer.buffer.sample(trainer.config.batch_size) for _ in range(updates)]
    for solver in ("adam", "slsqp"):
        learner = copy.deepcopy(trainer.learner)
        learner.config = dataclasses.replace(learner.config, estep_solver=solver)
        t = _clock()
        for b in batches:
            learner._e_step(b["observations"])
        e_wall, e_cpu = _since(t)
        learner = copy.deepcopy(trainer.learner)
        learner.config = dataclasses.replace(learner.config, estep_solver=solver)
        t = _clock()
        for b in batches:
            learner.update(b)
        u_wall, u_cpu = _since(t)
        out[solver] = {
            "estep_ms_cpu": 1e3 * e_cpu / updates,
            "estep_ms_wall": 1e3 * e_wall / updates,
            "update_ms_cpu": 1e3 * u_cpu / updates,
            "update_ms_wall": 1e3 * u_wall / updates,
        }
    return out


@torch.no_grad()
def evaluate(task: str, trainer: CVPOTrainer, episodes: int, seed: int) -> dict:
    env = make_env(task)
    low, high = env.action_space.low, env.action_space.high
    rewards, costs = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + 10_000 + i)
        done, ret, cost = False, 0.0, 0.0
        while not done:
            a = trainer.learner.act(torch.as_tensor(obs, dtype=torch.float32)[None], deterministic=True)[0].numpy()
            obs, r, term, trunc, info = env.step(np.clip(a, low, high))
            ret, cost, done = ret + float(r), cost + float(info.get("cost", 0.0)), term or trunc
        rewards.append(ret)
        costs.append(cost)
    env.close()
    return {"reward": statistics.fmean(rewards), "cost": statistics.fmean(costs), "episodes": episodes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="SafetyCarCircle-v0")
    ap.add_argument("--preset", default="fsrl")
    ap.add_argument("--steps", type=int, default=36_000)
    ap.add_argument("--bare-steps", type=int, default=12_000)
    ap.add_argument("--estep-updates", type=int, default=50)
    ap.add_argument("--eval-episodes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N > 1: also time bare and end to end with the envs in N worker processes",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("CORL_THREADS", "1")))  # as the CLI does (CPU-time rates)

    cfg, num_envs = preset_config(args.task, args.preset, args.seed)
    print(
        f"{args.task}, preset {args.preset}: {num_envs} envs, update_per_step {cfg.update_per_step}, batch "
        f"{cfg.batch_size}, E-step {cfg.estep_solver}, num_q {cfg.num_q}, n_step {cfg.n_step}",
        flush=True,
    )
    layouts = [1] if args.workers <= 1 else [1, args.workers]
    bares = {w: bare(args.task, num_envs, args.bare_steps, args.seed, w) for w in layouts}
    runs = {w: end_to_end(args.task, cfg, num_envs, args.steps, args.seed, w) for w in layouts}
    e2e, trainer = runs[layouts[-1]]
    cost = estep_cost(trainer, args.estep_updates, args.seed)
    ev = evaluate(args.task, trainer, args.eval_episodes, args.seed)

    def rate(r: dict, key: str) -> float:
        return r["env_steps"] / r[key]

    rows: dict[str, tuple[float, float, int]] = {}
    for w in layouts:
        rows[f"bare, workers {w}"] = (rate(bares[w], "wall_s"), rate(bares[w], "cpu_s"), w)
    for w in layouts:
        r = runs[w][0]
        rows[f"end to end, workers {w}"] = (rate(r, "wall_s"), rate(r, "cpu_s"), w)
        rows[f"collector alone, workers {w}"] = (
            r["env_steps"] / r["collect_wall_s"],
            r["env_steps"] / r["collect_cpu_s"],
            w,
        )
    b1 = rows["bare, workers 1"]
    print(
        f"\n{args.steps} env steps, {os.cpu_count()} cores; cpu = this process + env workers"
        f"\n{'':<30} {'steps/s wall':>12} {'steps/s cpu':>12} {'/bare1 wall':>11} {'/bareW wall':>11}"
        f" {'/bare1 cpu':>10} {'/bareW cpu':>10}"
    )
    for name, (w_rate, c_rate, w) in rows.items():
        bw = rows[f"bare, workers {w}"]
        print(
            f"{name:<30} {w_rate:>12.1f} {c_rate:>12.1f} {w_rate / b1[0]:>11.3f} {w_rate / bw[0]:>11.3f}"
            f" {c_rate / b1[1]:>10.3f} {c_rate / bw[1]:>10.3f}"
        )
    for w in layouts:
        r = runs[w][0]
        print(
            f"workers {w}: collector share of end-to-end time: wall {r['collect_wall_s'] / r['wall_s']:.3f}, "
            f"cpu {r['collect_cpu_s'] / r['cpu_s']:.3f}; {r['updates']} updates in {r['rounds']} rounds"
        )
    for solver, r in cost.items():
        print(
            f"E-step {solver:<5}: {r['estep_ms_cpu']:.2f} ms cpu per update (whole update {r['update_ms_cpu']:.2f} ms cpu)"
        )
    print(
        f"SLSQP / Adam E-step cost: {cost['slsqp']['estep_ms_cpu'] / cost['adam']['estep_ms_cpu']:.1f}x; "
        f"whole update {cost['slsqp']['update_ms_cpu'] / cost['adam']['update_ms_cpu']:.2f}x"
    )
    tr = e2e["train_last_round"]
    print(
        f"at {e2e['env_steps']} steps: training episodes of the last round reward {tr['reward']:.1f} cost "
        f"{tr['cost']:.1f}; deterministic eval ({ev['episodes']} episodes) reward {ev['reward']:.1f} cost {ev['cost']:.1f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "bare": {str(w): b for w, b in bares.items()},
                    "end_to_end": {str(w): r for w, (r, _) in runs.items()},
                    "estep_cost": cost,
                    "eval": ev,
                    "rates": {k: v[:2] for k, v in rows.items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
