"""``--logger tensorboard|wandb``: stream a run's metrics to the tools users already watch.

Why callbacks: every stage writes its metrics through ``ctx.log_metrics`` (``metrics.jsonl``),
which also calls ``callbacks.metrics_logged(stage, step, metrics)``; a logger is one more
:class:`~corl.pipeline.progress.RunCallbacks`, so nothing in a stage or learner knows about
TensorBoard or W&B, and without ``--logger`` neither is imported (both are optional extras:
``pip install 'corl-saferl[tensorboard]'`` / ``'[wandb]'``; ``make install`` installs them).

* Names: a metric ``m`` of stage ``s`` is ``s/m`` (``bc/loss``, ``policy/critic/loss``,
  ``cvpo:train/episode_reward`` for an upstream run's stage). A stage's final metrics
  (``final/normalized_reward`` ...) are logged when it finishes, cached stages included, so a
  cached rerun still shows the run's scores.
* Where: ``<cache root>/logs/tensorboard/<run name>/`` (``tensorboard --logdir
  checkpoints/logs/tensorboard``) and ``<cache root>/logs/`` as W&B's ``dir``.
* W&B runs **offline** (``<dir>/wandb/offline-run-*``, ``wandb sync`` uploads it later) unless
  the user configured it: ``WANDB_MODE`` set, or ``WANDB_API_KEY`` present (then online).
  ``WANDB_PROJECT`` names the project (default ``corl``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from corl.errors import ConfigError
from corl.pipeline.progress import RunCallbacks

if TYPE_CHECKING:
    from corl.pipeline.results import PlannedStage, RunRequest, RunResult, StageOutcome

LOGGERS = ("tensorboard", "wandb")


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


class Tee(RunCallbacks):
    """Forward every callback to several (the terminal display, then each logger)."""

    def __init__(self, targets: Sequence[RunCallbacks]) -> None:
        self.targets = list(targets)

    def __getattr__(self, name: str) -> Any:  # attributes of the first target (e.g. RichCallbacks.progress)
        return getattr(self.targets[0], name)

    def plan(self, stages: list["PlannedStage"]) -> None:
        for t in self.targets:
            t.plan(stages)

    def stage_started(self, stage: str, kind: str, total: int | None, resumed_from: int) -> None:
        for t in self.targets:
            t.stage_started(stage, kind, total, resumed_from)

    def stage_progress(self, stage: str, done: int, total: int | None, metrics: dict[str, float]) -> None:
        for t in self.targets:
            t.stage_progress(stage, done, total, metrics)

    def metrics_logged(self, stage: str, step: int, metrics: dict[str, Any]) -> None:
        for t in self.targets:
            t.metrics_logged(stage, step, metrics)

    def stage_finished(self, outcome: "StageOutcome") -> None:
        for t in self.targets:
            t.stage_finished(outcome)

    def message(self, text: str, level: str = "info") -> None:
        for t in self.targets:
            t.message(text, level)

    def run_finished(self, result: "RunResult") -> None:
        for t in self.targets:
            t.run_finished(result)


class MetricLogger(RunCallbacks, ABC):
    """Base of the adapters: tracks each stage's last step; ``write``/``close`` are theirs."""

    def __init__(self) -> None:
        self.last_step: dict[str, int] = {}

    @abstractmethod
    def write(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        """Send one step's numeric metrics of ``stage`` to the backend."""

    def close(self) -> None: ...

    def metrics_logged(self, stage: str, step: int, metrics: dict[str, Any]) -> None:
        values = _numeric(metrics)
        self.last_step[stage] = int(step)
        if values:
            self.write(stage, int(step), values)

    def stage_finished(self, outcome: "StageOutcome") -> None:
        values = _numeric(outcome.metrics)
        if values:
            self.write(outcome.name, self.last_step.get(outcome.name, 0), values)


class TensorBoardLogger(MetricLogger):
    """Scalars through ``torch.utils.tensorboard.SummaryWriter`` (needs the tensorboard package)."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--logger tensorboard needs the tensorboard extra: pip install 'corl-saferl[tensorboard]'"
            ) from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"{stage}/{key}", value, global_step=step)

    def run_finished(self, result: "RunResult") -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; ``online`` when an API key is configured; else ``offline``."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbLogger(MetricLogger):
    """One W&B run per ``corl run``; each stage's metrics on its own step axis (``<stage>/step``)."""

    def __init__(self, log_dir: Path, name: str, config: dict[str, Any]) -> None:
        super().__init__()
        try:
            import wandb
        except ImportError:
            raise ConfigError("--logger wandb needs the wandb extra: pip install 'corl-saferl[wandb]'") from None
        self.wandb = wandb
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "corl"),
            name=name,
            dir=str(self.log_dir),
            mode=wandb_mode(),
            config=config,
            reinit="finish_previous",
        )
        self.stages: set[str] = set()

    def write(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        if stage not in self.stages:
            self.stages.add(stage)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self.run.log({f"{stage}/step": step, **{f"{stage}/{k}": v for k, v in metrics.items()}})

    def stage_finished(self, outcome: "StageOutcome") -> None:
        super().stage_finished(outcome)
        for key, value in _numeric(outcome.metrics).items():
            self.run.summary[f"{outcome.name}/{key}"] = value

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir).parent

    def close(self) -> None:
        self.run.finish()
        # finish() returns before W&B's service has written an offline run's records; teardown
        # waits for it (a later wandb.init starts a fresh service)
        self.wandb.teardown()


def parse_loggers(logger: str | Sequence[str] | None) -> list[str]:
    """``"tensorboard"``, ``"tensorboard,wandb"`` or a list -> validated names."""
    if not logger:
        return []
    items = [logger] if isinstance(logger, str) else list(logger)
    names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"--logger {name!r}: expected {' or '.join(LOGGERS)}")
    return list(dict.fromkeys(names))


def run_name(req: "RunRequest") -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(req.pipeline).stem}-{req.task}-s{req.seed}"


def make_loggers(names: Sequence[str], req: "RunRequest") -> list[MetricLogger]:
    from corl.store.artifacts import cache_root

    base = cache_root(req.checkpoints) / "logs"
    name = run_name(req)
    out: list[MetricLogger] = []
    for logger in names:
        if logger == "tensorboard":
            out.append(TensorBoardLogger(base / "tensorboard" / name))
        else:
            config = {
                "pipeline": req.pipeline,
                "task": req.task,
                "preset": req.preset,
                "seed": req.seed,
                "overrides": list(req.overrides),
                "command": req.command(),
            }
            out.append(WandbLogger(base, name, config))
    return out


@contextlib.contextmanager
def with_loggers(
    logger: str | Sequence[str] | None, req: "RunRequest", callbacks: RunCallbacks | None = None
) -> Iterator[RunCallbacks]:
    """``callbacks`` plus the requested loggers (closed on exit, also after a failure)."""
    names = parse_loggers(logger)
    base = callbacks or RunCallbacks()
    if not names:
        yield base
        return
    loggers = make_loggers(names, req)
    for lg in loggers:
        where = lg.run_dir if isinstance(lg, WandbLogger) else getattr(lg, "log_dir", "")
        mode = f" ({wandb_mode()})" if isinstance(lg, WandbLogger) else ""
        base.message(f"{type(lg).__name__.replace('Logger', '').lower()}{mode}: {where}")
    try:
        yield Tee([base, *loggers])
    finally:
        for lg in loggers:
            lg.close()


__all__ = [
    "LOGGERS",
    "Tee",
    "MetricLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "parse_loggers",
    "make_loggers",
    "with_loggers",
    "wandb_mode",
]
