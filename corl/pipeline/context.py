"""What a stage function receives (:class:`StageContext`) and returns (:class:`StageResult`).

The contract is documented in ``corl/pipeline/stages/__init__.py``. This module also holds
the resumable training loop, because resume, metrics, progress and Ctrl-C must happen at the
same step boundary to be consistent: a checkpoint taken mid-update would restore a state no
uninterrupted run ever had.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from corl.data.store import load_task_dataset
from corl.errors import CorlError, DatasetError
from corl.files import append_line, atomic_write
from corl.pipeline.checkpoint import Checkpointer, restore_rng_states
from corl.pipeline.progress import RunCallbacks
from corl.pipeline.results import RunRequest
from corl.store.artifacts import METRICS, Artifact
from corl.tasks import TaskSpec


class StageInterrupted(Exception):
    """Ctrl-C reached a stage; its state is saved (when it had any) and the run stops."""

    def __init__(self, stage: str, step: int | None) -> None:
        super().__init__(f"stage {stage!r} interrupted" + (f" at step {step}" if step is not None else ""))
        self.stage, self.step = stage, step


class InterruptFlag:
    """Set by the runner's SIGINT handler; polled by the loop at step boundaries."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True


@dataclass
class StageResult:
    """Scores and facts of a finished stage (see the stage API)."""

    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunOptions:
    """Run-wide options that locate things but do not change results (not in keys)."""

    dataset_path: str | None = None
    offline: bool | None = None
    cache_root: Path = Path("checkpoints")


@dataclass
class UpstreamRun:
    """Another pipeline run whose artifact a stage reads (a stage kind's ``upstream`` hook
    returns one: ``dataset.source = cvpo`` reads the ``export`` artifact of ``corl run cvpo``).

    The planner plans ``request`` too and adds its stages to the same plan, named
    ``<pipeline>:<stage>``; ``stage``'s artifact arrives as the input ``role`` (not part of the
    key: the stage keys what it reads from it, e.g. the file's sha256, in its fingerprint).
    ``label`` names the option that asked for it in messages and errors.
    """

    request: RunRequest
    stage: str
    role: str
    label: str


@dataclass
class FingerprintContext:
    """What a stage kind's ``fingerprint`` and ``upstream`` hooks get at plan time.

    ``inputs``: the input artifacts that are already built (cached, or built earlier in this
    run), by role; a role whose stage is not built yet is absent. ``upstream``: what the
    kind's ``upstream`` hook returned, if anything. ``request``: the run being planned.
    """

    task: TaskSpec
    config: Any
    options: RunOptions
    request: RunRequest | None = None
    inputs: dict[str, Artifact] = field(default_factory=dict)
    upstream: UpstreamRun | None = None


_DATASET_MEMO: dict[str, Any] = {}


def remember_dataset(dataset: Any) -> None:
    """Keep one loaded (CPU) dataset per process, by sha256, so stages of a run share it."""
    _DATASET_MEMO.clear()
    _DATASET_MEMO[dataset.metadata["sha256"]] = dataset


@dataclass
class StageContext:
    name: str
    kind: str
    task: TaskSpec
    config: Any
    seed: int
    device: torch.device
    out_dir: Path
    inputs: dict[str, Artifact]
    options: RunOptions
    checkpointer: Checkpointer
    callbacks: RunCallbacks
    interrupt: InterruptFlag
    log_every: int = 100
    fingerprint: dict[str, Any] = field(default_factory=dict)
    # filled while running
    last_train_metrics: dict[str, float] = field(default_factory=dict)
    steps_done: int = 0
    resumed_from: int = 0

    # ------------------------------------------------------------------ inputs
    def input(self, role: str) -> Artifact:
        if role not in self.inputs:
            raise CorlError(f"stage {self.name!r} needs an input {role!r}; it has {sorted(self.inputs)}")
        return self.inputs[role]

    def load_dataset(self, role: str = "dataset"):
        """The dataset recorded by the ``dataset`` input, sha256-verified, on ``self.device``."""
        art = self.input(role)
        path, sha = art.outputs["path"], art.outputs["sha256"]
        dataset = _DATASET_MEMO.get(sha)
        if dataset is None:
            if not Path(path).is_file():
                raise DatasetError(f"{path}: dataset recorded by {art.dir.name} is gone; rerun to locate it again")
            dataset = load_task_dataset(self.task, path=path)
            if dataset.metadata.get("sha256") != sha:
                raise DatasetError(
                    f"{path}: sha256 changed since {art.dir.name} recorded it; rerun to re-key the dataset"
                )
            remember_dataset(dataset)
        return dataset.to(self.device)

    def load_policy(self, role: str = "policy"):
        from corl.store.policies import load_policy_fn

        art = self.input(role)
        if "policy" not in art.outputs:
            raise CorlError(f"stage {self.name!r}: input {role!r} ({art.kind}) produced no policy")
        return load_policy_fn(art.dir, art.outputs["policy"], self.device)

    def generator(self, offset: int = 0) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed * 1_000_003 + offset)
        return gen

    # ------------------------------------------------------------------ reporting
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        append_line(self.out_dir / METRICS, json.dumps({"step": step, **metrics}) + "\n")
        self.callbacks.metrics_logged(self.name, step, metrics)

    def progress(self, done: int, total: int | None, metrics: dict[str, float] | None = None) -> None:
        """Progress of non-training work (evaluation); stops the run on Ctrl-C."""
        self.callbacks.stage_progress(self.name, done, total, metrics or {})
        if self.interrupt.requested:
            raise StageInterrupted(self.name, None)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The stage's last checkpoint, or None; an unreadable one is announced, never silent
        (the plan said "will restart"; the stage says it again as it starts over)."""
        payload = self.checkpointer.load()
        if self.checkpointer.dropped:
            self.callbacks.message(f"{self.name}: {self.checkpointer.dropped}", "warning")
        return payload

    def train_loop(
        self,
        total_steps: int | None,
        get_state: Callable[[], dict[str, Any]],
        set_state: Callable[[dict[str, Any]], None],
        log_every: int | None = None,
        boundary: Callable[[], bool] | None = None,
        boundary_wait: int = 0,
    ) -> "TrainLoop":
        return TrainLoop(
            self,
            None if total_steps is None else int(total_steps),
            get_state,
            set_state,
            log_every,
            boundary,
            boundary_wait,
        )


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            break  # a torn last line from a kill
        if not isinstance(entry, dict) or not isinstance(entry.get("step", 0), (int, float)):
            break
        if entry.get("step", 0) <= last_step:
            kept.append(line)
    atomic_write(path, "".join(f"{line}\n" for line in kept).encode())


class TrainLoop:
    """The one resumable training loop of every training stage (see the stage API).

    It owns resume (state, RNG, metrics after the checkpoint dropped), metrics (averaged over
    ``log_every`` steps), progress, checkpoints and Ctrl-C. A step is whatever the stage counts
    (an update, an epoch, env steps). Two ways to drive it: iterate it (``for step in loop: ...;
    loop.log(m)``) for a known number of steps, or, for a loop a learner or a stage runs itself
    (``DynamicsLearner.fit`` until early stopping, ``total`` None; the online stages, whose steps
    advance by ``num_envs`` env steps), call :meth:`restore` once and :meth:`step_done` at the
    end of each step.

    ``boundary`` (optional): whether the state is at a clean boundary right now (the online
    stages: no episode open, because a simulator cannot be checkpointed). A save that falls due
    elsewhere waits for the next boundary, at most ``boundary_wait`` steps; Ctrl-C saves at once.
    ``latest``: the metrics the progress display shows (what :meth:`log` got last, unless the
    stage sets it).
    """

    PROGRESS_INTERVAL = 0.1  # seconds between progress callbacks

    def __init__(
        self,
        ctx: StageContext,
        total: int | None,
        get_state: Callable[[], dict[str, Any]],
        set_state: Callable[[dict[str, Any]], None],
        log_every: int | None = None,
        boundary: Callable[[], bool] | None = None,
        boundary_wait: int = 0,
    ) -> None:
        self.ctx, self.total, self.get_state, self.set_state = ctx, total, get_state, set_state
        self.log_every = max(1, ctx.log_every if log_every is None else log_every)
        self.boundary, self.boundary_wait = boundary, int(boundary_wait)
        self.step = 0
        self.resumed_from = 0
        self.latest: dict[str, float] = {}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._count = 0
        self._last_progress = 0.0
        self._due_since: int | None = None  # the step a save fell due at, while it waits for a boundary

    def log(self, metrics: dict[str, float]) -> None:
        """Record this step's metrics (averaged over ``log_every`` steps in metrics.jsonl)."""
        self.latest = metrics
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
            # per-key counts: a metric logged on some steps only is averaged over those steps
            self._counts[k] = self._counts.get(k, 0) + 1
        self._count += 1

    def _flush(self) -> None:
        if self._count:
            means = {k: v / self._counts[k] for k, v in self._sums.items()}
            self.ctx.log_metrics(self.step, means)
            self.ctx.last_train_metrics = means
            self._sums, self._counts, self._count = {}, {}, 0

    def _save(self) -> None:
        self.ctx.checkpointer.save(self.step, self.get_state())
        self._due_since = None

    def save(self, step: int) -> None:
        """Checkpoint now, at ``step`` (a stage's own clean boundary, e.g. between two learners)."""
        self.step = step
        self._save()

    def restore(self) -> int:
        """Continue from the stage's last checkpoint, if any (state, RNG states, metrics logged
        after it dropped), and announce the stage; the step it resumes from (0: a fresh start)."""
        ctx = self.ctx
        payload = ctx.load_checkpoint()
        metrics_path = ctx.out_dir / METRICS
        if payload is not None and 0 < payload["step"] and (self.total is None or payload["step"] <= self.total):
            self.set_state(payload["state"])
            restore_rng_states(payload["rng"])
            self.step = self.resumed_from = int(payload["step"])
            truncate_metrics(metrics_path, self.step)
        else:
            metrics_path.unlink(missing_ok=True)
        ctx.resumed_from = self.resumed_from
        ctx.callbacks.stage_started(ctx.name, ctx.kind, self.total, self.resumed_from)
        return self.resumed_from

    def step_done(self, step: int, metrics: dict[str, float] | None = None, may_save: bool = True) -> None:
        """Step ``step`` is finished (with ``metrics``, if not given to :meth:`log`): log,
        report progress, save when due (unless ``may_save`` is False: the stage saves at this
        step itself), and on Ctrl-C save and raise :class:`StageInterrupted`."""
        ctx = self.ctx
        if metrics is not None:
            self.log(metrics)
        self.step = ctx.steps_done = step
        last = self.total is not None and step >= self.total
        if step % self.log_every == 0 or last:
            self._flush()
        now = time.monotonic()
        if now - self._last_progress >= self.PROGRESS_INTERVAL or last:
            self._last_progress = now
            ctx.callbacks.stage_progress(ctx.name, step, self.total, self.latest)
        if ctx.interrupt.requested:
            self._flush()
            self._save()
            raise StageInterrupted(ctx.name, step)
        if not last and may_save and ctx.checkpointer.due(step):
            if self.boundary is None:
                self._save()
                return
            self._due_since = step if self._due_since is None else self._due_since
            if self.boundary() or step - self._due_since >= self.boundary_wait:
                self._save()

    def finish(self, step: int) -> None:
        """The stage's loop is over at ``step``: the last metrics window and progress report."""
        self._flush()
        self.step = self.ctx.steps_done = step
        self.ctx.callbacks.stage_progress(self.ctx.name, step, self.total, self.latest)

    def __iter__(self) -> Iterator[int]:
        if self.total is None:
            raise TypeError("a TrainLoop without a total is driven by restore() and step_done(), not iterated")
        self.restore()
        for step in range(self.step + 1, self.total + 1):
            yield step
            self.step_done(step)
        self.ctx.steps_done = self.step
