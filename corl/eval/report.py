"""``corl eval``'s engine: clean score, cost-limit protocol, sim2real grid and attack sweep.

Returns plain data (what ``eval.json`` holds) and writes the JSON and PNGs; printing is the
CLI's job. Design choices, and why:

* Common random numbers: every condition of one policy (clean, each sim2real cell, each
  attack eps) rolls out with the *same* env seeds (``seed + i`` for vector env ``i``) and a
  fresh attack generator seeded with ``seed``. Differences between conditions are then due
  to the perturbation, not to different initial states, and ``eps = 0`` reproduces the clean
  episodes exactly (the attack returns the observation unchanged).
* sim2real and attacks are separate one-factor sweeps around nominal conditions (each
  sim2real cell at clean observations, each eps at nominal physics), as in MICRO's
  robustness figures; the sim2real specs themselves form a full grid (10x10 for MICRO).
* The cost-limit protocol (DSRL: a policy per threshold, each judged at its own threshold,
  then averaged) uses, per threshold, the policy trained at it when the caller found one,
  else the primary policy, and records which ("trained_cost_limit" per threshold), so a
  table can never pass off one policy's numbers as per-threshold training.
* Final and best checkpoints are separate entries with their own labels.
* The attack's box is ``eps`` times the per-dimension observation std of the dataset the
  policy was trained on (read from the path the run's dataset artifact recorded and
  re-checked against its sha256); the JSON cites that file.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from corl.errors import CorlError
from corl.eval.ranges import parse_values
from corl.eval.select import SelectedPolicy
from corl.tasks import TaskSpec

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------- options
def parse_eps(text: str) -> tuple[float, ...]:
    """``"0:0.2:10"`` -> 10 evenly spaced budgets (ends included); ``"0,0.05"`` -> those."""
    return parse_values(text, "--eps", "budgets", "0:0.2:10", "0,0.05,0.1")


def parse_limits(text: str) -> tuple[float, ...]:
    """``"10,20,40"`` -> (10.0, 20.0, 40.0); one-line error on anything else."""
    return parse_values(text, "--cost-limits", "limits", None, "10,20,40")


@dataclass
class EvalOptions:
    """What to measure; None means "the run's own setting" (see :func:`resolved`)."""

    episodes: int | None = None
    num_envs: int | None = None
    seed: int | None = None
    cost_limit: float | None = None
    cost_limits: tuple[float, ...] = ()
    sim2real: tuple[str, ...] = ()
    attack: str | None = None
    eps: tuple[float, ...] = (0.0,)
    attack_steps: int = 0
    candidates: int = 50
    device: str = "cpu"
    command: str = ""

    def __post_init__(self) -> None:
        if self.episodes is not None and self.episodes < 1:
            raise CorlError(f"--episodes must be >= 1, got {self.episodes}")
        if self.num_envs is not None and self.num_envs < 1:
            raise CorlError(f"--num-envs must be >= 1, got {self.num_envs}")
        if self.attack_steps < 0 or self.candidates < 0:
            raise CorlError("--attack-steps and --candidates must be >= 0")


@dataclass
class Setting:
    """The resolved numbers for one policy (recorded in the JSON)."""

    episodes: int
    num_envs: int
    seed: int
    cost_limit: float | None

    @property
    def env_seeds(self) -> list[int]:
        return [self.seed + i for i in range(max(1, min(self.num_envs, self.episodes)))]


def resolved(selected: SelectedPolicy, opts: EvalOptions) -> Setting:
    """Options over the run's evaluate settings over defaults (10 episodes, 4 envs)."""
    task = selected.task
    episodes = opts.episodes if opts.episodes is not None else int(selected.eval_defaults.get("episodes", 10))
    num_envs = opts.num_envs if opts.num_envs is not None else int(selected.eval_defaults.get("num_envs", 4))
    seed = opts.seed if opts.seed is not None else selected.seed
    limit = opts.cost_limit
    if limit is None and task.is_constrained:
        limit = selected.trained_cost_limit if selected.trained_cost_limit is not None else task.cost_limit
    return Setting(episodes, min(num_envs, episodes), seed, limit if task.is_constrained else None)


# ----------------------------------------------------------------------------- policies
class _ObsNormalized(nn.Module):
    """A policy that takes raw env observations (normalisation inside), differentiable.

    The attack perturbs what the *env* emits, in units of the dataset's raw std, so the
    module it differentiates must start from raw observations, as the rollout's policy does.
    """

    def __init__(self, module: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.inner = module
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.inner((obs - self.mean) / self.std)


class _ObsNormalizedGaussian(_ObsNormalized):
    def distribution(self, obs: torch.Tensor):
        return self.inner.distribution((obs - self.mean) / self.std)


def attack_policy(selected: SelectedPolicy, device: str) -> nn.Module:
    """The raw-observation policy module the attack searches against."""
    from corl.store.policies import load_policy_module

    module, mean, std = load_policy_module(selected.artifact.dir, selected.spec, device)
    module.requires_grad_(False)
    if mean is None:
        return module
    cls = _ObsNormalizedGaussian if callable(getattr(module, "distribution", None)) else _ObsNormalized
    return cls(module, mean, std).eval()


def observation_std(selected: SelectedPolicy) -> tuple[torch.Tensor, dict[str, Any]]:
    """Per-dimension std of the training dataset's observations, and where it came from."""
    from corl.data.store import load_task_dataset

    info = selected.dataset
    path = info.get("path")
    if not path:
        raise CorlError(
            f"{selected.artifact.dir.name}: no dataset recorded for this policy; the attack's box "
            "is relative to the training data's observation std"
        )
    if not Path(path).is_file():
        raise CorlError(
            f"{path}: the dataset {selected.artifact.dir.name} was trained on is gone; the attack "
            "needs its observation std (rerun the pipeline to locate it again)"
        )
    data = load_task_dataset(selected.task, path=path)
    sha = data.metadata.get("sha256")
    if info.get("sha256") and sha != info["sha256"]:
        raise CorlError(
            f"{path}: sha256 changed since the run recorded it; the attack's std would not be the "
            "training data's (rerun the pipeline)"
        )
    obs = data.observations.detach().cpu().double()
    std = obs.std(0).float()
    source = {
        "path": str(path),
        "sha256": sha,
        "origin": info.get("origin"),
        "artifact": info.get("artifact"),
        "transitions": int(obs.shape[0]),
        "std": std.tolist(),
        "estimator": "per-dimension sample std (n-1)",
    }
    return std, source


# ----------------------------------------------------------------------------- rollouts
def _cell(task: TaskSpec, result, limit: float | None, extra_limits: Sequence[float] = ()) -> dict[str, Any]:
    from corl.eval.scores import summarize

    metrics = summarize(task, result.reward, result.cost, result.length, limit, extra_limits=extra_limits, prefix="")
    if "safe" in metrics:
        metrics["safe"] = bool(metrics["safe"])
    metrics["episode_reward"] = [float(v) for v in result.reward]
    metrics["episode_cost"] = [float(v) for v in result.cost]
    metrics["episode_length"] = [int(v) for v in result.length]
    return metrics


def score_key(task: TaskSpec) -> str:
    """The headline reward number: D4RL's normalized score, DSRL's normalized reward, else raw."""
    return {"d4rl": "normalized_score", "dsrl": "normalized_reward"}.get(task.kind, "reward")


@dataclass
class PolicyEval:
    """Everything measured for one policy checkpoint (``data`` is its JSON)."""

    selected: SelectedPolicy
    data: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """A policy with every argument checked and every input loaded: ready to roll out."""

    selected: SelectedPolicy
    setting: Setting
    axes: list
    cells: list[dict[str, float]]
    policy_fn: Callable[[torch.Tensor], torch.Tensor]
    critic: Any = None
    victim: nn.Module | None = None
    obs_std: torch.Tensor | None = None
    attack_info: dict[str, Any] | None = None


def prepare(selected: SelectedPolicy, opts: EvalOptions, critic: Any = None) -> Prepared:
    """Validate options against the policy's task and load what the rollouts need.

    Called for every policy before the first episode of any, so a bad sim2real parameter, a
    missing critic or a vanished dataset is a one-line error that costs no simulator time.
    """
    from corl.eval.attacks import make_attack
    from corl.eval.sim2real import parse_grid
    from corl.store.policies import load_policy_fn

    task = selected.task
    if not task.is_constrained and (opts.cost_limits or opts.cost_limit is not None):
        raise CorlError(
            f"--cost-limit/--cost-limits: task {task.name} has no cost ({task.normalization} scores reward only)"
        )
    setting = resolved(selected, opts)
    axes, cells = parse_grid(list(opts.sim2real), task) if opts.sim2real else ([], [])
    policy_fn = load_policy_fn(selected.artifact.dir, selected.spec, opts.device)
    prepared = Prepared(selected, setting, axes, cells, policy_fn, critic)
    if opts.attack:
        victim = attack_policy(selected, opts.device)
        make_attack(opts.attack, 0.0, [1.0] * task.obs_dim, victim, critic, opts.candidates, opts.attack_steps)
        std, std_source = observation_std(selected)
        if std.numel() != task.obs_dim:
            raise CorlError(f"dataset observations have {std.numel()} dims, task {task.name} has {task.obs_dim}")
        probe = make_attack(opts.attack, 0.0, std, victim, critic, opts.candidates, opts.attack_steps)
        searched = probe.name != "random"
        prepared.victim, prepared.obs_std = victim, std
        prepared.attack_info = {
            "name": probe.name,
            "label": probe.label,
            "candidates": probe.candidates if searched else None,
            "steps": probe.steps if searched else 0,
            "obs_std_source": std_source,
            "box": "|delta_i| <= eps * obs_std_i (L-inf)",
            "generator_seed": setting.seed,
            "critic": None
            if critic is None
            else {"source": critic.source, "what": critic.what, "members": critic.num_q},
        }
    return prepared


def evaluate_policy(
    selected: SelectedPolicy,
    opts: EvalOptions,
    critic: Any = None,
    per_limit: dict[float, SelectedPolicy] | None = None,
    progress: Progress | None = None,
    prepared: Prepared | None = None,
) -> PolicyEval:
    """Clean score, optional cost-limit protocol, sim2real grid and attack sweep for one policy.

    ``critic``: a :class:`~corl.eval.critics.LoadedCritic` (needed for ``min_Q`` only).
    ``per_limit``: threshold -> the policy trained at it (missing thresholds use ``selected``).
    ``prepared``: the result of :func:`prepare` when the caller validated up front.
    """
    from corl.eval.attacks import make_attack
    from corl.eval.rollout import rollout
    from corl.eval.sim2real import cell_label, perturbation_hook

    say = progress or (lambda msg: None)
    task = selected.task
    prep = prepared or prepare(selected, opts, critic)
    setting, axes, cells, policy_fn = prep.setting, prep.axes, prep.cells, prep.policy_fn
    critic, victim, std, attack_info = prep.critic, prep.victim, prep.obs_std, prep.attack_info

    def run(obs_transform=None, env_hook=None):
        return rollout(
            task,
            policy_fn,
            setting.episodes,
            seed=setting.seed,
            num_envs=setting.num_envs,
            device=opts.device,
            obs_transform=obs_transform,
            env_hook=env_hook,
        )

    limit = setting.cost_limit
    extra = task.cost_limits if task.is_constrained else ()
    started = time.time()
    t0 = time.perf_counter()
    clean_result = run()
    clean = _cell(task, clean_result, limit, extra)
    clean["wall_s"] = time.perf_counter() - t0
    say(f"{selected.name} [{selected.checkpoint}] clean: {_brief(task, clean)}")

    data: dict[str, Any] = {
        "policy": {
            "label": selected.label,
            "checkpoint": selected.checkpoint,
            "pipeline": selected.pipeline,
            "artifact": str(selected.artifact.dir),
            "kind": selected.artifact.kind,
            "key": selected.artifact.key,
            "spec": selected.spec,
            "run_id": selected.run_id,
            "run_record": selected.run_path,
            "trained_cost_limit": selected.trained_cost_limit,
        },
        "task": task.name,
        "task_kind": task.kind,
        "normalization": task.normalization,
        "score_key": score_key(task),
        "episodes": setting.episodes,
        "num_envs": setting.num_envs,
        "seed": setting.seed,
        "env_seeds": setting.env_seeds,
        "cost_limit": limit,
        "device": opts.device,
        "dataset": dict(selected.dataset),
        "clean": clean,
        "recorded_scores": selected.recorded_scores,
    }
    if selected.model_estimate:  # DRCORL's offline model estimate of this policy (iterates.json)
        data["model_estimate"] = dict(selected.model_estimate)

    if opts.cost_limits and task.is_constrained:
        data["cost_limits"] = _limits_protocol(selected, opts, setting, clean_result, per_limit or {}, say)

    if axes:
        grid = []
        for cell in cells:
            t0 = time.perf_counter()
            res = run(env_hook=perturbation_hook(cell))
            entry = {"scales": dict(cell), **_cell(task, res, limit, extra), "wall_s": time.perf_counter() - t0}
            grid.append(entry)
            say(f"{selected.name} [{selected.checkpoint}] sim2real {cell_label(cell)}: {_brief(task, entry)}")
        data["sim2real"] = {
            "axes": [{"param": a.param, "scales": list(a.scales)} for a in axes],
            "cells": grid,
            "specs": list(opts.sim2real),
        }

    if attack_info is not None:
        sweep = []
        for eps in opts.eps:
            gen = torch.Generator().manual_seed(setting.seed)
            attack = make_attack(opts.attack, eps, std, victim, critic, opts.candidates, opts.attack_steps, gen)
            t0 = time.perf_counter()
            res = run(obs_transform=attack)
            entry = {"eps": float(eps), **_cell(task, res, limit, extra), "wall_s": time.perf_counter() - t0}
            if eps == 0.0:
                entry["equals_clean"] = bool(
                    np.array_equal(res.reward, clean_result.reward) and np.array_equal(res.cost, clean_result.cost)
                )
            sweep.append(entry)
            say(f"{selected.name} [{selected.checkpoint}] {attack_info['label']} eps={eps:g}: {_brief(task, entry)}")
        data["attack"] = {**attack_info, "cells": sweep}
    data["wall_s"] = time.time() - started
    return PolicyEval(selected, data)


def _limits_protocol(
    selected: SelectedPolicy,
    opts: EvalOptions,
    setting: Setting,
    clean_result,
    per_limit: dict[float, SelectedPolicy],
    say: Progress,
) -> dict[str, Any]:
    """DSRL's thresholds: each judged at its own limit, then averaged (see module docstring)."""
    from corl.eval.rollout import rollout
    from corl.store.policies import load_policy_fn

    task = selected.task
    rows = []
    for limit in opts.cost_limits:
        policy = per_limit.get(limit, selected)
        if policy.artifact.dir == selected.artifact.dir and policy.spec == selected.spec:
            result = clean_result  # the same policy and seeds: the same episodes, renormalised
        else:
            fn = load_policy_fn(policy.artifact.dir, policy.spec, opts.device)
            result = rollout(
                task, fn, setting.episodes, seed=setting.seed, num_envs=setting.num_envs, device=opts.device
            )
        row = {
            "cost_limit": float(limit),
            "policy_artifact": str(policy.artifact.dir),
            "policy_label": policy.label,
            "trained_cost_limit": policy.trained_cost_limit,
            "trained_at_this_limit": policy.trained_cost_limit is not None
            and abs(policy.trained_cost_limit - limit) < 1e-9,
            "run_id": policy.run_id,
            **_cell(task, result, limit),
        }
        rows.append(row)
        say(
            f"{selected.name} cost limit {limit:g} (policy trained at {policy.trained_cost_limit}): {_brief(task, row)}"
        )
    key = score_key(task)
    mean = {
        key: float(np.mean([r[key] for r in rows])),
        "normalized_cost": float(np.mean([r["normalized_cost"] for r in rows])),
    }
    mean["safe"] = bool(mean["normalized_cost"] <= 1.0)
    return {
        "limits": list(opts.cost_limits),
        "per_limit": rows,
        "mean": mean,
        "all_trained_per_limit": all(r["trained_at_this_limit"] for r in rows),
    }


def _brief(task: TaskSpec, cell: dict[str, Any]) -> str:
    key = score_key(task)
    text = f"{key.replace('_', ' ')} {cell[key]:.3f} ± {cell.get(key + '_std', float('nan')):.3f}"
    if "normalized_cost" in cell:
        text += f", normalized cost {cell['normalized_cost']:.3f} ± {cell['normalized_cost_std']:.3f}"
        text += " (safe)" if cell.get("safe") else " (unsafe)"
    return text


# ----------------------------------------------------------------------------- output
def _clean_json(value: Any) -> Any:
    """NaN/inf -> None so eval.json is strict JSON; tuples -> lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _clean_json(value.item())
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "policy"


def default_out_dir(selected: SelectedPolicy) -> Path:
    """``<policy artifact>/eval`` (``eval-best`` for the best checkpoint): next to the weights."""
    return selected.artifact.dir / ("eval" if selected.checkpoint == "final" else f"eval-{selected.checkpoint}")


def _curve(evals: Sequence[PolicyEval], section: str, task: TaskSpec) -> dict[str, dict[str, list[float]]]:
    key = score_key(task)
    curves = {}
    for ev in evals:
        cells = ev.data[section]["cells"]
        curve = {"reward": [c[key] for c in cells], "reward_std": [c.get(f"{key}_std", 0.0) for c in cells]}
        if task.is_constrained:
            curve["cost"] = [c["normalized_cost"] for c in cells]
            curve["cost_std"] = [c["normalized_cost_std"] for c in cells]
        curves[_legend(ev, evals)] = curve
    return curves


def _legend(ev: PolicyEval, evals: Sequence[PolicyEval]) -> str:
    labels = [e.selected.label for e in evals]
    label = ev.selected.label
    if labels.count(label) > 1 and ev.selected.pipeline:
        label = f"{ev.selected.pipeline}: {label}"
    return label


def write_plots(evals: Sequence[PolicyEval], out_dir: Path, title: str) -> list[Path]:
    """One PNG per perturbation: reward and cost against it, one line per policy; 2-D
    sim2real grids as heatmaps (one per policy). Returns the files written."""
    from corl.eval.plots import plot_grid, plot_robustness

    task = evals[0].selected.task
    limit_line = 1.0 if task.is_constrained else None
    written: list[Path] = []
    attacked = [e for e in evals if "attack" in e.data]
    if attacked:
        info = attacked[0].data["attack"]
        xs = [c["eps"] for c in info["cells"]]
        if all([c["eps"] for c in e.data["attack"]["cells"]] == xs for e in attacked):
            written.append(
                plot_robustness(
                    xs,
                    _curve(attacked, "attack", task),
                    f"attack budget eps ({info['label']}, x dataset obs std)",
                    out_dir / f"attack_{_slug(info['label'])}.png",
                    title,
                    limit_line,
                )
            )
    swept = [e for e in evals if "sim2real" in e.data]
    if swept:
        axes = swept[0].data["sim2real"]["axes"]
        if len(axes) == 1:
            xs = axes[0]["scales"]
            written.append(
                plot_robustness(
                    xs,
                    _curve(swept, "sim2real", task),
                    f"{axes[0]['param']} scale",
                    out_dir / f"sim2real_{axes[0]['param']}.png",
                    title,
                    limit_line,
                )
            )
        elif len(axes) == 2:
            key = score_key(task)
            for ev in swept:
                cells = ev.data["sim2real"]["cells"]
                shape = (len(axes[0]["scales"]), len(axes[1]["scales"]))
                reward = np.array([c[key] for c in cells], dtype=float).reshape(shape)
                cost = (
                    np.array([c["normalized_cost"] for c in cells], dtype=float).reshape(shape)
                    if task.is_constrained
                    else None
                )
                name = f"sim2real_{axes[0]['param']}_x_{axes[1]['param']}"
                if len(swept) > 1:
                    name += f"_{_slug(_legend(ev, swept))}"
                written.append(
                    plot_grid(
                        axes[1]["param"],
                        axes[1]["scales"],
                        axes[0]["param"],
                        axes[0]["scales"],
                        reward,
                        cost,
                        out_dir / f"{name}.png",
                        f"{title}: {_legend(ev, swept)}" if len(swept) > 1 else title,
                        limit_line,
                    )
                )
    return written


def write_outputs(evals: Sequence[PolicyEval], opts: EvalOptions, out: str | Path | None = None) -> dict[str, Any]:
    """Write each policy's ``eval.json`` (+ its PNGs) and, for several, a comparison.

    Without ``out``: ``<artifact>/eval/`` per policy, and the comparison under the first
    policy's ``eval/compare-<names>/``. With ``out``: ``out/<name>/`` per policy and the
    comparison in ``out`` itself. Returns ``{"policies": [dirs], "compare": dir or None}``.
    """
    from corl.store.artifacts import package_versions, write_json_atomic

    task = evals[0].selected.task
    base = Path(out).expanduser() if out else None
    header = {
        "command": opts.command,
        "created": time.time(),
        "versions": package_versions(),
        "options": {
            "episodes": opts.episodes,
            "num_envs": opts.num_envs,
            "seed": opts.seed,
            "cost_limit": opts.cost_limit,
            "cost_limits": list(opts.cost_limits),
            "sim2real": list(opts.sim2real),
            "attack": opts.attack,
            "eps": list(opts.eps),
            "attack_steps": opts.attack_steps,
            "candidates": opts.candidates,
            "device": opts.device,
        },
    }
    for ev in evals:
        if base is None:
            directory = default_out_dir(ev.selected)
        elif len(evals) == 1:
            directory = base
        else:
            directory = base / _slug(f"{ev.selected.pipeline or ev.selected.artifact.kind}-{ev.selected.label}")
        directory.mkdir(parents=True, exist_ok=True)
        title = f"{ev.selected.label} [{ev.selected.checkpoint}] on {task.name}"
        pngs = write_plots([ev], directory, title)
        ev.files = [str(p) for p in pngs]
        ev.out_dir = directory
        write_json_atomic(directory / "eval.json", _clean_json({**header, **ev.data, "plots": ev.files}))
    compare = None
    if len(evals) > 1:
        names = "-".join(_slug(e.selected.pipeline or e.selected.label) for e in evals)
        compare = base if base is not None else default_out_dir(evals[0].selected) / f"compare-{names}"
        compare.mkdir(parents=True, exist_ok=True)
        pngs = write_plots(evals, compare, f"{' vs '.join(_legend(e, evals) for e in evals)} on {task.name}")
        write_json_atomic(
            compare / "eval.json",
            _clean_json({**header, "plots": [str(p) for p in pngs], "policies": [e.data for e in evals]}),
        )
    return {"policies": [str(e.out_dir) for e in evals], "compare": str(compare) if compare else None}


__all__ = [
    "EvalOptions",
    "Setting",
    "PolicyEval",
    "Prepared",
    "prepare",
    "parse_eps",
    "parse_limits",
    "resolved",
    "attack_policy",
    "observation_std",
    "evaluate_policy",
    "write_plots",
    "write_outputs",
    "score_key",
    "default_out_dir",
]
