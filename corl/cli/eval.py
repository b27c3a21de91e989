"""``corl eval``: how good, how safe and how robust a trained policy is.

Thin on purpose: it calls :func:`corl.evaluate` (the Python API; selection in
:mod:`corl.eval.select`, the session in :mod:`corl.eval.session`, measuring and writing in
:mod:`corl.eval.report`, videos in :mod:`corl.eval.video`) and prints the table.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()

from corl.eval import DEFAULT_EPS  # noqa: E402 (light: the package init imports nothing heavy)


def _split_specs(pipelines: list[str], sim2real: list[str]) -> tuple[list[str], list[str]]:
    """Positional ``PARAM=SCALES`` words are sim2real specs, so the issue's spelling works:
    ``--sim2real friction=0.5:1.5:10 gravity=0.5:5:10`` (the shell hands the second spec to
    the positional list). A quoted list of several specs is split on whitespace too."""
    names = [p for p in pipelines if "=" not in p]
    specs = [w for s in sim2real for w in s.split()] + [p for p in pipelines if "=" in p]
    return names, specs


def _fmt(cell: dict[str, Any], key: str) -> str:
    value = cell.get(key)
    if value is None:
        return "-"
    std = cell.get(f"{key}_std")
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def _safe(cell: dict[str, Any]) -> str:
    if "safe" not in cell:
        return "-"
    return "[green]safe[/]" if cell["safe"] else "[red]unsafe[/]"


def _table(evals: list, task_name: str, score_key: str) -> Table:
    headline = {"normalized_score": "D4RL score", "normalized_reward": "norm. reward"}.get(score_key, "reward")
    table = Table(title=f"corl eval on {task_name}", title_justify="left")
    for col in ("policy", "ckpt", "condition", "limit", headline, "norm. cost", "safe", "eps."):
        table.add_column(col, overflow="fold")
    for ev in evals:
        d = ev.data
        who = d["policy"]["label"]
        ckpt = d["policy"]["checkpoint"]
        limit = "-" if d["cost_limit"] is None else f"{d['cost_limit']:g}"

        def row(condition: str, cell: dict[str, Any], lim: str = limit) -> None:
            table.add_row(
                who,
                ckpt,
                condition,
                lim,
                _fmt(cell, score_key),
                _fmt(cell, "normalized_cost"),
                _safe(cell),
                str(int(cell.get("episodes", 0))),
            )

        row("clean", d["clean"])
        if "cost_limits" in d:
            for r in d["cost_limits"]["per_limit"]:
                trained = r["trained_cost_limit"]
                note = (
                    "trained here"
                    if r["trained_at_this_limit"]
                    else f"trained at {trained:g}"
                    if trained is not None
                    else "untrained limit"
                )
                row(f"limit {r['cost_limit']:g} ({note})", r, f"{r['cost_limit']:g}")
            mean = d["cost_limits"]["mean"]
            table.add_row(
                who,
                ckpt,
                "mean over limits",
                ",".join(f"{v:g}" for v in d["cost_limits"]["limits"]),
                f"{mean[score_key]:.3f}",
                f"{mean['normalized_cost']:.3f}",
                _safe(mean),
                "",
            )
        for c in d.get("sim2real", {}).get("cells", []):
            row("sim2real " + ",".join(f"{k}={v:.3g}" for k, v in c["scales"].items()), c)
        if "attack" in d:
            for c in d["attack"]["cells"]:
                row(f"{d['attack']['label']} eps={c['eps']:.3g}", c)
    return table


def verdict_lines(evals: list, score_key: str) -> list[str]:
    """One plain sentence per compared policy after the first: is the first safe, and does it
    earn more than that one (clean condition)? ``corl eval A B`` (and ``make demo``) end with it."""
    if len(evals) < 2:
        return []
    head = evals[0].data
    who, cell = head["policy"]["label"], head["clean"]
    if score_key not in cell:
        return []
    cost = cell.get("normalized_cost")
    safety = ("safe" if cell.get("safe") else "unsafe") if "safe" in cell else "safety not judged (no cost limit)"
    if cost is not None and "safe" in cell:
        safety += f" (normalized cost {cost:.2f} {'<=' if cell['safe'] else '>'} 1)"
    lines = []
    for ev in evals[1:]:
        other, o = ev.data["policy"]["label"], ev.data["clean"]
        if score_key not in o:
            continue
        mine, theirs = cell[score_key], o[score_key]
        word = "more than" if mine > theirs else "less than" if mine < theirs else "as much as"
        lines.append(
            f"{who}: {safety}; it earns {mine:.3f}, {word} {other} ({theirs:.3f}"
            + ("" if "safe" not in o else f", {'safe' if o['safe'] else 'unsafe'}")
            + ")."
        )
    return lines


def _rho(r: dict[str, Any]) -> str:
    return "undefined" if r.get("rho") is None else f"{r['rho']:.2f} (p {r['p']:.2g})"


def _model_table(evals: list) -> Table | None:
    """DRCORL: the offline model estimate beside the simulator's numbers, per policy and iterate."""
    rows = []
    for ev in evals:
        d, est = ev.data, ev.data.get("model_estimate")
        if not est:
            continue
        clean = d["clean"]
        rows.append(
            (
                ev.selected.label,
                d["policy"]["checkpoint"],
                str(est.get("iteration", "-")),
                est.get("model_normalized_reward"),
                est.get("model_normalized_cost"),
                clean.get("normalized_reward"),
                clean.get("normalized_cost"),
            )
        )
        for r in (d.get("iterates") or {}).get("iterates", []):
            if r["final"] or r["best_offline"]:  # listed as policies already (same env seeds, same numbers)
                continue
            rows.append(
                (
                    ev.selected.label,
                    "iterate",
                    str(r["iteration"]),
                    r["model_normalized_reward"],
                    r["model_normalized_cost"],
                    r["sim_normalized_reward"],
                    r["sim_normalized_cost"],
                )
            )
    if not rows:
        return None
    table = Table(title="model estimate (offline) vs simulator", title_justify="left")
    for col in ("policy", "ckpt", "safe iter.", "model nR", "model nC", "sim. nR", "sim. nC"):
        table.add_column(col, overflow="fold")
    num = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for who, ckpt, it, mr, mc, sr, sc in rows:
        table.add_row(who, ckpt, it, num(mr), num(mc), num(sr), num(sc))
    return table


def eval_command(
    pipelines: List[str] = typer.Argument(
        None,
        help="Pipeline name(s): the latest finished run of each on --task "
        "(several: compared on one figure). PARAM=SCALES words are sim2real specs.",
    ),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task name, e.g. OfflineCarCircle-v0."),
    run_id: Optional[str] = typer.Option(None, "--run", help="A run id (record file name or a unique part of it)."),
    artifact: Optional[str] = typer.Option(None, "--artifact", help="A policy (or evaluate) artifact directory."),
    episodes: Optional[int] = typer.Option(
        None, "--episodes", "-n", help="Episodes per condition, in total (default: the run's evaluate stage, else 10)."
    ),
    num_envs: Optional[int] = typer.Option(
        None,
        "--num-envs",
        help="Vector envs the episodes are spread over (batched inference); default: the run's, else 4.",
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Env seed of env 0 (env i: seed+i); default: the run's seed."
    ),
    cost_limit: Optional[float] = typer.Option(
        None, "--cost-limit", help="Judge safety at this limit (default: the policy's training limit)."
    ),
    cost_limits: Optional[str] = typer.Option(
        None,
        "--cost-limits",
        help="DSRL's protocol, e.g. 10,20,40: per threshold (the policy trained at it when one exists) and averaged.",
    ),
    sim2real: List[str] = typer.Option(
        [], "--sim2real", help="PARAM=LO:HI:N or PARAM=A,B,C (friction, gravity, mass, actuator); several form a grid."
    ),
    attack: Optional[str] = typer.Option(None, "--attack", help="Observation attack: random, action_diff or min_Q."),
    eps: Optional[str] = typer.Option(
        None, "--eps", help=f"Attack budgets, x the dataset's per-dim obs std: LO:HI:N or A,B (default {DEFAULT_EPS})."
    ),
    attack_steps: int = typer.Option(
        0, "--attack-steps", help="Projected sign-gradient steps after the search (0: MICRO's zero-order search only)."
    ),
    candidates: int = typer.Option(50, "--candidates", help="Zero-order search candidates per step (MICRO: 50)."),
    critic: Optional[str] = typer.Option(
        None, "--critic", help="Q critic for min_Q: an artifact dir (drcorl_critics, micro_policy) or a .pt file."
    ),
    out: Optional[str] = typer.Option(
        None, "--out", help="Write eval.json and PNGs here (default: <policy artifact>/eval)."
    ),
    checkpoints: Optional[str] = typer.Option(
        None, "--checkpoints", help="Cache root (default $CORL_CHECKPOINTS or ./checkpoints)."
    ),
    device: str = typer.Option("cpu", "--device", help="Torch device for policy inference and attacks."),
    iterates: int = typer.Option(
        4,
        "--iterates",
        min=0,
        help="DRCORL: roll out this many labelled policy iterates "
        "(plus the final and best-offline ones) and rank-correlate the model estimate with "
        "the simulator (0: off).",
    ),
    video: int = typer.Option(
        0, "--video", help="Record N episodes per policy as MP4 (GIF without ffmpeg) under <eval dir>/videos/."
    ),
    video_every: int = typer.Option(
        1, "--video-every", help="Keep one frame in K steps (rendering costs far more than a step)."
    ),
    video_size: Optional[str] = typer.Option(None, "--video-size", help="Frame size WxH (default: the simulator's)."),
    video_perturbed: bool = typer.Option(
        False, "--video-perturbed", help="Also record each sim2real cell and attack budget."
    ),
) -> None:
    """Evaluate trained policies: normalized reward and cost, sim2real physics sweeps, observation attacks."""
    if video:
        from corl.eval.video import prefer_egl

        prefer_egl()  # before anything imports mujoco
    import corl.api as api
    from corl.checks import check_seed
    from corl.eval import report
    from corl.pipeline.runner import resolve_device

    resolve_device(device)  # --device cuda without CUDA: one line now, not a traceback later
    if seed is not None:
        check_seed(seed)
    names, specs = _split_specs(list(pipelines or []), list(sim2real))
    session = api.evaluate(
        names,
        task=task,
        run=run_id,
        artifact=artifact,
        episodes=episodes,
        num_envs=num_envs,
        seed=seed,
        cost_limit=cost_limit,
        cost_limits=cost_limits,
        sim2real=specs,
        attack=attack,
        eps=eps,
        attack_steps=attack_steps,
        candidates=candidates,
        critic=critic,
        out=out,
        checkpoints=checkpoints,
        device=device,
        video=video,
        video_every=video_every,
        video_size=video_size,
        video_perturbed=video_perturbed,
        iterates=iterates,
        progress=lambda msg: console.print(f"[dim]{escape(msg)}[/]", highlight=False, soft_wrap=True),
        command=shlex.join(["corl", *sys.argv[1:]]),
    )
    evals = session.evals
    first = evals[0].selected
    console.print(_table(evals, first.task.name, report.score_key(first.task)))
    model_table = _model_table(evals)
    if model_table is not None:
        console.print(model_table)
        for ev in evals:
            it = ev.data.get("iterates")
            if it:
                rc, rr = it["spearman_cost"], it["spearman_reward"]
                console.print(
                    f"{escape(ev.selected.label)}: Spearman rank correlation, model estimate vs simulator over "
                    f"{len(it['iterates'])} iterates: cost {_rho(rc)}, reward {_rho(rr)}",
                    highlight=False,
                )
    for ev in evals:
        if "attack" in ev.data:
            src = ev.data["attack"]["obs_std_source"]
            line = (
                f"{ev.selected.label}: attack box = eps x obs std of {src['path']} ({src['transitions']} transitions)"
                + (f"; critic {ev.data['attack']['critic']['source']}" if ev.data["attack"]["critic"] else "")
            )
            console.print(f"[dim]{escape(line)}[/]", highlight=False, soft_wrap=True)
        console.print(
            escape(f"eval.json: {ev.out_dir / 'eval.json'}" + "".join(f"\nplot: {p}" for p in ev.files)),
            highlight=False,
            soft_wrap=True,
        )
    for line in verdict_lines(evals, report.score_key(first.task)):
        console.print(escape(line), highlight=False, soft_wrap=True)
    if session.written["compare"]:
        console.print(
            escape(f"comparison: {session.written['compare']}/eval.json and its PNGs"), highlight=False, soft_wrap=True
        )


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
