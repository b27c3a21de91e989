"""Diagnosis of DRCORL's stages in isolation on one dataset (a benchmark, not a test).

For one dataset, seed and preset it runs (or reuses from the cache) the ``drcorl`` pipeline,
then checks each stage against a reference the stage should approach:

(a) behaviour model: actions drawn with the full reverse diffusion sampler
    (``corl.nn.diffusion.sample_actions``, ``--sampler-steps``) driven in the simulator as a
    stochastic policy, vs the dataset's average episode (normalized reward / cost);
(b) warm-start policy (the same pipeline with ``policy.train_epochs=1``: one safe iteration, inside the warm-up) vs BC-All on the
    same rows; for both: the share of saturated throttle and the per-dim correlation of the
    policy's actions with the data's over dataset states;
(c) critics vs Monte-Carlo: ``mean_j Q_j(s, a)`` at dataset (s, a) against the discounted
    reward-to-go (IQL-scaled) and cost-to-go of the episode (correlation, mean ratio);
(d) the switch's critic cost estimate of the final policy vs its simulator cost.

Run: ``CORL_THREADS=1 .venv/bin/python bench/diagnose_drcorl.py --dataset FILE [--seed 0]
[--preset quick] [--set stage.key=value ...] [--episodes 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

TASK = "OfflineCarCircle-v0"


def run(pipeline: str, args, overrides: list[str]):
    from corl.pipeline.runner import RunRequest, run_pipeline

    req = RunRequest(
        pipeline=pipeline,
        task=args.task,
        preset=args.preset or None,
        seed=args.seed,
        overrides=[f"evaluate.episodes={args.episodes}", *overrides],
        device="cpu",
        dataset=str(args.dataset),
        offline=True,
        checkpoints=args.checkpoints,
    )
    return run_pipeline(req)


def stage(result, name: str):
    return next(o for o in result.stages if o.name == name)


def scores(result) -> tuple[float, float]:
    final = result.scores["final"]
    return float(final["evaluate/normalized_reward"]), float(final["evaluate/normalized_cost"])


def action_stats(fn, data, n: int = 20000) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(data), (min(n, len(data)),), generator=g)
    obs, act = data.observations[idx], data.actions[idx]
    with torch.no_grad():
        pa = fn(obs)
    out = {"throttle_sat": float((pa[:, 0].abs() > 0.95).float().mean())}
    for d in range(act.shape[1]):
        out[f"corr{d}"] = float(np.corrcoef(pa[:, d].numpy(), act[:, d].numpy())[0, 1])
        out[f"std{d}"] = float(pa[:, d].std())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--task", default=TASK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--sampler-steps", type=int, default=20)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--checkpoints", default=os.environ.get("CORL_QUALITY_CHECKPOINTS", "/tmp/corl-quality"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("CORL_THREADS", "1")))

    from corl.algos.drcorl import BehaviorConfig, CriticConfig, CriticLearner, build_score_net
    from corl.algos.drcorl.policy import critic_episodic_cost, discounted_to_go, normalised_cost
    from corl.data.formats.dsrl import read_dsrl
    from corl.eval.rollout import rollout
    from corl.eval.scores import normalized_cost, normalized_reward
    from corl.nn.diffusion import VPSchedule, sample_actions
    from corl.store.policies import load_policy_fn
    from corl.tasks import get_task

    spec = get_task(args.task)
    limit = float(spec.cost_limit or 10.0)
    data = read_dsrl(args.dataset)
    starts, ends = data.episode_bounds()
    starts, ends = np.asarray(starts), np.asarray(ends)
    rew = data.rewards.double().numpy()
    cost = data.costs.double().numpy()
    ep_r = np.array([rew[s:e].sum() for s, e in zip(starts, ends)])
    ep_c = np.array([cost[s:e].sum() for s, e in zip(starts, ends)])
    rows: list[tuple[str, str, str]] = []
    out: dict = {"dataset": str(args.dataset), "seed": args.seed, "preset": args.preset, "overrides": args.overrides}
    d_nr, d_nc = float(np.mean(normalized_reward(spec, ep_r))), float(np.mean(normalized_cost(ep_c, limit)))
    rows.append(
        (
            "dataset average episode",
            f"{d_nr:.3f} / {d_nc:.2f}",
            f"{len(ep_r)} episodes, {np.mean(ep_c <= limit):.0%} safe at {limit:g}",
        )
    )
    out["dataset"] = {"nr": d_nr, "nc": d_nc}

    t0 = time.perf_counter()
    full = run("drcorl", args, args.overrides)
    f_nr, f_nc = scores(full)
    out["final"] = {"nr": f_nr, "nc": f_nc, "wall_s": time.perf_counter() - t0}

    # (a) behaviour model sampler in the simulator
    b = stage(full, "behavior")
    bman = json.loads((b.dir / "manifest.json").read_text())
    bcfg = BehaviorConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in bman["outputs"]["config"].items()})
    net = build_score_net(data.obs_dim, data.act_dim, bcfg)
    net.load_state_dict(torch.load(b.dir / "behavior.pt", weights_only=True)["net"])
    net.eval()
    sched = VPSchedule(bcfg.beta0, bcfg.beta1)
    gen = torch.Generator().manual_seed(args.seed)
    sampler = lambda obs: sample_actions(net, sched, obs, steps=args.sampler_steps, generator=gen)  # noqa: E731
    res = rollout(spec, sampler, args.episodes, seed=args.seed, num_envs=2)
    a_nr = float(np.mean(normalized_reward(spec, res.reward)))
    a_nc = float(np.mean(normalized_cost(res.cost, limit)))
    rows.append(
        (
            f"(a) behaviour sampler, {args.sampler_steps} steps",
            f"{a_nr:.3f} / {a_nc:.2f}",
            f"val loss {stage(full, 'behavior').metrics.get('behavior/val_loss', float('nan')):.3f}",
        )
    )
    out["sampler"] = {"nr": a_nr, "nc": a_nc, **action_stats(sampler, data, 3000)}

    # (b) warm start vs BC-All
    warm = run("drcorl", args, [*args.overrides, "policy.train_epochs=1"])
    w_nr, w_nc = scores(warm)
    wp = stage(warm, "policy")
    wman = json.loads((wp.dir / "manifest.json").read_text())
    wfn = load_policy_fn(wp.dir, wman["outputs"]["policy"])
    ws = action_stats(wfn, data)
    rows.append(
        (
            "(b) warm-start policy",
            f"{w_nr:.3f} / {w_nc:.2f}",
            f"sat {ws['throttle_sat']:.0%} corr {ws['corr0']:.2f}/{ws['corr1']:.2f} std {ws['std0']:.2f}/{ws['std1']:.2f}",
        )
    )
    bc = run("bc", args, ["bc.mode=all"])
    bc_nr, bc_nc = scores(bc)
    bp = stage(bc, "policy") if any(o.name == "policy" for o in bc.stages) else stage(bc, "bc")
    bman2 = json.loads((bp.dir / "manifest.json").read_text())
    bfn = load_policy_fn(bp.dir, bman2["outputs"]["policy"])
    bs = action_stats(bfn, data)
    rows.append(
        (
            "(b) BC-All",
            f"{bc_nr:.3f} / {bc_nc:.2f}",
            f"sat {bs['throttle_sat']:.0%} corr {bs['corr0']:.2f}/{bs['corr1']:.2f} std {bs['std0']:.2f}/{bs['std1']:.2f}",
        )
    )
    out["warm"] = {"nr": w_nr, "nc": w_nc, **ws}
    out["bc_all"] = {"nr": bc_nr, "nc": bc_nc, **bs}

    # (c) critics vs Monte-Carlo returns
    c = stage(full, "critics")
    cman = json.loads((c.dir / "manifest.json").read_text())
    ccfg = CriticConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in cman["outputs"]["config"].items()})
    scale = float(cman["outputs"]["reward_scale"])
    critics = CriticLearner(data.obs_dim, data.act_dim, ccfg, scale, "cpu")
    critics.load_state_dict(torch.load(c.dir / "critics.pt", weights_only=True))
    mc_r = discounted_to_go(data.rewards * scale, data, ccfg.gamma).double().numpy()
    mc_c = discounted_to_go(data.costs, data, ccfg.gamma).double().numpy()
    idx = torch.randint(len(data), (5000,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        qr = critics.q_r(data.observations[idx], data.actions[idx]).mean(0).reshape(-1).numpy()
        qc = critics.q_c(data.observations[idx], data.actions[idx]).mean(0).reshape(-1).numpy()
    i = idx.numpy()
    cr = float(np.corrcoef(qr, mc_r[i])[0, 1])
    cc = float(np.corrcoef(qc, mc_c[i])[0, 1])
    rows.append(("(c) Q_r vs MC reward-to-go", f"corr {cr:.2f}", f"mean Q {qr.mean():.1f} vs MC {mc_r[i].mean():.1f}"))
    rows.append(("(c) Q_c vs MC cost-to-go", f"corr {cc:.2f}", f"mean Q {qc.mean():.1f} vs MC {mc_c[i].mean():.1f}"))
    out["critics"] = {
        "corr_r": cr,
        "corr_c": cc,
        "q_r": float(qr.mean()),
        "mc_r": float(mc_r[i].mean()),
        "q_c": float(qc.mean()),
        "mc_c": float(mc_c[i].mean()),
    }

    # (d) the switch's estimate of the final policy vs the simulator
    p = stage(full, "policy")
    pman = json.loads((p.dir / "manifest.json").read_text())
    pfn = load_policy_fn(p.dir, pman["outputs"]["policy"])
    fs = action_stats(pfn, data)
    est = float(p.metrics.get("cost_estimate", float("nan")))
    from corl.store.policies import load_policy_module

    module, _, _ = load_policy_module(p.dir, pman["outputs"]["policy"])
    obs = data.observations[idx]
    crit_est = normalised_cost(
        float(critic_episodic_cost(critics.q_c_target, module, obs, ccfg.gamma, int(spec.max_episode_steps))), limit
    )
    rows.append(
        (
            "final policy (simulator)",
            f"{f_nr:.3f} / {f_nc:.2f}",
            f"sat {fs['throttle_sat']:.0%} corr {fs['corr0']:.2f}/{fs['corr1']:.2f}",
        )
    )
    rows.append(
        ("(d) switch estimate at the end", f"{est:.2f}", f"pre-TD critics: {crit_est:.2f}; simulator nC {f_nc:.2f}")
    )
    out["final"].update(fs)
    out["switch"] = {"final_estimate": est, "pretd_critic_estimate": crit_est}

    table = Table(
        title=f"DRCORL diagnosis: {args.dataset.name} seed {args.seed} preset {args.preset} {' '.join(args.overrides)}"
    )
    for col in ("check", "nR / nC (or value)", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    path = args.json or Path(args.checkpoints) / f"diagnose-{args.dataset.stem}-s{args.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"json: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
