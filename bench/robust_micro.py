"""Benchmark (not a test): does MICRO's robust (conservative) target buy robustness?

For every seed in ``--seeds`` (default 0 1 2) this trains the ``micro`` pipeline twice on the
same data, ``policy.robust_target=true`` (MICRO) and ``=false`` (the plain MBPO-style target,
same dynamics artifact: the dynamics stage is keyed independently of the policy keys, so it is
trained once per seed and reused), with ``--preset`` (default ``quick``). Each final policy is
then evaluated with ``corl eval --artifact <policy dir>``:

* ``--attack random`` and ``--attack min_Q`` at ``--eps`` (default 0,0.05,0.1; budgets are
  multiples of the dataset's per-dimension observation std, algorithms.md 2.9);
* optionally ``--sim2real mass=0.5,1,1.5`` (``--sim2real SPEC``).

Everything runs as subprocesses of ``.venv/bin/corl`` (exactly the user's commands), one at a
time, with ``CORL_THREADS`` (default 1), into ``--checkpoints`` (default
``/tmp/corl_robust_micro``; cached stages of earlier runs of this script are reused).

Output: one rich table, a row per method x condition (clean, attack@eps, sim2real cell), with
normalized reward and normalized cost as mean ± std over seeds of the per-seed means (and the
per-seed values), plus a JSON file (``--json``, default ``<checkpoints>/robust_micro.json``)
holding every per-seed number, the commands and the wall times.

Run: ``CORL_THREADS=1 .venv/bin/python bench/robust_micro.py [--preset quick] [--seeds 0 1 2]
[--task OfflineCarCircle-v0] [--episodes 10] [--eps 0,0.05,0.1] [--sim2real mass=0.5,1,1.5]
[--variants robust plain] [--plain-set policy.penalty_coef=15]``.
Cost with the quick preset on a 2-core CPU: ~1 min training per (seed, variant) plus
~1 min of evaluation (10 episodes per cell), i.e. ~10 min for 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import CORL, finished_stage, run_logged  # noqa: E402

_run = run_logged


def _policy_dir(stdout: str, root: Path) -> Path:
    """The micro_policy artifact of the run that just finished."""
    return finished_stage(stdout, root, "micro_policy")[0]


def _cells(ev: dict) -> list[tuple[str, dict]]:
    """(condition, cell) pairs of one eval.json."""
    out = [("clean", ev["clean"])] if ev.get("clean") else []
    attack = ev.get("attack") or {}
    for cell in attack.get("cells", []):
        if float(cell["eps"]) == 0.0 and out:
            continue  # eps 0 equals the clean cell (min_Q includes delta = 0)
        out.append((f"{attack.get('name', attack.get('kind', 'attack'))} eps={cell['eps']:g}", cell))
    s2r = ev.get("sim2real") or {}
    for cell in s2r.get("cells", []):
        scales = ",".join(f"{k}={v:g}" for k, v in cell["scales"].items())
        out.append((f"sim2real {scales}", cell))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="OfflineCarCircle-v0")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--eps", default="0,0.05,0.1")
    ap.add_argument("--attacks", nargs="+", default=["random", "min_Q"])
    ap.add_argument("--sim2real", default=None, help="e.g. mass=0.5,1,1.5 (off by default)")
    ap.add_argument("--checkpoints", default="/tmp/corl_robust_micro")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["robust", "plain"],
        choices=["robust", "plain"],
        help="which targets to train (default both)",
    )
    ap.add_argument(
        "--plain-set",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="extra --set for the plain-target runs only (repeatable), e.g. policy.penalty_coef=15: "
        "the plain target may need its own conservatism to learn at all; the row is labelled",
    )
    args = ap.parse_args()

    root = Path(args.checkpoints)
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CORL_THREADS": os.environ.get("CORL_THREADS", "1")}
    log = root / "robust_micro.log"
    console = Console()
    results: dict[str, dict] = {}  # method -> seed -> {condition: cell, ...}
    runs: list[dict] = []
    variants = []  # (label, --set list)
    if "robust" in args.variants:
        variants.append(("MICRO (robust)", ["policy.robust_target=true"]))
    if "plain" in args.variants:
        label = "plain target" + (f" ({', '.join(args.plain_set)})" if args.plain_set else "")
        variants.append((label, ["policy.robust_target=false", *args.plain_set]))
    for seed in args.seeds:
        for method, sets in variants:
            cmd = [
                CORL,
                "run",
                "micro",
                "--task",
                args.task,
                "--preset",
                args.preset,
                "--seed",
                str(seed),
                "--checkpoints",
                str(root),
            ]
            for item in sets:
                cmd += ["--set", item]
            stdout, train_wall = _run(cmd, env, log)
            pol = _policy_dir(stdout, root)
            info = {"method": method, "seed": seed, "policy": str(pol), "train_wall_s": train_wall, "evals": []}
            conds: dict[str, dict] = {}
            evals = [["--attack", a, "--eps", args.eps] for a in args.attacks]
            if args.sim2real:
                evals.append(["--sim2real", args.sim2real])
            for i, extra in enumerate(evals):
                out = pol / f"bench_eval_{i}"
                ecmd = [
                    CORL,
                    "eval",
                    "--task",
                    args.task,
                    "--artifact",
                    str(pol),
                    "--episodes",
                    str(args.episodes),
                    "--seed",
                    "1000",
                    "--out",
                    str(out),
                    "--checkpoints",
                    str(root),
                    *extra,
                ]
                _, ewall = _run(ecmd, env, log)
                ev = json.loads((out / "eval.json").read_text())
                key = ev.get("score_key", "normalized_reward")
                key = "normalized_reward" if key == "reward" else key
                for cond, cell in _cells(ev):
                    conds[cond] = {
                        "normalized_reward": cell.get(key, cell.get("normalized_reward")),
                        "normalized_cost": cell.get("normalized_cost"),
                        "reward": cell.get("reward"),
                        "cost": cell.get("cost"),
                    }
                info["evals"].append({"command": " ".join(ecmd), "wall_s": ewall, "out": str(out)})
            console.print(
                f"[dim]seed {seed} {method}: train {train_wall:.0f}s, clean "
                f"norm. reward {conds['clean']['normalized_reward']:.3f}, "
                f"norm. cost {conds['clean']['normalized_cost']:.3f}[/]"
            )
            results.setdefault(method, {})[str(seed)] = conds
            runs.append(info)

    def agg(vals: list[float]) -> str:
        if not vals:
            return "-"
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.3f} ± {sd:.3f}"

    table = Table(
        title=f"MICRO robust vs plain target on {args.task} (preset {args.preset}, "
        f"seeds {' '.join(map(str, args.seeds))}, {args.episodes} episodes/cell)",
        title_justify="left",
    )
    for col in ("method", "condition", "norm. reward", "norm. cost", "per-seed reward", "per-seed cost"):
        table.add_column(col)
    summary: list[dict] = []
    for method, per_seed in results.items():
        conditions = list(next(iter(per_seed.values())))
        for cond in conditions:
            r = [s[cond]["normalized_reward"] for s in per_seed.values() if cond in s]
            c = [s[cond]["normalized_cost"] for s in per_seed.values() if cond in s]
            table.add_row(
                method, cond, agg(r), agg(c), " ".join(f"{x:.3f}" for x in r), " ".join(f"{x:.2f}" for x in c)
            )
            summary.append({"method": method, "condition": cond, "normalized_reward": r, "normalized_cost": c})
        table.add_section()
    console.print(table)
    payload = {
        "task": args.task,
        "preset": args.preset,
        "seeds": args.seeds,
        "episodes": args.episodes,
        "variants": {label: sets for label, sets in variants},
        "eps": args.eps,
        "attacks": args.attacks,
        "sim2real": args.sim2real,
        "summary": summary,
        "per_seed": results,
        "runs": runs,
    }
    path = Path(args.json) if args.json else root / "robust_micro.json"
    path.write_text(json.dumps(payload, indent=2))
    print(json.dumps({"json": str(path), "summary": summary}))


if __name__ == "__main__":
    main()
