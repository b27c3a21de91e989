"""corl's Python API: the same functions the ``corl`` command calls, for scripts and notebooks.

::

    import corl

    run = corl.run("bc", task="OfflineCarCircle-v0", preset="quick", seed=0)
    print(run.id, run.final)                     # short run id, final/... scores
    report = corl.evaluate(run, episodes=10)     # or corl.evaluate("bc", task=...)
    policy = corl.load_policy(run)               # numpy obs -> numpy action
    data = corl.load_dataset("OfflineCarCircle-v0")

Errors are the CLI's: a :class:`corl.errors.CorlError` with a one-line message. Nothing here
prints; pass ``callbacks`` (a :class:`corl.pipeline.progress.RunCallbacks`) to ``run`` or
``progress`` (a ``str -> None`` function) to ``evaluate`` to watch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from corl.errors import ConfigError, CorlError

if TYPE_CHECKING:
    from corl.data.dataset import TransitionDataset
    from corl.eval.select import SelectedPolicy
    from corl.eval.session import EvalSession
    from corl.pipeline.progress import RunCallbacks
    from corl.pipeline.results import RunRequest, RunResult
    from corl.pipeline.runner import Plan


# ------------------------------------------------------------------------------ run
def _toml_value(value: Any) -> str:
    """A Python value as the TOML text ``--set`` parses (strings quoted, booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"override value {value!r}: expected a number, string, bool, None or list")


def overrides_list(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``{"bc.mode": "all"}`` or ``["bc.mode=all"]`` -> ``["bc.mode=\"all\""]`` / as given."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={_toml_value(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return [str(item) for item in overrides]


def request(
    pipeline: str,
    task: str,
    *,
    preset: str | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    device: str = "auto",
    dataset: str | Path | None = None,
    offline: bool | None = None,
    checkpoints: str | Path | None = None,
    wait: bool = True,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = None,
) -> "RunRequest":
    """The :class:`~corl.pipeline.runner.RunRequest` that ``run`` and ``plan`` execute."""
    from corl.pipeline.results import RunRequest

    return RunRequest(
        pipeline=pipeline,
        task=task,
        preset=preset,
        seed=int(seed),
        overrides=overrides_list(overrides),
        device=device,
        dataset=str(dataset) if dataset else None,
        offline=offline,
        checkpoints=str(checkpoints) if checkpoints else None,
        wait=wait,
        checkpoint_every_steps=checkpoint_every,
        checkpoint_every_seconds=checkpoint_seconds,
    )


@dataclass
class Run:
    """A finished ``corl.run``: ids, artifacts, scores, and the engine's full result."""

    id: str  # short id, as ``corl runs`` shows it and ``--run`` accepts
    record_id: str
    record_path: Path
    pipeline: str
    task: str
    seed: int
    preset: str | None
    status: str
    wall_time: float
    artifacts: dict[str, Path]  # stage name -> artifact directory
    final: dict[str, float]  # "<stage>/<metric>" -> value, e.g. "evaluate/normalized_reward"
    best: dict[str, float]
    dataset: dict[str, Any] = field(default_factory=dict)
    result: "RunResult | None" = None  # the runner's full result

    @property
    def root(self) -> Path:
        """The cache root the run used (its record lives in ``<root>/runs/``)."""
        return self.record_path.parent.parent

    @property
    def ran(self) -> list[str]:
        return [o.name for o in self.result.stages if o.status == "ran"] if self.result is not None else []

    def policy(self, checkpoint: str = "final") -> "Policy":
        """Shorthand for ``corl.load_policy(self, checkpoint=...)``."""
        return load_policy(self, checkpoint=checkpoint)


def _as_run(result: "RunResult") -> Run:
    from corl.store.runs import record_id, short_id

    record = {"_path": str(result.record_path)}
    scores = result.scores
    return Run(
        id=short_id(record),
        record_id=record_id(record),
        record_path=Path(result.record_path),
        pipeline=result.pipeline,
        task=result.task,
        seed=result.seed,
        preset=result.preset,
        status=result.status,
        wall_time=result.wall_time,
        artifacts={o.name: o.dir for o in result.stages},
        final=dict(scores.get("final", {})),
        best=dict(scores.get("best", {})),
        dataset=dict(result.dataset),
        result=result,
    )


def run(
    pipeline: str,
    task: str,
    *,
    preset: str | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    device: str = "auto",
    dataset: str | Path | None = None,
    offline: bool | None = None,
    checkpoints: str | Path | None = None,
    logger: str | Sequence[str] | None = None,
    callbacks: "RunCallbacks | None" = None,
    wait: bool = True,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = None,
) -> Run:
    """Run (or resume, or find cached) a pipeline on a task, as ``corl run`` does.

    ``overrides``: ``{"bc.mode": "all"}`` or ``["bc.mode=all"]`` (``--set``). ``logger``:
    ``"tensorboard"`` and/or ``"wandb"`` stream the metrics (see :mod:`corl.pipeline.loggers`).
    Raises :class:`~corl.pipeline.runner.RunInterrupted` (a ``CorlError``) on Ctrl-C.
    """
    from corl.pipeline.loggers import with_loggers
    from corl.pipeline.runner import run_pipeline

    req = request(
        pipeline,
        task,
        preset=preset,
        seed=seed,
        overrides=overrides,
        device=device,
        dataset=dataset,
        offline=offline,
        checkpoints=checkpoints,
        wait=wait,
        checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds,
    )
    with with_loggers(logger, req, callbacks) as cbs:
        result = run_pipeline(req, cbs)
    return _as_run(result)


def plan(pipeline: str, task: str, *, callbacks: "RunCallbacks | None" = None, **kwargs: Any) -> "Plan":
    """What ``run`` would do (``corl run --dry-run``): each stage's key and cache state. Trains nothing."""
    from corl.pipeline.runner import plan_pipeline

    return plan_pipeline(request(pipeline, task, **kwargs), callbacks)


# ------------------------------------------------------------------------------ evaluate
def evaluate(
    target: "str | Sequence[str] | Run | None" = None,
    *,
    task: str | None = None,
    run: str | None = None,
    artifact: str | Path | None = None,
    episodes: int | None = None,
    num_envs: int | None = None,
    seed: int | None = None,
    cost_limit: float | None = None,
    cost_limits: str | Sequence[float] | None = None,
    sim2real: Sequence[str] = (),
    attack: str | None = None,
    eps: str | Sequence[float] | None = None,
    attack_steps: int = 0,
    candidates: int = 50,
    critic: str | None = None,
    out: str | Path | None = None,
    checkpoints: str | Path | None = None,
    device: str = "cpu",
    video: int = 0,
    video_every: int = 1,
    video_size: str | tuple[int, int] | None = None,
    video_perturbed: bool = False,
    iterates: int = 0,
    progress: Callable[[str], None] | None = None,
    command: str = "",
) -> "EvalSession":
    """Evaluate trained policies, as ``corl eval`` does; returns the session (``.evals``,
    ``.scores()``, ``.videos``, ``.written``).

    ``target``: a pipeline name or several (the latest finished run of each on ``task``), or a
    :class:`Run`; or select with ``run=ID`` / ``artifact=PATH``. ``video=N`` records N episodes
    per policy (MP4, GIF without ffmpeg) under its eval directory's ``videos/``.
    """
    from corl.eval import report
    from corl.eval.session import EvalRequest
    from corl.eval.session import evaluate as evaluate_session
    from corl.eval.video import VideoOptions, parse_size

    names: list[str] = []
    if isinstance(target, Run):
        run, task = str(target.record_path), task or target.task
        names = [target.pipeline]
        checkpoints = checkpoints or target.root
    elif isinstance(target, str):
        names = [target]
    elif target is not None:
        names = list(target)
    if cost_limits is None or isinstance(cost_limits, str):
        limits = report.parse_limits(cost_limits) if cost_limits else ()
    else:
        limits = tuple(float(v) for v in cost_limits)
    if eps is not None and not attack:
        raise CorlError("--eps needs --attack (random, action_diff or min_Q)")
    if attack:
        from corl.eval import DEFAULT_EPS

        budgets = (
            report.parse_eps(eps if isinstance(eps, str) else DEFAULT_EPS)
            if (eps is None or isinstance(eps, str))
            else tuple(float(v) for v in eps)
        )
    else:
        budgets = (0.0,)
    opts = report.EvalOptions(
        episodes=episodes,
        num_envs=num_envs,
        seed=seed,
        cost_limit=cost_limit,
        cost_limits=limits,
        sim2real=tuple(sim2real),
        attack=attack,
        eps=budgets,
        attack_steps=attack_steps,
        candidates=candidates,
        device=device,
        command=command or "corl.evaluate(...)",
    )
    size = parse_size(video_size) if isinstance(video_size, str) or video_size is None else tuple(video_size)
    req = EvalRequest(
        pipelines=names,
        task=task,
        run_id=run,
        artifact=artifact,
        options=opts,
        critic=critic,
        out=out,
        iterates=iterates,
        checkpoints=checkpoints,
        video=VideoOptions(int(video), int(video_every), size, bool(video_perturbed)),
    )  # type: ignore[arg-type]
    return evaluate_session(req, progress)


# ------------------------------------------------------------------------------ policies
class Policy:
    """A trained policy as a function: ``policy(obs) -> action`` in numpy.

    ``obs`` is one observation ``(obs_dim,)`` or a batch ``(B, obs_dim)``; the action has the
    same leading shape. Deterministic (the mean action), observation normalisation applied,
    clipped to the action box: what corl's evaluation and ``corl export`` files do.
    """

    def __init__(self, selected: "SelectedPolicy") -> None:
        from corl.export.deployable import load_deployable

        self.selected = selected
        self.loaded = load_deployable(selected.artifact.dir, selected.spec, selected.task)
        self.module = self.loaded.module
        self.task = selected.task.name
        self.label = selected.label
        self.checkpoint = selected.checkpoint
        self.action_low = np.asarray(self.loaded.act_low, dtype=np.float32)
        self.action_high = np.asarray(self.loaded.act_high, dtype=np.float32)

    def __call__(self, obs: Any) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.loaded.obs_dim:
            raise CorlError(
                f"policy of {self.task} takes observations of shape ({self.loaded.obs_dim},) or "
                f"(B, {self.loaded.obs_dim}), got {tuple(np.shape(obs))}"
            )
        with torch.no_grad():
            action = self.module(x).numpy()
        return action[0] if single else action

    def __repr__(self) -> str:
        return f"Policy({self.label!r} [{self.checkpoint}] on {self.task}, artifact {self.selected.artifact.dir.name})"


def select_policy(
    source: "Run | str | Path",
    *,
    task: str | None = None,
    checkpoint: str = "final",
    checkpoints: str | Path | None = None,
) -> "SelectedPolicy":
    """Resolve a run (a :class:`Run`, a run id or record path), an artifact directory, or a
    pipeline name with ``task`` (its latest finished run) to one policy checkpoint."""
    from corl.eval import select
    from corl.store.artifacts import cache_root
    from corl.tasks import get_task

    root = cache_root(checkpoints)
    spec_task = get_task(task) if task else None
    if isinstance(source, Run):
        root = Path(checkpoints).expanduser() if checkpoints else source.root
        found = select.select_run(root, str(source.record_path), spec_task, None)
    elif Path(str(source)).expanduser().is_dir():
        found = select.select_artifact(root, source, spec_task)
    elif spec_task is not None and str(source) in select.known_pipelines(root):
        found = select.select_latest(root, str(source), spec_task)
    else:
        found = select.select_run(root, str(source), spec_task, None)
    for sel in found:
        if sel.checkpoint == checkpoint:
            return sel
    raise CorlError(f"{source}: no {checkpoint!r} policy (has {', '.join(s.checkpoint for s in found)})")


def load_policy(
    source: "Run | str | Path",
    *,
    task: str | None = None,
    checkpoint: str = "final",
    checkpoints: str | Path | None = None,
) -> Policy:
    """A trained policy as ``obs -> action`` (numpy in, numpy out); see :func:`select_policy`."""
    return Policy(select_policy(source, task=task, checkpoint=checkpoint, checkpoints=checkpoints))


# ------------------------------------------------------------------------------ data and envs
def load_dataset(
    task_or_path: str | Path, *, task: str | None = None, offline: bool | None = None
) -> "TransitionDataset":
    """A task's dataset by the documented lookup (``--dataset``, the store, DSRL's cache, the
    bundled sample), or a DSRL/D4RL HDF5 file by path (``task`` checks its dims)."""
    from corl.tasks import get_task

    text = str(task_or_path)
    if text.endswith((".hdf5", ".h5")) or Path(text).expanduser().is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise CorlError(f"{path}: no such dataset file")
        if task:
            from corl.data.store import load_task_dataset

            return load_task_dataset(get_task(task), path=path, offline=offline)
        from corl.data.io import read_dataset

        return read_dataset(path)
    from corl.data.store import load_task_dataset

    return load_task_dataset(get_task(text), offline=offline)


def make_env(task: str, seed: int | None = None, **kwargs: Any):
    """The task's simulator env (gymnasium 5-tuple API, cost in ``info["cost"]``)."""
    from corl.envs.factory import make_env as _make_env

    return _make_env(task, seed=seed, **kwargs)


# ------------------------------------------------------------------------------ export
def _short(record_path: str | None) -> str | None:
    from corl.store.runs import short_id

    return short_id({"_path": record_path}) if record_path else None


def export_policy(
    source: "Run | str | Path",
    fmt: str = "torchscript",
    out: str | Path = "export",
    *,
    task: str | None = None,
    checkpoint: str = "final",
    checkpoints: str | Path | None = None,
    name: str | None = None,
) -> tuple[Path, Path]:
    """Write a policy as a standalone TorchScript (``.pt``) or ONNX file plus its JSON card
    (``corl export``); returns (file, card)."""
    from corl.export.writer import export as write

    selected = select_policy(source, task=task, checkpoint=checkpoint, checkpoints=checkpoints)
    policy = Policy(selected)
    about = {
        "task": selected.task.name,
        "label": selected.label,
        "checkpoint": selected.checkpoint,
        "pipeline": selected.pipeline,
        "run_id": selected.run_id,
        "seed": selected.seed,
        "run_short_id": _short(selected.run_path),
        "cost_limit": selected.trained_cost_limit,
        "dataset": {k: selected.dataset.get(k) for k in ("sha256", "path", "origin") if k in selected.dataset},
        "training": {
            "artifact": selected.artifact.dir.name,
            "kind": selected.artifact.kind,
            "key": selected.artifact.key,
            "config": selected.artifact.manifest.get("config", {}),
        },
        "scores_at_export": {
            k: v
            for k, v in selected.recorded_scores.items()
            if k.split("/")[-1]
            in (
                "normalized_reward",
                "normalized_cost",
                "normalized_score",
                "normalized_reward_std",
                "normalized_cost_std",
                "reward",
                "cost",
                "episodes",
                "safe",
            )
        },
    }
    stem = name or f"{selected.pipeline or selected.artifact.kind}-{selected.task.name}-s{selected.seed}" + (
        "" if checkpoint == "final" else f"-{checkpoint}"
    )
    return write(policy.loaded, fmt, Path(out), stem, about)


__all__ = [
    "Run",
    "Policy",
    "run",
    "plan",
    "request",
    "evaluate",
    "load_policy",
    "select_policy",
    "load_dataset",
    "make_env",
    "export_policy",
    "overrides_list",
]
