"""One ``corl eval`` invocation as a library call: select policies, validate, measure, write.

``corl eval`` and :func:`corl.evaluate` both call :func:`evaluate`, so a script gets the same
selection rules, the same one-line :class:`~corl.errors.CorlError` messages and the same
``eval.json`` as the command line. Nothing here prints: messages go to ``progress``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from corl.errors import CorlError
from corl.eval import report, select
from corl.eval.video import VideoFile, VideoOptions

Progress = Callable[[str], None]


@dataclass
class EvalRequest:
    """Which policies (pipeline names on ``task``, ``run_id`` or ``artifact``) and what to measure."""

    pipelines: Sequence[str] = ()
    task: str | None = None
    run_id: str | None = None
    artifact: str | Path | None = None
    options: report.EvalOptions = field(default_factory=report.EvalOptions)
    critic: str | None = None
    out: str | Path | None = None
    checkpoints: str | Path | None = None
    video: VideoOptions = field(default_factory=VideoOptions)
    iterates: int = 0  # DRCORL: roll out this many labelled iterates and rank-correlate the model estimate


@dataclass
class EvalSession:
    """What an evaluation measured and wrote."""

    evals: list[report.PolicyEval]
    written: dict[str, Any]
    videos: dict[str, list[VideoFile]] = field(default_factory=dict)  # policy name -> its video files

    def scores(self) -> dict[str, dict[str, Any]]:
        """``{policy name: clean-condition metrics}`` (episode lists left out)."""
        out = {}
        for ev in self.evals:
            clean = {k: v for k, v in ev.data["clean"].items() if not k.startswith("episode_")}
            out[f"{ev.selected.name} [{ev.selected.checkpoint}]"] = clean
        return out


def select_policies(req: EvalRequest) -> list[tuple[list[select.SelectedPolicy], str | None]]:
    """(policies of one source, pipeline name for the per-limit lookup), one entry per source."""
    from corl.store.artifacts import cache_root
    from corl.tasks import get_task

    root = cache_root(req.checkpoints)
    names = list(req.pipelines)
    spec_task = get_task(req.task) if req.task else None
    if req.artifact:
        if names or req.run_id:
            raise CorlError("--artifact selects one policy: drop the pipeline names / --run")
        return [(select.select_artifact(root, req.artifact, spec_task), None)]
    if req.run_id:
        if len(names) > 1:
            raise CorlError("--run selects one run: give at most one pipeline name with it")
        return [(select.select_run(root, req.run_id, spec_task, names[0] if names else None), None)]
    if not names:
        known = select.known_pipelines(root)
        raise CorlError(f"name a pipeline ({', '.join(known) or 'bc, drcorl, micro'}), --run ID or --artifact PATH")
    if spec_task is None:
        raise CorlError(
            f"--task is required with a pipeline name, e.g. corl eval {names[0]} --task OfflineCarCircle-v0"
        )
    return [(select.select_latest(root, name, spec_task), name) for name in dict.fromkeys(names)]


def evaluate(req: EvalRequest, progress: Progress | None = None) -> EvalSession:
    """Select, validate every policy and option before the first episode, measure, write."""
    from corl.eval.attacks import _canonical
    from corl.eval.critics import check_critic_dims, load_critic
    from corl.store.artifacts import cache_root

    say = progress or (lambda msg: None)
    opts = req.options
    root = cache_root(req.checkpoints)
    selections = select_policies(req)

    wants_q = bool(opts.attack) and _canonical(opts.attack) == "min_Q"
    if req.critic and not wants_q:
        raise CorlError("--critic is only used by --attack min_Q")
    given_critic = load_critic(req.critic, opts.device) if (req.critic and wants_q) else None
    jobs = []
    for policies, pipeline in selections:
        for sel in policies:
            q = None
            if wants_q:
                q = given_critic or select.critic_for(sel, opts.device)
                if q is None:
                    raise CorlError(
                        f"the min_Q attack needs a Q critic and the {sel.label} policy "
                        f"({sel.artifact.dir.name}) keeps none; pass --critic PATH (a drcorl_critics or "
                        "micro_policy artifact, or a .pt critic file)"
                        + (
                            "; micro_policy artifacts built before corl saved critic.pt have none: "
                            "delete the artifact and rerun the pipeline"
                            if sel.artifact.kind == "micro_policy"
                            else ""
                        )
                    )
                check_critic_dims(q, sel.task.obs_dim, sel.task.act_dim)
            per_limit = {}
            if opts.cost_limits and pipeline is not None and sel.checkpoint == "final":
                for limit in opts.cost_limits:
                    try:
                        per_limit[limit] = next(
                            p for p in select.select_latest(root, pipeline, sel.task, limit) if p.checkpoint == "final"
                        )
                    except CorlError:
                        pass  # no policy trained at this limit: the primary one is judged there (and labelled so)
            jobs.append((sel, q, per_limit, report.prepare(sel, opts, q)))

    first = jobs[0][0]
    say(f"evaluating {', '.join(f'{s.name} [{s.checkpoint}]' for s, *_ in jobs)} on {first.task.name}")
    evals = []
    for sel, q, per_limit, prepared in jobs:
        st = prepared.setting
        envs = f"{st.num_envs} env" + ("s" if st.num_envs != 1 else "")
        say(
            f"{sel.name}: {sel.artifact.dir}"
            + (f" (run {sel.run_id})" if sel.run_id else "")
            + f"; {st.episodes} episodes in total, spread over {envs} (env seeds from {st.seed})"
        )
        evals.append(report.evaluate_policy(sel, opts, q, per_limit, progress=say, prepared=prepared))
    for ev in evals:  # DRCORL: the model estimate of labelled iterates against the simulator
        if ev.selected.checkpoint == "final" and ev.selected.model_estimate and req.iterates > 0:
            from corl.eval.iterates import evaluate_iterates

            st = ev.data
            ev.data["iterates"] = evaluate_iterates(
                ev.selected,
                req.iterates,
                st["episodes"],
                st["num_envs"],
                st["seed"],
                st["cost_limit"],
                opts.device,
                progress=say,
            )
    written = report.write_outputs(evals, opts, req.out)
    videos = record_videos(evals, jobs, opts, req.video, say) if req.video.episodes else {}
    return EvalSession(evals, written, videos)


def record_videos(
    evals: list[report.PolicyEval], jobs: list, opts: report.EvalOptions, video: VideoOptions, say: Progress
) -> dict[str, list[VideoFile]]:
    """``video.episodes`` episodes per policy into ``<its eval dir>/videos/`` (clean, and with
    ``video.perturbed`` each sim2real cell and attack budget of the evaluation)."""
    import torch

    from corl.eval import video as vid
    from corl.eval.attacks import make_attack
    from corl.eval.sim2real import cell_label, perturbation_hook
    from corl.store.artifacts import write_json_atomic

    out: dict[str, list[VideoFile]] = {}
    for ev, (sel, q, _, prepared) in zip(evals, jobs):
        st = prepared.setting
        directory = Path(ev.out_dir) / "videos"
        name = f"{sel.label}" + ("" if sel.checkpoint == "final" else f"-{sel.checkpoint}")
        conditions: list[tuple[str, Any, Any]] = [("clean", None, None)]
        if video.perturbed:
            for cell in prepared.cells:
                conditions.append((f"sim2real-{cell_label(cell)}", None, perturbation_hook(cell)))
            if prepared.attack_info is not None:
                for eps in opts.eps:
                    gen = torch.Generator().manual_seed(st.seed)
                    attack = make_attack(
                        opts.attack, eps, prepared.obs_std, prepared.victim, q, opts.candidates, opts.attack_steps, gen
                    )
                    conditions.append((f"{prepared.attack_info['label']}-eps{eps:g}", attack, None))
        files: list[VideoFile] = []
        for condition, transform, hook in conditions:
            made = vid.record(
                sel.task,
                prepared.policy_fn,
                video,
                directory,
                name,
                seed=st.seed,
                condition=condition,
                device=opts.device,
                obs_transform=transform,
                env_hook=hook,
            )
            for f in made:
                say(f"video: {f.path} ({f.frames} frames, episode of {f.length} steps)")
            files.extend(made)
        out[sel.name] = files
        ev.data["videos"] = [
            {
                "path": str(f.path),
                "reward": f.reward,
                "cost": f.cost,
                "length": f.length,
                "frames": f.frames,
                "every": video.every,
                "env_seed": f.seed,
                "condition": f.condition,
            }
            for f in files
        ]
        path = Path(ev.out_dir) / "eval.json"  # written before the videos: add their list
        data = json.loads(path.read_text())
        data["videos"] = ev.data["videos"]
        write_json_atomic(path, data)
    return out


__all__ = ["EvalRequest", "EvalSession", "select_policies", "evaluate", "record_videos"]
