"""Online data collection as pipeline stages: ``cvpo_train`` and ``mice_train``.

Why these exist: corl's offline methods need datasets, and DSRL built its datasets by training
online safe-RL learners under several cost limits and keeping every training episode. These
stages do the same with corl's own learners (``corl.algos.cvpo``, ``corl.algos.mice``): a
``*_train`` stage trains one learner per cost limit (sequentially) and records every episode
with per-episode metadata (``corl.data.formats.episodes``); the ``export`` stage
(``stages/export.py``) writes the pooled episodes as a dataset. This module is only the glue:
configs, building the learners, the loop body, the artifact.

Checkpoints and resume
----------------------
The loop runs on the engine's one resumable :class:`~corl.pipeline.context.TrainLoop`, which
owns resume, checkpoints and Ctrl-C; its steps are *environment steps* summed over envs and
over the learners of a multi-limit run (so a step advances by ``num_envs``). A checkpoint
(:meth:`_Learners.state_dict`) holds the trainer's ``state_dict`` (networks, optimisers, replay
buffer / open rollout, schedule counters, RNGs), the metadata of the episodes recorded so far
(finished ones only), the bookkeeping of the learning curve, and how many recorded rows are
committed; the rows themselves are appended to hidden ``.episodes-*.npz`` files at each save
(:class:`~corl.data.formats.episodes.EpisodeSpill`), so a save costs the new rows, not the
whole dataset.

Saves happen at a vector step where every env has just finished its episode (the loop's
``boundary``; always the case with fixed-length episodes and synchronous envs), so no
recorded episode is lost. **The simulators' state cannot be
checkpointed**: when a save had to be taken mid-episode (Ctrl-C, or a due save that found no
episode boundary within one episode length), the resumed run *restarts the current episodes*
from fresh resets: the unfinished episodes are not recorded (their env steps still count
towards the budget), CVPO drops the < ``n_step`` rows of its open n-step windows, and MICE
closes its open trajectory slices as time-outs (bootstrapping ``V`` at the last observation,
as at an epoch boundary). A resumed collector resets its envs with ``seed + env_steps`` so the
restarted episodes do not replay episode 0's initial states; the seed each episode's env was
seeded from is in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from corl.algos.base import OnlineAgent
from corl.algos.cvpo.config import CVPOConfig
from corl.algos.mice.config import MICEConfig
from corl.data.formats.episodes import EpisodeSpill, write_episodes
from corl.errors import ConfigError, CorlError
from corl.eval.plots import plot_learning_curve
from corl.files import atomic_write
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.store.artifacts import METRICS

EPISODES_FILE = "episodes.hdf5"  # the train stage's artifact: every recorded episode (DSRL layout)
CURVE_FILE = "learning_curve.png"


# ------------------------------------------------------------------------------ configs
@dataclass
class PeriodicEvalKeys:
    """The train stages' evaluation keys (``online_eval.py``): test episodes every
    ``eval_every`` env steps (0: none), ``eval_episodes`` each; out of the key while unset."""

    eval_every: int = field(default=0, metadata={"key": "if_set"})
    eval_episodes: int = field(default=5, metadata={"key": "if_set"})


@dataclass
class CVPOTrainConfig(CVPOConfig, PeriodicEvalKeys):
    """CVPO online training: every ``CVPOConfig`` field is a stage key with the learner's
    default (FSRL's Bullet settings), plus the stage's own keys below.

    ``steps`` is per learner (env steps summed over ``num_envs``). ``cost_limits`` non-empty
    trains one learner per limit, one after the other, and pools their episodes (DSRL's
    recipe); empty trains one learner at ``cost_limit`` (None = the task's default limit).
    ``seed`` is not a key to set: each learner's seed follows ``--seed`` (left out of the
    artifact key while at its default). ``eval_every``/``eval_episodes``: periodic evaluation
    of the deterministic policy and the best feasible snapshot (``online_eval.py``).
    """

    steps: int = 2_000_000
    num_envs: int = 1
    cost_limit: float | None = None  # type: ignore[assignment]  # None: the task's limit
    cost_limits: list[float] = field(default_factory=list)
    hidden: list[int] = field(default_factory=lambda: [128, 128])  # type: ignore[assignment]
    n_step: int = 2  # FSRL's Bullet setting (the learner's own default is 1)
    seed: int = field(default=0, metadata={"key": "if_set"})


#: ``MICEConfig`` fields that became ``mice_train`` keys after artifacts existed: left out of
#: the key while at their default (the value those artifacts were trained with).
_MICE_KEYED_IF_SET = frozenset(
    {
        "cost_window",
        "empty_cost_window",
        "horizon",
        "activation",
        "log_std_init",
        "obs_normalize",
        "lam",
        "lam_c",
        "cg_iters",
        "cg_damping",
        "line_search_steps",
        "line_search_decay",
        "ppo_clip",
        "ppo_actor_lr",
        "lagrange_lr",
        "lagrange_init",
        "critic_l2",
        "max_grad_norm",
        "emb_dim",
        "kernel_xi",
        "kernel_eps",
        "beta_init",
        "beta_ema",
        "beta_lr",
        "beta_guard",
        "correction_uses_reward_gamma",
        "seed",
    }
)


@dataclass
class MICETrainConfig(MICEConfig, PeriodicEvalKeys):
    """MICE online training: every ``MICEConfig`` field is a stage key with the learner's
    default (the released ``MICE.yaml``) and validation, plus the stage's own keys below.

    ``steps``, ``num_envs``, ``cost_limit``, ``cost_limits``, ``eval_every`` and ``eval_episodes``
    as for ``cvpo_train``; ``seed`` follows ``--seed`` as there.
    """

    KEYED_IF_SET: ClassVar[frozenset[str]] = _MICE_KEYED_IF_SET

    steps: int = 10_240_000
    num_envs: int = 10
    cost_limit: float | None = None  # type: ignore[assignment]  # None: the task's limit
    cost_limits: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------ learner glue
@dataclass
class _Method:
    """How a train stage builds its learner (the only method-specific part of the loop)."""

    name: str
    build: Callable[[StageContext, float, int], OnlineAgent]  # (ctx, cost_limit, learner index) -> trainer
    fixed_horizon: bool


def _save_trained_policy(
    ctx: StageContext,
    trainer: Any,
    limit: float,
    snapshot: dict[str, Any] | None = None,
    suffix: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish a finished learner's actor (``policy-<limit>.pt``) for ``evaluate`` / ``corl eval``.

    Saved when each learner finishes, so a run resumed after a learner switch still has every
    policy. MICE acts on running-normalised observations: its normaliser's mean and std go
    into the file, and the evaluation callable applies them. ``snapshot`` (from
    :func:`~corl.pipeline.stages.online_eval.actor_snapshot`) saves an earlier iterate instead
    of the current one, as ``policy-<limit><suffix>.pt``.
    """
    import copy

    from corl.store.policies import save_policy

    learner = trainer.learner
    cfg = learner.config
    spec = ctx.task
    actor = learner.actor
    common = {
        "obs_dim": spec.obs_dim,
        "act_dim": spec.act_dim,
        "hidden": list(cfg.hidden),
        "activation": cfg.activation,
    }
    mean = std = None
    if snapshot is not None:
        actor = copy.deepcopy(actor)
        actor.load_state_dict(snapshot["actor"])
    if hasattr(trainer, "normalizer"):  # MICE
        builder = "diag_gaussian"
        kwargs = {
            **common,
            "state_dependent_std": False,
            "bounded_mean": False,
            "log_std_init": float(cfg.log_std_init),
        }
        if snapshot is not None and "obs_mean" in snapshot:
            mean, std = snapshot["obs_mean"], snapshot["obs_std"]
        elif trainer.normalizer is not None:
            norm = trainer.normalizer
            mean, std = norm.mean.float(), torch.sqrt(norm.var + norm.eps).float()
    else:  # CVPO
        low, high = [float(x) for x in trainer.act_low], [float(x) for x in trainer.act_high]
        if cfg.policy == "diag":
            builder = "diag_gaussian"
            kwargs = {
                **common,
                "act_low": low,
                "act_high": high,
                "state_dependent_std": bool(cfg.state_dependent_std),
                "bounded_mean": True,
            }
        else:
            builder = "cholesky_gaussian"
            kwargs = {**common, "act_low": low, "act_high": high}
    stem = f"policy-{limit:g}{suffix}"
    policy = {
        **save_policy(ctx.out_dir, actor, builder, kwargs, mean, std, file=f"{stem}.pt"),
        "cost_limit": float(limit),
        **(extra or {}),
    }
    # the spec beside the weights: a resumed run lists policies of learners it did not train itself
    atomic_write(ctx.out_dir / f"{stem}.json", json.dumps(policy, sort_keys=True).encode())
    return policy


def _sub_config(target_cls: type, cfg: Any, **extra: Any) -> Any:
    """The learner's config from the stage config's fields of the same name (lists -> tuples)."""
    names = {f.name for f in dataclasses.fields(target_cls)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dataclasses.asdict(cfg).items() if k in names}
    values.update(extra)
    return target_cls(**values)


def _build_cvpo(ctx: StageContext, limit: float, index: int) -> Any:
    from corl.algos.cvpo import CVPOTrainer

    if ctx.config.seed != 0:
        raise ConfigError(f"{ctx.name}.seed: the learner's seed follows --seed; use --seed instead")
    cfg = _sub_config(CVPOConfig, ctx.config, cost_limit=float(limit), seed=ctx.seed + 1000 * index)
    return CVPOTrainer.for_task(ctx.task, cfg, device=ctx.device)


def _build_mice(ctx: StageContext, limit: float, index: int) -> Any:
    from corl.algos.mice import MICETrainer

    if ctx.config.seed != 0:
        raise ConfigError(f"{ctx.name}.seed: the learner's seed follows --seed; use --seed instead")
    cfg = _sub_config(MICEConfig, ctx.config, cost_limit=float(limit), seed=ctx.seed + 1000 * index)
    return MICETrainer.for_task(ctx.task, ctx.config.num_envs, cfg, device=ctx.device)


METHODS = {
    "cvpo": _Method("cvpo", _build_cvpo, True),
    "mice": _Method("mice", _build_mice, False),
}


# ------------------------------------------------------------------------------ the train loop
def _cost_limits(ctx: StageContext) -> list[float]:
    cfg = ctx.config
    if cfg.cost_limits:
        return [float(x) for x in cfg.cost_limits]
    limit = cfg.cost_limit if cfg.cost_limit is not None else ctx.task.cost_limit
    if limit is None:
        raise CorlError(f"{ctx.kind}: task {ctx.task.name} has no default cost limit; set {ctx.name}.cost_limit")
    return [float(limit)]


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """Python scalars only (numpy ints from ``np.flatnonzero`` would make the checkpoint
    unloadable with ``weights_only=True``, and the engine then silently starts over)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in record.items()}


class _Curve:
    """Per-episode learning-curve bookkeeping: metrics.jsonl lines and violation counters."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.violations = 0  # episodes whose cost exceeded their limit
        self.cum_violation = 0.0  # Σ max(episode cost − limit, 0)
        self.latest: dict[str, float] = {}

    def episode(self, step: int, learner: int, ep: Any) -> None:
        limit = float(ep.cost_limit)
        excess = max(ep.cost - limit, 0.0)
        self.violations += int(excess > 0)
        self.cum_violation += excess
        self.latest = {"episode_reward": ep.reward, "episode_cost": ep.cost, "cum_violations": float(self.violations)}
        self.ctx.log_metrics(
            step,
            {
                "episode": ep.episode,
                "learner": learner,
                "cost_limit": limit,
                "training_step": ep.training_step,
                "seed": ep.seed,
                "episode_reward": ep.reward,
                "episode_cost": ep.cost,
                "episode_length": ep.length,
                "cum_violations": self.violations,
                "cum_violation_excess": self.cum_violation,
            },
        )

    def state(self) -> dict[str, Any]:
        return {"violations": self.violations, "cum_violation": self.cum_violation}

    def load(self, state: dict[str, Any]) -> None:
        self.violations, self.cum_violation = int(state["violations"]), float(state["cum_violation"])


class _Learners:
    """A train stage's state between two vector steps: what its checkpoint holds.

    One learner per cost limit runs at a time (``index``); ``trainer`` and ``collector`` are
    None between two learners, so a save there restarts the next learner from scratch. The
    recorded rows go to the :class:`~corl.data.formats.episodes.EpisodeSpill` at each save;
    the checkpoint holds how many are committed, the finished episodes' metadata (``pool``),
    the learning curve's counters and the periodic evaluations.
    """

    def __init__(self, ctx: StageContext, method: _Method, limits: list[float]) -> None:
        from corl.pipeline.stages.online_eval import PeriodicEvaluator

        cfg = ctx.config
        self.ctx, self.method, self.limits = ctx, method, limits
        self.num_envs, self.per_learner = int(cfg.num_envs), int(cfg.steps)
        self.index = 0
        self.trainer: OnlineAgent | None = None
        self.collector: Any = None  # an OnlineCollector (corl.algos.base.EpisodeCollector) while a learner runs
        self.spill = EpisodeSpill(ctx.out_dir)  # every recorded transition, all learners, in finish order
        self.pool: list[dict[str, Any]] = []  # finished learners' episode metadata
        self.curve = _Curve(ctx)
        self.evaluator = PeriodicEvaluator(ctx.task, int(cfg.eval_every), int(cfg.eval_episodes), ctx.seed, ctx.device)

    @property
    def limit(self) -> float:
        return self.limits[self.index]

    @property
    def base_step(self) -> int:
        """The stage's step at which the current learner started."""
        return self.index * self.per_learner

    def start(self) -> None:
        """Build the current learner and its recording collector."""
        from corl.algos.online.collector import OnlineCollector

        ctx = self.ctx
        self.trainer = self.method.build(ctx, self.limit, self.index)
        self.collector = OnlineCollector(
            ctx.task,
            self.num_envs,
            ctx.seed + 1000 * self.index,
            record=True,
            fixed_horizon=self.method.fixed_horizon,
            cost_limit=self.limit,
            device=ctx.device,
            workers=0,  # 0: from the free cores
        )

    def at_episode_boundary(self) -> bool:
        """No episode open in any env: a save here loses nothing."""
        return self.collector is None or not self.collector.open_episodes().any()

    def state_dict(self) -> dict[str, Any]:
        """Spill the rows recorded since the last save, then the (small) state to checkpoint."""
        common = {
            "learner": self.index,
            "spilled_rows": self.spill.rows,
            "pool_episodes": self.pool,
            "curve": self.curve.state(),
            "eval": self.evaluator.state(),
        }
        if self.trainer is None:  # between two learners: the next one starts from scratch
            return {
                **common,
                "trainer": {},
                "current_episodes": [],
                "env_steps": 0,
                "env_episode": [0] * self.num_envs,
                "open_envs": torch.zeros(self.num_envs, dtype=torch.bool),
                "last_obs": torch.zeros(self.num_envs, 1),
            }
        collector = self.collector
        self.spill.append(collector.take_rows())  # those rows are on disk now
        common["spilled_rows"] = self.spill.rows
        open_envs = collector.open_episodes()
        last_obs = collector.obs if collector.obs is not None else np.zeros((self.num_envs, collector.obs_dim))
        return {
            **common,
            "trainer": self.trainer.state_dict(),
            "current_episodes": [_plain(e.as_dict()) for e in collector.episodes],
            **collector.state_dict(),  # env_steps, env_episode
            "open_envs": torch.from_numpy(open_envs.copy()),
            "last_obs": torch.as_tensor(np.asarray(last_obs, dtype=np.float32)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint; a learner saved mid-run is rebuilt and its open episodes
        cut (the simulators restart them from fresh resets, see the module docstring)."""
        from corl.algos.online.collector import EpisodeInfo

        self.index = int(state["learner"])
        self.spill.restore(int(state["spilled_rows"]))
        self.pool = list(state["pool_episodes"])
        self.curve.load(state["curve"])
        self.evaluator.load(state.get("eval"))
        if not state["trainer"]:  # saved at a learner switch: the loop starts the learner afresh
            return
        self.start()
        trainer, collector = self.trainer, self.collector
        assert trainer is not None
        trainer.load_state_dict(state["trainer"])
        collector.episodes = [
            EpisodeInfo(**{k: v for k, v in e.items() if k in EpisodeInfo.__dataclass_fields__})
            for e in state["current_episodes"]
        ]
        collector.load_state_dict(state)  # env_steps, env_episode
        open_envs = state["open_envs"].numpy().astype(bool)
        if open_envs.any():
            trainer.cut_episodes(open_envs, state["last_obs"].numpy())
        collector.seed = collector.seed + collector.env_steps  # fresh resets, not episode 0's again

    def evaluate(self) -> None:
        """One periodic evaluation of the current learner, logged at the stage's step."""
        steps = self.collector.env_steps
        step = self.base_step + steps
        self.ctx.log_metrics(step, self.evaluator.evaluate(self.trainer, self.index, steps, step, self.limit))

    def finish_learner(self) -> None:
        """The current learner is done: its rows, its policy (and best iterate), its episodes."""
        ctx, trainer, collector, evaluator = self.ctx, self.trainer, self.collector, self.evaluator
        self.spill.append(collector.take_rows())
        _save_trained_policy(ctx, trainer, self.limit)
        if evaluator.enabled:
            last = evaluator.last(self.index, 1)
            if not last or last[0]["learner_step"] != collector.env_steps:  # the final policy's point
                self.evaluate()
            if evaluator.best is not None:
                best = evaluator.best
                _save_trained_policy(
                    ctx,
                    trainer,
                    self.limit,
                    best["snapshot"],
                    "-best",
                    {"learner_step": best["step"], "eval_reward": best["reward"], "eval_cost": best["cost"]},
                )
        self.pool.extend(_plain({**e.as_dict(), "learner": self.index}) for e in collector.episodes)
        self.index += 1
        self.trainer = self.collector = None


def _train(ctx: StageContext, method: _Method) -> StageResult:
    """Train one learner per cost limit, recording every episode, on the engine's resumable
    :class:`~corl.pipeline.context.TrainLoop` (steps: env steps over all learners)."""
    cfg = ctx.config
    if cfg.steps <= 0 or cfg.num_envs <= 0:
        raise ConfigError(f"{ctx.name}: steps and num_envs must be positive")
    limits = _cost_limits(ctx)
    per_learner = int(cfg.steps)
    total = per_learner * len(limits)
    horizon = int(ctx.task.max_episode_steps)
    run = _Learners(ctx, method, limits)
    t_start = time.perf_counter()
    loop = ctx.train_loop(
        total,
        run.state_dict,
        run.load_state_dict,
        boundary=run.at_episode_boundary,
        boundary_wait=horizon * cfg.num_envs,  # then a due save is taken mid-episode
    )
    if loop.restore() == 0:
        run.spill.clear()
        for stale in ctx.out_dir.glob("policy-*-best.*"):  # a best iterate of an abandoned attempt
            stale.unlink()

    while run.index < len(limits):
        if run.trainer is None:
            run.start()
            run.evaluator.start_learner()
        trainer, collector = run.trainer, run.collector
        try:
            while collector.env_steps < per_learner:
                collector.training_step = int(trainer.training_step)
                vstep = collector.step(trainer.act)
                logs = trainer.observe(vstep)
                step = run.base_step + collector.env_steps
                for ep in vstep.finished:
                    run.curve.episode(step, run.index, ep)
                if logs:
                    ctx.last_train_metrics = {k: float(v) for k, v in logs.items()}
                    ctx.log_metrics(step, {"learner": run.index, **ctx.last_train_metrics})
                if run.evaluator.due(collector.env_steps):
                    run.evaluate()
                loop.latest = run.curve.latest
                # the learner's last step is saved by the learner switch below (or is the end)
                loop.step_done(step, may_save=collector.env_steps < per_learner)
        finally:
            collector.close()
        run.finish_learner()
        if run.index < len(limits):  # a clean boundary: the next learner starts from scratch
            loop.save(run.base_step)
    loop.finish(total)

    arrays = run.spill.load_all()
    if not arrays:
        raise CorlError(
            f"{ctx.name}: no episode finished in {per_learner} env steps; raise {ctx.name}.steps "
            f"(episodes last {horizon} steps x {cfg.num_envs} envs)"
        )
    meta = {
        "task": ctx.task.name,
        "source": f"corl-{method.name}",
        "collector": method.name,
        "seed": ctx.seed,
        "cost_limits": limits,
        "env_steps": total,
        "episodes": len(run.pool),
        "num_envs": cfg.num_envs,
    }
    write_episodes(arrays, run.pool, meta, ctx.out_dir / EPISODES_FILE)
    run.spill.clear()
    plot_learning_curve(
        _metric_rows(ctx.out_dir / METRICS),
        ctx.out_dir / CURVE_FILE,
        f"{method.name.upper()} on {ctx.task.name}",
        limits,
        show_violations=method.name == "mice",
    )
    best_policies = [
        json.loads((ctx.out_dir / f"policy-{limit:g}-best.json").read_text())
        for limit in limits
        if (ctx.out_dir / f"policy-{limit:g}-best.json").exists()
    ]

    rewards = np.array([e["reward"] for e in run.pool])
    costs = np.array([e["cost"] for e in run.pool])
    tail = max(1, min(10, len(run.pool) // 4 or 1))
    # final/*: the last `tail` training episodes (stochastic policy), as `corl run` prints them
    metrics = {
        "final/reward": float(rewards[-tail:].mean()),
        "final/cost": float(costs[-tail:].mean()),
        "final/episodes": float(tail),
        "episodes": float(len(run.pool)),
        "transitions": float(len(arrays["rewards"])),
        "env_steps": float(total),
        "cum_violations": float(run.curve.violations),
        "cum_violation_excess": float(run.curve.cum_violation),
        "wall_s": time.perf_counter() - t_start,
    }
    if run.evaluator.enabled:  # the last learner's: mean of its last 3 evaluations, and its best feasible one
        last = run.evaluator.last(len(limits) - 1, 3)
        metrics.update(
            {
                "eval/last_reward": float(np.mean([h["eval_reward"] for h in last])),
                "eval/last_cost": float(np.mean([h["eval_cost"] for h in last])),
                "eval/last_n": float(len(last)),
            }
        )
        best = [b for b in best_policies if b["cost_limit"] == limits[-1]]
        if best:
            metrics.update(
                {
                    "best/eval_reward": float(best[0]["eval_reward"]),
                    "best/eval_cost": float(best[0]["eval_cost"]),
                    "best/learner_step": float(best[0]["learner_step"]),
                }
            )
    outputs = {
        "episodes_file": EPISODES_FILE,
        "method": method.name,
        "cost_limits": limits,
        "episodes": len(run.pool),
        "transitions": int(len(arrays["rewards"])),
        "env_steps": total,
        "curve": CURVE_FILE,
        "resumed_from": ctx.resumed_from,
    }
    # the last learner's actor is the stage's policy; every limit's is listed for threshold sweeps
    policies = [_policy_spec(ctx, limit) for limit in limits]
    outputs.update(
        {
            "policy": policies[-1],
            "policies": policies,
            "cost_limit": limits[-1],
            "label": f"{method.name.upper()} (final, limit {limits[-1]:g})",
        }
    )
    if best_policies:  # the best feasible evaluated iterate of each learner (eval_every > 0)
        outputs["best_policies"] = best_policies
    return StageResult(metrics=metrics, outputs=outputs)


def _metric_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _policy_spec(ctx: StageContext, limit: float) -> dict[str, Any]:
    """The spec of a saved ``policy-<limit>.pt`` (rebuilt from the file name and the config)."""
    path = ctx.out_dir / f"policy-{limit:g}.json"
    if not path.exists():
        raise CorlError(f"{ctx.name}: {path} missing; remove {ctx.out_dir} and rerun")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------ stage kinds
@register_stage(
    "cvpo_train",
    config=CVPOTrainConfig,
    version="2",
    description="train CVPO online (one learner per cost limit), recording every episode",
)
def cvpo_train(ctx: StageContext) -> StageResult:
    return _train(ctx, METHODS["cvpo"])


@register_stage(
    "mice_train",
    config=MICETrainConfig,
    version="2",
    description="train MICE online (one learner per cost limit), recording every episode",
)
def mice_train(ctx: StageContext) -> StageResult:
    return _train(ctx, METHODS["mice"])
