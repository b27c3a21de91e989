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

Upstream runs: a stage may read another pipeline's artifact (``dataset.source=cvpo``: the
file ``corl run cvpo``'s ``export`` stage writes, keyed by its sha256). Its stage kind's
``upstream`` hook names that run; the planner plans it too and puts its stages into the same
plan as ``cvpo:train``, ``cvpo:export`` (same cache root, device, locks and resume), before the
stage that reads them, so the plan lists every stage the run will build. While that data is
not built, the keys that depend on it are ``pending``; the runner keys those stages when
their turn comes. Their outcomes join the run's record, so ``corl runs`` shows them and
``corl cache prune`` keeps them.
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
from typing import Any

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
    UpstreamRun,
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
class Upstream:
    """Another pipeline's run that is part of this plan (a stage kind's ``upstream`` hook
    asked for it): its stages are in :attr:`Plan.stages` as ``<pipeline>:<stage>``."""

    prefix: str  # "<pipeline>:"
    reader: str  # this run's stage that reads it
    request: RunRequest  # with this run's cache root, device, offline and lock settings
    plan: "Plan"
    asked: UpstreamRun  # what the hook returned (its request as the user would type it)


@dataclass
class Plan:
    """Every stage a run builds or reuses, in dependency order, with its key and cache state.

    ``stages`` includes the stages of upstream runs (``cvpo:train``, ``cvpo:export`` for
    ``dataset.source = cvpo``), before the stage that reads them. A stage whose key depends on
    an artifact not built yet is ``pending``; the runner keys it once its inputs are built.
    """

    spec: PipelineSpec
    task: TaskSpec
    configs: dict[str, Any]
    stages: list[PlannedStage]
    root: Path
    options: RunOptions
    upstream: list[Upstream] = field(default_factory=list)

    def stage(self, name: str) -> PlannedStage:
        return next(s for s in self.stages if s.name == name)

    def upstream_of(self, name: str) -> Upstream | None:
        """The upstream run a stage name (``cvpo:train``) belongs to; None for this run's own."""
        return next((u for u in self.upstream if name.startswith(u.prefix)), None)

    @property
    def pending(self) -> list[PlannedStage]:
        return [s for s in self.stages if s.status == "pending"]


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
    resolved, every stage (upstream runs' too) with its key, directory and cache state
    (cached, run, resume, restart, corrupt, stale, pending).

    Nothing trains and nothing is written but the dataset hash memo. An upstream run a stage
    reads (``dataset.source=cvpo``: ``corl run cvpo``'s ``export``) is planned here too and its
    stages join this plan as ``cvpo:train``, ``cvpo:export``; when it is not cached, the stages
    whose keys depend on its data are ``pending`` until :func:`run_pipeline` has built it.
    ``corl run --dry-run``, ``corl sweep`` and ``corl sweep --status`` plan with this.
    """
    check_run_options(req)
    spec = load_spec(req.pipeline)
    task = get_task(req.task)
    configs = spec.resolve(task.name, req.preset, req.overrides)
    root = art.cache_root(req.checkpoints)
    options = RunOptions(dataset_path=req.dataset, offline=req.offline, cache_root=root)
    plan = Plan(spec, task, configs, [], root, options)
    for name, sspec in spec.stages.items():
        asked = None
        if sspec.kind.upstream is not None:
            asked = sspec.kind.upstream(FingerprintContext(task, configs[name], options, request=req))
        if asked is not None:
            _add_upstream(plan, req, name, asked, callbacks or RunCallbacks())
        built = {s.name: s.artifact for s in plan.stages if s.status == "cached" and s.artifact is not None}
        plan.stages.append(_plan_stage(plan, req, name, built))
    return plan


def _add_upstream(plan: Plan, req: RunRequest, reader: str, asked: UpstreamRun, callbacks: RunCallbacks) -> None:
    """Plan ``asked.request`` with this run's settings and add its stages, prefixed."""
    sub = dataclasses.replace(
        asked.request,
        device=req.device,
        offline=req.offline,
        checkpoints=str(plan.root),
        wait=req.wait,
        lock_timeout=req.lock_timeout,
    )
    try:
        nested = plan_pipeline(sub)
        if asked.stage not in {s.name for s in nested.stages}:
            raise ConfigError(f"pipelines/{nested.spec.name}.toml has no stage {asked.stage!r}")
    except CorlError as exc:  # name the option that asked for the other run
        if type(exc) in (CorlError, ConfigError) and not str(exc).startswith(asked.label):
            raise type(exc)(f"{asked.label} ({asked.request.command()}): {exc}") from None
        raise
    prefix = f"{nested.spec.name}:"
    if any(u.prefix == prefix for u in plan.upstream):
        raise ConfigError(f"{asked.label}: this run already reads another {nested.spec.name} run")
    plan.upstream.append(Upstream(prefix, reader, sub, nested, asked))
    for s in nested.stages:
        name = prefix + s.name
        plan.stages.append(dataclasses.replace(s, name=name, inputs={r: prefix + t for r, t in s.inputs.items()}))
    done = all(s.status == "cached" for s in nested.stages)
    callbacks.message(f"{asked.label}: {asked.request.command()} ({'cached' if done else 'not cached: runs first'})")


def _plan_stage(plan: Plan, req: RunRequest, name: str, built: dict[str, art.Artifact]) -> PlannedStage:
    """Key, directory and cache state of this run's stage ``name``, given the stages planned
    before it (``plan.stages``) and the artifacts already ``built`` (by stage name)."""
    sspec = plan.spec.stages[name]
    kind, cfg = sspec.kind, plan.configs[name]
    names = [s.name for s in plan.stages]
    before = plan.stages[: names.index(name)] if name in names else plan.stages
    planned = {s.name: s for s in before}
    inputs = dict(sspec.inputs)
    up = next((u for u in plan.upstream if u.reader == name), None)
    asked = up.asked if up is not None else None
    if up is not None:
        inputs[up.asked.role] = up.prefix + up.asked.stage
    fp: dict[str, Any] = {}
    if kind.fingerprint is not None:
        fctx = FingerprintContext(
            plan.task,
            cfg,
            plan.options,
            request=req,
            inputs={role: built[t] for role, t in inputs.items() if t in built},
            upstream=asked,
        )
        fp = kind.fingerprint(fctx) or {}
    own = [s for s in before if s.kind == "dataset" and plan.upstream_of(s.name) is None]
    dataset_sha = own[0].fingerprint.get("sha256") if own else (fp.get("sha256") if kind.name == "dataset" else None)
    # the key: the stage's own inputs (an upstream artifact is keyed by what the fingerprint read from it)
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
    directory = plan.root / plan.task.name / f"{kind.name}-{key}"
    status, reason, artifact = "run", "", None
    pending = fp.get("pending") or any(planned[t].status == "pending" for t in sspec.inputs.values())
    if pending:  # its key depends on an artifact not built yet
        status, key = "pending", "pending"
        directory = plan.root / plan.task.name / f"{kind.name}-(key pending)"
    else:
        try:
            artifact = art.verify(directory, key)
            if artifact is not None:
                status = "cached"
                problem = kind.stale(artifact, plan.options) if kind.stale is not None else None
                if problem:
                    status, reason, artifact = "stale", f"{problem}: will rebuild", None
        except art.CorruptArtifact as exc:
            status, reason = "corrupt", str(exc)
    if status == "run" and (directory / art.CHECKPOINT).exists():
        problem = checkpoint_problem(directory / art.CHECKPOINT)
        status, reason = (
            ("resume", "") if problem is None else ("restart", f"{art.CHECKPOINT} {problem}: will restart from step 0")
        )
    return PlannedStage(name, kind.name, key, directory, status, config_dict(cfg), inputs, fp, reason, artifact)


def build_upstream(
    req: RunRequest,
    plan: Plan,
    callbacks: RunCallbacks | None = None,
    interrupt: InterruptFlag | None = None,
) -> Plan:
    """Build the plan's upstream stages that are not cached (in this process, in order), then
    plan again: every key is known after that. For ``corl sweep``, whose graph needs keys."""
    callbacks, interrupt = callbacks or RunCallbacks(), interrupt or InterruptFlag()
    built: dict[str, art.Artifact] = {}
    for ps in plan.stages:
        if plan.upstream_of(ps.name) is not None:
            _, built[ps.name] = execute_stage(
                stage_job(plan, ps.name, req), {r: built[t] for r, t in ps.inputs.items()}, callbacks, interrupt
            )
    return plan_pipeline(req)


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
    """Run a pipeline: plan it (:func:`plan_pipeline`, upstream runs' stages included), then
    build every stage that is not cached, in dependency order, each through
    :func:`execute_stage` (the one function that builds an artifact, for ``corl sweep`` too);
    a ``pending`` stage is keyed when its turn comes, its inputs built by then."""
    callbacks = callbacks or RunCallbacks()
    device = resolve_device(req.device)
    interrupt = interrupt or InterruptFlag()
    started = time.time()
    plan = plan_pipeline(req, callbacks)
    callbacks.plan(plan.stages)

    record_path = new_record_path(plan.root, plan.spec.name, plan.task.name, req.seed)
    record = new_record(req, plan, str(device), started)
    write_record(record_path, record)
    outcomes: list[StageOutcome] = []
    artifacts: dict[str, art.Artifact] = {}
    status = "ok"

    try:
        with _SigintHandler(interrupt, callbacks):
            for index, ps in enumerate(plan.stages):
                if ps.status == "pending":  # its inputs are built now: key it
                    ps = plan.stages[index] = _plan_stage(plan, req, ps.name, artifacts)
                    if ps.status == "pending":
                        why = ps.fingerprint.get("pending") or "an input's key is unknown"
                        raise CorlError(f"{ps.name}: its key is still unknown after its inputs were built ({why})")
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
                if ps.kind == "dataset" and plan.upstream_of(ps.name) is None:
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
    """The :class:`StageJob` of stage ``name`` of ``plan`` (run options from ``req``); an
    upstream run's stage (``cvpo:train``) is that run's job, shown under its prefixed name."""
    ps = plan.stage(name)
    up = plan.upstream_of(name)
    if up is not None:
        return dataclasses.replace(stage_job(up.plan, name[len(up.prefix) :], up.request), stage=ps)
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
        dataset_sha256=next(
            (
                p.fingerprint.get("sha256")
                for p in plan.stages
                if p.kind == "dataset" and plan.upstream_of(p.name) is None
            ),
            None,
        ),
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
        if done is not None and ps.status == "stale":  # e.g. an export whose file left the store
            kind = get_stage_kind(ps.kind)
            problem = kind.stale(done, job.options) if kind.stale is not None else None
            if problem:
                callbacks.message(f"{ps.name}: {problem}; building it again", "warning")
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
