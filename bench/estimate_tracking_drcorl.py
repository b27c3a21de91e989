"""Benchmark (not a test): how well each offline estimate of a policy's episodic cost tracks
the simulator over the iterates of one DRCORL run.

Given a finished ``drcorl_policy`` artifact that labelled its iterates (``iterates.json``,
``iterates/iter-*.pt``; a ``drcorl`` run with its ``dynamics`` stage), every labelled iterate
is judged by

* ``critic/batch``: ``(1 - gamma) T mean_s Qbar_c(s, pi(s))`` over dataset states (the switch's
  default estimate), and ``critic/initial`` over episode-initial states;
* ``model/dataset``: the model estimate from dataset states, H steps plus the critic tail
  (``--horizon``, ``--pessimism``);
* ``model/initial``: whole T-step model episodes from the dataset's initial states, no critic;
* the simulator: ``--episodes`` episodes, the same env seeds for every iterate.

Critic-based numbers use the *critics stage's* critics (the policy stage's TD fine-tuned copies
are not kept in the artifact), so they are what the switch read at the start of the safe phase,
not at each iterate. Output: a rich table per iterate (normalized cost of each estimate and of
the simulator) and each estimate's Spearman rank correlation with the simulator's cost (and
reward where the estimate has one), plus a JSON file (``--json``).

Run: ``CORL_THREADS=1 .venv/bin/python bench/estimate_tracking_drcorl.py --artifact
checkpoints/OfflineCarCircle-v0/drcorl_policy-KEY [--episodes 10] [--max-iterates 17]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from corl.algos.drcorl import (
        CriticConfig,
        CriticLearner,
        critic_episodic_cost,
        initial_observations,
        normalised_cost,
    )
    from corl.algos.drcorl.model_estimate import ModelEstimateConfig, PolicyModelEstimator
    from corl.data.store import load_task_dataset
    from corl.eval.iterates import pick_iterates, spearman
    from corl.eval.rollout import rollout
    from corl.eval.scores import normalized_reward
    from corl.pipeline.stages.micro import load_dynamics
    from corl.store.artifacts import verify
    from corl.store.policies import load_policy_module
    from corl.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", required=True, help="a drcorl_policy artifact directory that labelled iterates")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--num-envs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-iterates", type=int, default=17)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--pessimism", type=float, default=1.0)
    ap.add_argument("--num-starts", type=int, default=1000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    console = Console()

    policy_art = verify(Path(args.artifact))
    if policy_art is None or "iterates_file" not in policy_art.outputs:
        raise SystemExit(f"{args.artifact}: not a finished drcorl_policy artifact with labelled iterates")
    root = policy_art.dir.parent
    inputs = {role: verify(root / ref["dir"]) for role, ref in policy_art.manifest["inputs"].items()}
    task = get_task(policy_art.manifest["task"])
    data = load_task_dataset(task, path=inputs["dataset"].outputs["path"])
    crit_art = inputs["critics"]
    ccfg = dict(crit_art.outputs["config"])
    ccfg["hidden"] = tuple(ccfg["hidden"])
    critics = CriticLearner(data.obs_dim, data.act_dim, CriticConfig(**ccfg), crit_art.outputs["reward_scale"])
    critics.load_state_dict(torch.load(crit_art.dir / crit_art.outputs["file"], weights_only=True))
    with torch.random.fork_rng(devices=[]):
        dynamics = load_dynamics(inputs["dynamics"])
    pcfg = policy_art.manifest["config"]
    kappa = float(policy_art.outputs["cost_limit"])
    gamma, T = float(pcfg["gamma"]), int(pcfg["episode_len"] or task.max_episode_steps)
    init_obs = initial_observations(data)
    estimators = {
        "model/dataset": PolicyModelEstimator(
            dynamics,
            ModelEstimateConfig(horizon=args.horizon, num_starts=args.num_starts, pessimism=args.pessimism),
            gamma,
            T,
            data.observations,
            init_obs,
            critics,
            seed=args.seed,
        ),
        "model/initial": PolicyModelEstimator(
            dynamics,
            ModelEstimateConfig(start_states="initial", num_starts=args.num_starts, pessimism=args.pessimism),
            gamma,
            T,
            data.observations,
            init_obs,
            critics,
            seed=args.seed,
        ),
    }
    doc = json.loads((policy_art.dir / policy_art.outputs["iterates_file"]).read_text())
    chosen = pick_iterates(doc["iterates"], args.max_iterates, [doc["final_iteration"], doc["best_offline_iteration"]])
    gen = torch.Generator().manual_seed(args.seed)
    states = data.observations[torch.randperm(len(data), generator=gen)[:4096]]
    spec = policy_art.outputs["policy"]
    rows = []
    for label in chosen:
        module, _, _ = load_policy_module(policy_art.dir, dict(spec, file=label["file"]))
        t0 = time.perf_counter()
        row = {
            "iteration": int(label["iteration"]),
            "critic/batch": float(critic_episodic_cost(critics.q_c_target, module, states, gamma, T)),
            "critic/initial": float(critic_episodic_cost(critics.q_c_target, module, init_obs, gamma, T, True)),
        }
        for name, est in estimators.items():
            e = est.estimate(module)
            row[name], row[name + ":reward"] = e.cost, e.reward
        row["estimate_s"] = time.perf_counter() - t0
        res = rollout(task, torch.no_grad()(module), args.episodes, seed=args.seed, num_envs=args.num_envs)
        row["simulator"], row["simulator:reward"] = float(res.cost.mean()), float(res.reward.mean())
        rows.append(row)
        console.print(
            f"[dim]iteration {row['iteration']}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "iteration")
            + "[/]",
            highlight=False,
        )

    names = ["critic/batch", "critic/initial", "model/dataset", "model/initial", "simulator"]
    table = Table(
        title=f"normalized episodic cost by estimate, {task.name} (kappa {kappa:g}), "
        f"{args.episodes} simulator episodes per iterate",
        title_justify="left",
    )
    table.add_column("safe iteration")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("sim. norm. reward", justify="right")
    for row in rows:
        table.add_row(
            str(row["iteration"]),
            *[f"{normalised_cost(row[n], kappa):.2f}" for n in names],
            f"{float(normalized_reward(task, [row['simulator:reward']])[0]):.3f}",
        )
    console.print(table)
    sim_c, sim_r = [r["simulator"] for r in rows], [r["simulator:reward"] for r in rows]
    corr = {}
    for name in names[:-1]:
        corr[name] = {"cost": spearman([r[name] for r in rows], sim_c)}
        if name + ":reward" in rows[0]:
            corr[name]["reward"] = spearman([r[name + ":reward"] for r in rows], sim_r)
        fmt = lambda r: "undefined" if r["rho"] is None else f"{r['rho']:.2f} (p {r['p']:.2g})"  # noqa: E731
        line = f"{name}: Spearman vs simulator cost {fmt(corr[name]['cost'])} over {len(rows)} iterates"
        if "reward" in corr[name]:
            line += f", reward {fmt(corr[name]['reward'])}"
        console.print(line, highlight=False)
    import tempfile

    out = (
        Path(args.json)
        if args.json
        else Path(tempfile.gettempdir()) / f"estimate_tracking_drcorl-{policy_art.key}.json"
    )
    out.write_text(
        json.dumps({"artifact": str(policy_art.dir), "args": vars(args), "rows": rows, "spearman": corr}, indent=1)
    )
    console.print(f"json: {out}")


if __name__ == "__main__":
    main()
