"""The runner: plan (keys, cache state), then run stages in dependency order.

Guarantees, and how:
* A second identical run does no work: every stage's key is computed before anything runs,
  and a directory whose manifest verifies (files re-hashed) is a cache hit.
* ``--set`` on one stage reruns it and its dependents only: a key hashes the stage's own
  config and its inputs' keys, so a change propagates exactly along the dependency edges.
* Interrupted runs continue: a stage without a manifest but with ``checkpoint.pt`` resumes
  from it (see :class:`corl.pipeline.context.TrainLoop`).
* Concurrent runs never corrupt an artifact: each stage holds its directory's lock while it
  builds, and re-checks the manifest after taking it (someone may have just finished).

Prerequisite runs: a fingerprint hook may need another pipeline's artifact before it can say
what its stage's key is (``dataset.source=cvpo``: the dataset is the file CVPO's ``export``
stage writes, keyed by its sha256). Planning gives such a hook a :class:`PlanningContext`
whose ``prerequisite(RunRequest)`` runs that pipeline first, through this same runner (same
cache root, device, locks, resume and callbacks, its stages shown as ``cvpo:train`` etc.),
or, for a dry run, only plans it. Its stages join the parent run's outcomes and record, so
``corl runs`` shows them and ``corl cache prune`` keeps them.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from corl.checks import check_run_options
from corl.errors import ConfigError, CorlError
from corl.pipeline.checkpoint import Checkpointer, checkpoint_problem, seed_everything
from corl.pipeline.context import (
    FingerprintContext,
    InterruptFlag,
    RunOptions,
    StageContext,
    StageInterrupted,
    StageResult,
)
from corl.pipeline.progress import RunCallbacks
from corl.pipeline.registry import get_stage_kind
from corl.pipeline.results import PlannedStage, RunInterrupted, RunRequest, RunResult, StageOutcome
from corl.pipeline.spec import PipelineSpec, config_dict, load_spec
from corl.store import artifacts as art
from corl.store.lock import ArtifactLock
from corl.store.runs import new_record_path, write_record
from corl.tasks import TaskSpec, get_task


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


# ------------------------------------------------------------------------------ planning
@dataclass
class Prerequisite:
    """Another pipeline run that planning needed first (see the module docstring).

    ``artifacts``: its done artifacts by stage name (all of them when ``done``); ``outcomes``:
    its stages as this run reports them (named ``<pipeline>:<stage>``); ``plan``: its plan as
    made before it ran.
    """

    request: RunRequest
    plan: "Plan"
    artifacts: dict[str, art.Artifact]
    outcomes: list[StageOutcome]
    done: bool
    dry_run: bool

    @property
    def prefix(self) -> str:
        return f"{self.plan.spec.name}:"


@dataclass
class PlanningContext(FingerprintContext):
    """What a fingerprint hook gets from the runner: the request, and ``prerequisite(sub)``,
    which runs (a dry run: only plans) another pipeline ``sub`` with this run's cache root,
    device, offline and lock settings and returns a :class:`Prerequisite`."""

    request: RunRequest | None = None
    prerequisite: Callable[..., Prerequisite] | None = None  # (sub: RunRequest, reason: str = "")


@dataclass
class Plan:
    spec: PipelineSpec
    task: TaskSpec
    configs: dict[str, Any]
    stages: list[PlannedStage]
    root: Path
    options: RunOptions
    prerequisites: list[Prerequisite] = field(default_factory=list)

    def stage(self, name: str) -> PlannedStage:
        return next(s for s in self.stages if s.name == name)

    @property
    def prerequisite_stages(self) -> list[PlannedStage]:
        """The prerequisite runs' planned stages, named ``<pipeline>:<stage>``."""
        return [dataclasses.replace(s, name=p.prefix + s.name) for p in self.prerequisites for s in p.plan.stages]


def _key_config(kind: Any, config: Any) -> dict[str, Any]:
    """The config as it enters the key: a field declared with ``metadata={"key": "if_set"}``,
    or named in the config class's ``KEYED_IF_SET``, is left out while it has its default, so
    adding such an option (``dataset.source``, a learner option newly exposed as a stage key)
    keeps every existing artifact's key."""
    values = config_dict(config)
    if_set = getattr(type(config), "KEYED_IF_SET", frozenset())
    for f in dataclasses.fields(config):
        if f.metadata.get("key") == "if_set" or f.name in if_set:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if values.get(f.name) == default:
                values.pop(f.name, None)
    return values


def plan_pipeline(req: RunRequest, callbacks: RunCallbacks | None = None) -> Plan:
    """The plan of a run, with no side effects: spec loaded and validated, every config
    resolved, every stage's key, directory and cache state (cached, run, resume, corrupt).

    Nothing trains and nothing is written but the dataset hash memo: a prerequisite run that
    a fingerprint hook asks for (``dataset.source=cvpo``) is only planned, and when it is not
    cached the stages after it are ``pending`` (their keys depend on the data it will make).
    ``corl run --dry-run``, ``corl sweep`` and ``corl sweep --status`` plan with this.
    """
    return _plan(req, callbacks, collect=False, interrupt=None)


def _plan(req: RunRequest, callbacks: RunCallbacks | None, collect: bool, interrupt: InterruptFlag | None) -> Plan:
    """:func:`plan_pipeline`; with ``collect``, a prerequisite run a fingerprint hook needs is
    run (not only planned) first, so every key is known (what :func:`run_pipeline` does)."""
    check_run_options(req)
    dry_run = not collect
    spec = load_spec(req.pipeline)
    task = get_task(req.task)
    configs = spec.resolve(task.name, req.preset, req.overrides)
    root = art.cache_root(req.checkpoints)
    options = RunOptions(dataset_path=req.dataset, offline=req.offline, cache_root=root)
    prerequisites: dict[str, Prerequisite] = {}

    def prerequisite(sub: RunRequest, reason: str = "") -> Prerequisite:
        done = _prerequisite(req, sub, root, callbacks or RunCallbacks(), dry_run, interrupt or InterruptFlag(), reason)
        prerequisites[done.request.command()] = done  # asked again (after a repair): the latest answer counts
        return done

    planned: dict[str, PlannedStage] = {}
    dataset_sha: str | None = None
    for name, sspec in spec.stages.items():
        kind = sspec.kind
        cfg = configs[name]
        fp: dict[str, Any] = {}
        if kind.fingerprint is not None:
            fctx = PlanningContext(task, cfg, options, request=req, prerequisite=prerequisite)
            fp = kind.fingerprint(fctx) or {}
        if kind.name == "dataset" and dataset_sha is None:
            dataset_sha = fp.get("sha256")
        input_keys = {role: planned[target].key for role, target in sspec.inputs.items()}
        key = art.artifact_key(
            kind.name,
            kind.version,
            _key_config(kind, cfg),
            input_keys,
            dataset_sha,
            req.seed if kind.seeded else None,
            fp.get("key"),
        )
        directory = root / task.name / f"{kind.name}-{key}"
        status, reason, artifact = "run", "", None
        pending = fp.get("pending") or any(planned[t].status == "pending" for t in sspec.inputs.values())
        if pending:  # a dry run whose prerequisite is not done: no key can be known yet
            status, key = "pending", "pending"
            directory = root / task.name / f"{kind.name}-(key pending)"
        else:
            try:
                artifact = art.verify(directory, key)
                if artifact is not None:
                    status = "cached"
            except art.CorruptArtifact as exc:
                status, reason = "corrupt", str(exc)
        if status == "run" and (directory / art.CHECKPOINT).exists():
            problem = checkpoint_problem(directory / art.CHECKPOINT)
            status, reason = (
                ("resume", "")
                if problem is None
                else ("restart", f"{art.CHECKPOINT} {problem}: will restart from step 0")
            )
        planned[name] = PlannedStage(
            name, kind.name, key, directory, status, config_dict(cfg), dict(sspec.inputs), fp, reason, artifact
        )
    return Plan(spec, task, configs, list(planned.values()), root, options, list(prerequisites.values()))


class _PrefixedCallbacks(RunCallbacks):
    """A prerequisite run's reports, its stages named ``<pipeline>:<stage>``; its end is
    reported by the parent run (whose live display and summary go on)."""

    def __init__(self, inner: RunCallbacks, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def plan(self, stages: list[PlannedStage]) -> None:
        self.inner.plan([dataclasses.replace(s, name=self.prefix + s.name) for s in stages])

    def stage_started(self, stage: str, kind: str, total: int | None, resumed_from: int) -> None:
        self.inner.stage_started(self.prefix + stage, kind, total, resumed_from)

    def stage_progress(self, stage: str, done: int, total: int | None, metrics: dict[str, float]) -> None:
        self.inner.stage_progress(self.prefix + stage, done, total, metrics)

    def metrics_logged(self, stage: str, step: int, metrics: dict[str, Any]) -> None:
        self.inner.metrics_logged(self.prefix + stage, step, metrics)

    def stage_finished(self, outcome: StageOutcome) -> None:
        self.inner.stage_finished(dataclasses.replace(outcome, name=self.prefix + outcome.name))

    def message(self, text: str, level: str = "info") -> None:
        self.inner.message(text, level)

    def run_finished(self, result: "RunResult") -> None:
        pass


def _prerequisite(
    parent: RunRequest,
    sub: RunRequest,
    root: Path,
    callbacks: RunCallbacks,
    dry_run: bool,
    interrupt: InterruptFlag,
    reason: str = "",
) -> Prerequisite:
    """Run (or plan) ``sub`` for ``parent``: see :class:`PlanningContext`."""
    command = sub.command()
    sub = dataclasses.replace(
        sub,
        device=parent.device,
        offline=parent.offline,
        checkpoints=str(root),
        wait=parent.wait,
        lock_timeout=parent.lock_timeout,
    )
    nested = plan_pipeline(sub)
    prefix = f"{nested.spec.name}:"
    shown = _PrefixedCallbacks(callbacks, prefix)
    done = all(s.status == "cached" for s in nested.stages)
    verb = "cached" if done else ("would run first" if dry_run else "runs first")
    callbacks.message(f"{reason + ': ' if reason else ''}{command} ({verb})")
    if dry_run or done:
        shown.plan(nested.stages)
        cached = [s for s in nested.stages if s.status == "cached" and s.artifact is not None]
        outcomes = [
            StageOutcome(prefix + s.name, s.kind, s.key, s.dir, "cached", 0.0, s.artifact.metrics) for s in cached
        ]
        return Prerequisite(sub, nested, {s.name: s.artifact for s in cached}, outcomes, done, dry_run)
    try:
        result = run_pipeline(sub, shown, interrupt=interrupt)
    except RunInterrupted as exc:  # resume with the parent's command: it reruns this run first
        what = str(exc).split("; resume with:")[0].replace("in stage '", f"in stage '{prefix}")
        raise RunInterrupted(f"{what}; resume with: {parent.command()}") from None
    artifacts = {o.name: art.Artifact(o.dir, art.read_manifest(o.dir) or {}) for o in result.stages}
    outcomes = [dataclasses.replace(o, name=prefix + o.name) for o in result.stages]
    return Prerequisite(sub, nested, artifacts, outcomes, True, False)


# ------------------------------------------------------------------------------ running
class _SigintHandler:
    """First Ctrl-C: ask the running stage to checkpoint and stop. Second: abort at once."""

    def __init__(self, flag: InterruptFlag, callbacks: RunCallbacks) -> None:
        self.flag, self.callbacks = flag, callbacks
        self.previous: Any = None
        self.active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> "_SigintHandler":
        if self.active:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag.requested:
            raise KeyboardInterrupt
        self.flag.request()
        self.callbacks.message("Ctrl-C: saving a checkpoint at the next step (Ctrl-C again to abort now)", "warning")

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self.previous)


def run_pipeline(
    req: RunRequest, callbacks: RunCallbacks | None = None, interrupt: InterruptFlag | None = None
) -> RunResult:
    """Run a pipeline: plan it (running a prerequisite collection first when a stage needs
    one), then build every stage that is not cached, in dependency order, each through
    :func:`execute_stage` (the one function that builds an artifact, for ``corl sweep`` too).
    For the plan alone, without side effects, use :func:`plan_pipeline`."""
    callbacks = callbacks or RunCallbacks()
    device = resolve_device(req.device)
    interrupt = interrupt or InterruptFlag()
    started = time.time()  # before planning: a prerequisite run (dataset.source) is part of this run's wall time
    plan = _plan(req, callbacks, collect=True, interrupt=interrupt)
    callbacks.plan(plan.stages)
    pending = [s.name for s in plan.stages if s.status == "pending"]
    if pending:  # only a plan without collection may leave keys unknown
        why = next((str(s.fingerprint["pending"]) for s in plan.stages if s.fingerprint.get("pending")), "")
        raise CorlError(f"{pending[0]}: its key is still unknown after planning ({why})")

    record_path = new_record_path(plan.root, plan.spec.name, plan.task.name, req.seed)
    record = new_record(req, plan, str(device), started)
    write_record(record_path, record)
    # a prerequisite run's stages come first: the record references them (prune keeps them)
    outcomes: list[StageOutcome] = [o for p in plan.prerequisites for o in p.outcomes]
    artifacts: dict[str, art.Artifact] = {}
    status = "ok"

    try:
        with _SigintHandler(interrupt, callbacks):
            for ps in plan.stages:
                if ps.status != "cached":  # referenced while it runs, so a kill -9 leaves it prune-safe
                    running = StageOutcome(ps.name, ps.kind, ps.key, ps.dir, "running")
                    record["stages"] = [stage_entry(o, plan.root) for o in outcomes + [running]]
                    write_record(record_path, record)
                job = stage_job(plan, ps.name, req)
                outcome, artifact = execute_stage(
                    job, {role: artifacts[t] for role, t in ps.inputs.items()}, callbacks, interrupt
                )
                artifacts[ps.name] = artifact
                outcomes.append(outcome)
                if ps.kind == "dataset":
                    record["dataset"] = artifact.outputs
                record["stages"] = [stage_entry(o, plan.root) for o in outcomes]
                write_record(record_path, record)
    except (StageInterrupted, KeyboardInterrupt) as exc:
        status = "interrupted"
        name = exc.stage if isinstance(exc, StageInterrupted) else _current(plan, outcomes)
        step = exc.step if isinstance(exc, StageInterrupted) else None
        ps = plan.stage(name) if name else None
        if ps is not None:
            outcomes.append(StageOutcome(ps.name, ps.kind, ps.key, ps.dir, "interrupted", step=step))
        raise RunInterrupted(
            f"interrupted{f' in stage {name!r}' if name else ''}"
            f"{f' (checkpoint saved at step {step})' if step else ''}; resume with: {req.command()}"
        ) from None
    except BaseException:
        status = "failed"
        name = _current(plan, outcomes)
        if name is not None:  # keep the partial artifact referenced (prune must not take its checkpoint)
            ps = plan.stage(name)
            outcomes.append(StageOutcome(ps.name, ps.kind, ps.key, ps.dir, "failed"))
        raise
    finally:
        result = finish_record(record_path, record, req, plan, outcomes, status, started)
    callbacks.run_finished(result)
    return result


# ------------------------------------------------------------------------------ run records
def new_record(req: RunRequest, plan: Plan, device: str, started: float, **extra: Any) -> dict[str, Any]:
    """A run record as it starts (``corl runs`` lists it; prune keeps what it references)."""
    return {
        "pipeline": plan.spec.name,
        "spec": str(plan.spec.path),
        "task": plan.task.name,
        "seed": req.seed,
        "preset": req.preset,
        "overrides": list(req.overrides),
        "device": device,
        "command": req.command(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started,
        "status": "running",
        "stages": [],
        "dataset": {},
        **extra,
    }


def stage_entry(o: StageOutcome, root: Path) -> dict[str, Any]:
    return {
        "name": o.name,
        "kind": o.kind,
        "key": o.key,
        "dir": o.dir.relative_to(root).as_posix(),
        "status": o.status,
        "wall_time": o.wall_time,
        "metrics": o.metrics,
        "resumed_from": o.resumed_from,
        "checkpoint_step": o.step,
    }


def finish_record(
    record_path: Path,
    record: dict[str, Any],
    req: RunRequest,
    plan: Plan,
    outcomes: list[StageOutcome],
    status: str,
    started: float,
) -> RunResult:
    """Write a run's final record; returns its :class:`RunResult`."""
    record["stages"] = [stage_entry(o, plan.root) for o in outcomes]
    record["status"] = status
    record["ended"] = time.time()
    record["wall_time"] = record["ended"] - started
    result = RunResult(
        plan.spec.name,
        plan.task.name,
        req.seed,
        req.preset,
        outcomes,
        status,
        record["wall_time"],
        record_path,
        record.get("dataset", {}),
    )
    record["scores"] = result.scores
    try:
        write_record(record_path, record)
    except CorlError:
        if status == "ok":
            raise
        # the run already fails (e.g. the disk is full): report that error, not this one
    return result


def _draw_curves(ps: PlannedStage, pipeline: str, task: str, result: StageResult, callbacks: RunCallbacks) -> None:
    """``training_curves.png`` beside the artifact (``corl.pipeline.curves``); a plotting
    failure is a warning, never a lost training run."""
    from corl.pipeline.curves import write_for_stage

    try:
        what = ps.name if ps.name == ps.kind else f"{ps.name} ({ps.kind})"
        write_for_stage(ps.dir, f"{pipeline}: {what} on {task}", result.outputs, ps.config)
    except Exception as exc:  # noqa: BLE001
        callbacks.message(f"{ps.name}: training curves not drawn ({type(exc).__name__}: {exc})", "warning")


def _current(plan: Plan, outcomes: list[StageOutcome]) -> str | None:
    done = {o.name for o in outcomes}
    return next((s.name for s in plan.stages if s.name not in done), None)


# ------------------------------------------------------------------------------ one stage
@dataclass
class StageJob:
    """One planned stage with everything needed to build its artifact in any process.

    Picklable on purpose: ``corl run`` builds it in-process, ``corl sweep`` ships it to a
    pool worker or a Ray task, and both call :func:`execute_stage` on it. Nothing is planned
    again on the worker (the fingerprint, e.g. the dataset's location and sha256, comes
    from the driver's plan), so a worker cannot compute a different key.
    """

    stage: PlannedStage
    pipeline: str
    task: TaskSpec
    config: Any
    seed: int
    device: str
    options: RunOptions
    every_steps: int
    every_seconds: float
    log_every: int
    dataset_sha256: str | None
    input_dirs: dict[str, tuple[str, Path]]  # role -> (key, directory) of the input artifact
    kind_module: str  # the module registering the stage kind (a plugin kind is imported from it)
    wait: bool = True
    lock_timeout: float | None = None


def stage_job(plan: Plan, name: str, req: RunRequest) -> StageJob:
    """The :class:`StageJob` of stage ``name`` of ``plan`` (run options from ``req``)."""
    ps = plan.stage(name)
    policy = plan.spec.checkpoint
    kind = plan.spec.stages[name].kind
    return StageJob(
        stage=ps,
        pipeline=plan.spec.name,
        task=plan.task,
        config=plan.configs[name],
        seed=req.seed,
        device=req.device,
        options=plan.options,
        every_steps=req.checkpoint_every_steps if req.checkpoint_every_steps is not None else policy.every_steps,
        every_seconds=(
            req.checkpoint_every_seconds if req.checkpoint_every_seconds is not None else policy.every_seconds
        ),
        log_every=req.log_every if req.log_every is not None else policy.log_every,
        dataset_sha256=next((p.fingerprint.get("sha256") for p in plan.stages if p.kind == "dataset"), None),
        input_dirs={role: (plan.stage(t).key, plan.stage(t).dir) for role, t in ps.inputs.items()},
        kind_module=kind.fn.__module__,
        wait=req.wait,
        lock_timeout=req.lock_timeout,
    )


def load_inputs(job: StageJob) -> dict[str, art.Artifact]:
    """The job's finished input artifacts, read from their manifests (in a worker process)."""
    inputs = {}
    for role, (key, directory) in job.input_dirs.items():
        manifest = art.read_manifest(directory)
        if manifest is None or manifest.get("key") != key:
            raise CorlError(
                f"{job.stage.name}: input {role!r} ({directory}) is not finished; "
                "does this worker see the driver's cache root?"
            )
        inputs[role] = art.Artifact(directory, manifest)
    return inputs


def execute_stage(
    job: StageJob, inputs: dict[str, art.Artifact], callbacks: RunCallbacks, interrupt: InterruptFlag
) -> tuple[StageOutcome, art.Artifact]:
    """Build one stage's artifact (or take it from the cache): lock, re-check, run, manifest.

    Returns the outcome and the finished artifact. Raises :class:`StageInterrupted` when
    ``interrupt`` is set (the stage saved a checkpoint) and whatever the stage raised.
    """
    ps = job.stage
    if ps.status == "cached" and ps.artifact is not None:
        outcome = StageOutcome(ps.name, ps.kind, ps.key, ps.dir, "cached", 0.0, ps.artifact.metrics)
        callbacks.stage_finished(outcome)
        return outcome, ps.artifact
    device = resolve_device(job.device)
    lock = ArtifactLock(ps.dir)
    lock.acquire(wait=job.wait, timeout=job.lock_timeout, on_wait=callbacks.message)
    try:
        if lock.recovered_from:
            callbacks.message(
                f"{ps.dir.name}: recovered a stale lock of pid {lock.recovered_from.get('pid')}"
                f" on {lock.recovered_from.get('host')}",
                "warning",
            )
        try:
            done = art.verify(ps.dir, ps.key)
        except art.CorruptArtifact as exc:
            callbacks.message(f"{ps.name}: corrupt artifact ({exc}); rebuilding", "warning")
            art.discard(ps.dir)
            done = None
        if done is not None:  # another run finished it while we waited for the lock
            outcome = StageOutcome(ps.name, ps.kind, ps.key, ps.dir, "cached", 0.0, done.metrics)
            callbacks.stage_finished(outcome)
            return outcome, done
        ps.dir.mkdir(parents=True, exist_ok=True)
        for leftover in ps.dir.glob(".*.tmp"):  # temporary files of a writer killed mid-write
            leftover.unlink(missing_ok=True)
        kind = get_stage_kind(ps.kind)
        seed_everything(job.seed)
        ctx = StageContext(
            name=ps.name,
            kind=ps.kind,
            task=job.task,
            config=job.config,
            seed=job.seed,
            device=device,
            out_dir=ps.dir,
            inputs=inputs,
            options=job.options,
            checkpointer=Checkpointer(ps.dir, job.every_steps, job.every_seconds),
            callbacks=callbacks,
            interrupt=interrupt,
            log_every=job.log_every,
            fingerprint=ps.fingerprint,
        )
        t0 = time.time()
        callbacks.stage_started(ps.name, ps.kind, None, 0)  # a train loop re-announces with total/resume
        result = kind.fn(ctx)
        if not isinstance(result, StageResult):
            raise TypeError(f"stage kind {ps.kind!r} returned {type(result).__name__}, expected StageResult")
        wall = time.time() - t0
        _draw_curves(ps, job.pipeline, job.task.name, result, callbacks)
        # full names: 'critic/loss' and 'actor/loss' must not collapse into one 'train/loss'
        metrics = {f"train/{k}": v for k, v in ctx.last_train_metrics.items()}
        metrics.update({k: float(v) for k, v in result.metrics.items()})
        manifest = {
            "key": ps.key,
            "kind": ps.kind,
            "stage": ps.name,
            "stage_version": kind.version,
            "pipeline": job.pipeline,
            "task": job.task.name,
            "config": ps.config,
            "inputs": {role: {"stage": ps.inputs[role], "key": a.key, "dir": a.dir.name} for role, a in inputs.items()},
            "dataset_sha256": job.dataset_sha256,
            "seed": job.seed if kind.seeded else None,
            "device": str(device),
            "versions": art.package_versions(),
            "wall_time": wall,
            "finished": time.time(),
            "resumed_from": ctx.resumed_from,
            "steps": ctx.steps_done,
            "final_metrics": metrics,
            "outputs": result.outputs,
            "files": art.content_files(ps.dir),
        }
        art.write_json_atomic(ps.dir / art.MANIFEST, manifest)  # last: now the artifact is done
        ctx.checkpointer.clear()
        artifact = art.Artifact(ps.dir, manifest)
        outcome = StageOutcome(ps.name, ps.kind, ps.key, ps.dir, "ran", wall, metrics, ctx.resumed_from)
        callbacks.stage_finished(outcome)
        return outcome, artifact
    finally:
        lock.release()
