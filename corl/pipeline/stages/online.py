"""Online data collection as pipeline stages: ``cvpo_train``, ``mice_train`` and ``export``.

Why these exist: corl's offline methods need datasets, and DSRL built its datasets by training
online safe-RL learners under several cost limits and keeping every training episode. These
stages do the same with corl's own learners (``corl.algos.cvpo``, ``corl.algos.mice``): a
``*_train`` stage trains one learner per cost limit (sequentially) and records every episode
with per-episode metadata; ``export`` writes the pooled episodes as a DSRL-format HDF5 into the
dataset store (or as a Minari dataset), optionally through DSRL's reward/cost density filter.

Checkpoints and resume
----------------------
A train stage checkpoints through the engine's :class:`~corl.pipeline.checkpoint.Checkpointer`
(not ``ctx.train_loop``, whose step-granular saves could land in the middle of an episode and
whose metric truncation assumes the loop's own step numbers). A checkpoint holds the trainer's
``state_dict`` (networks, optimisers, replay buffer / open rollout, schedule counters, RNGs),
the metadata of the episodes recorded so far (finished ones only), the bookkeeping of the
learning curve, and how many recorded rows are committed; the rows themselves are appended to
hidden ``.episodes-*.npz`` files at each save (see :class:`_Spill`), so a save costs the new
rows, not the whole dataset.
Steps are *environment steps* summed over envs and over the learners of a multi-limit run.

Saves happen at a vector step where every env has just finished its episode (always the case
with fixed-length episodes and synchronous envs), so an uninterrupted and a resumed run see the
same episodes. **The simulators' state cannot be checkpointed**: when a save had to be taken
mid-episode (Ctrl-C, or a due save that found no episode boundary within one episode length),
the resumed run *restarts the current episodes* from fresh resets: the unfinished episodes are
not recorded (their env steps still count towards the budget), CVPO drops the < ``n_step``
rows of its open n-step windows, and MICE closes its open trajectory slices as time-outs
(bootstrapping ``V`` at the last observation, as at an epoch boundary). A resumed collector
resets its envs with ``seed + env_steps`` so the restarted episodes do not replay episode 0's
initial states; the seed each episode's env was seeded from is in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from corl.algos.base import OnlineAgent
from corl.algos.cvpo.config import CVPOConfig
from corl.algos.mice.config import MICEConfig
from corl.errors import ConfigError, CorlError
from corl.files import atomic_write, atomic_write_via
from corl.pipeline.checkpoint import restore_rng_states
from corl.pipeline.context import StageContext, StageInterrupted, StageResult, truncate_metrics
from corl.pipeline.registry import register_stage
from corl.store.artifacts import METRICS

EPISODES_FILE = "episodes.hdf5"  # the train stage's artifact: every recorded episode (DSRL layout)
CURVE_FILE = "learning_curve.png"
EPISODE_GROUP = "episodes"  # per-episode metadata arrays inside the HDF5 files (dsrl ignores them)
_TRANSITION_KEYS = ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")


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


@dataclass
class ExportConfig:
    """Write the train stage's episodes as a dataset.

    ``format``: "dsrl" (an HDF5 file in the dataset store, ``$CORL_DATASETS`` or ./datasets) or
    "minari" (a dataset in the local Minari store). ``name``: file stem / Minari id; "" =
    ``<task>-<method>-<key8>`` (key8: the export artifact's key, so different filters or data
    never overwrite each other). ``density_filter``: DSRL's reward/cost grid filter with its
    per-task settings at ``density`` (seeded by ``--seed``).
    """

    format: str = "dsrl"
    name: str = ""
    density_filter: bool = False
    density: float = 0.5
    overwrite: bool = True


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


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if p and len(p["rewards"])]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in _TRANSITION_KEYS}


class _Spill:
    """Recorded episodes on disk, appended at every checkpoint (hidden ``.episodes-*.npz`` files).

    Why: a paper-scale run records millions of transitions (MICE: 10M x 60-dim observations);
    saving them inside every checkpoint would rewrite gigabytes each time. Each save appends
    only the rows recorded since the previous one, and the checkpoint records how many rows
    are committed; files past that count (written just before a kill) are discarded on resume.
    Hidden names keep them out of the artifact's hashed files; they are deleted when done.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rows = 0

    def _files(self) -> list[tuple[int, int, Path]]:
        out = []
        for path in self.directory.glob(".episodes-*.npz"):
            _, offset, rows = path.stem.split("-")
            out.append((int(offset), int(rows), path))
        return sorted(out)

    def restore(self, committed: int) -> None:
        """Keep the files a checkpoint committed (``committed`` rows), delete the rest."""
        self.rows = 0
        for offset, rows, path in self._files():
            if offset == self.rows and offset + rows <= committed:
                self.rows += rows
            else:
                path.unlink(missing_ok=True)
        if self.rows != committed:
            raise CorlError(
                f"{self.directory}: recorded episodes missing ({self.rows} of {committed} rows); "
                "delete checkpoint.pt to restart this stage"
            )

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["rewards"]) if arrays else 0
        if n == 0:
            return
        final = self.directory / f".episodes-{self.rows:012d}-{n}.npz"
        atomic_write_via(final, lambda buffer: np.savez(buffer, **arrays))
        self.rows += n

    def load_all(self) -> dict[str, np.ndarray]:
        parts = []
        for _, _, path in self._files():
            with np.load(path) as data:
                parts.append({k: data[k] for k in _TRANSITION_KEYS})
        return _concat(parts)

    def clear(self) -> None:
        for _, _, path in self._files():
            path.unlink(missing_ok=True)


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


def _train(ctx: StageContext, method: _Method) -> StageResult:
    """Train one learner per cost limit, recording every episode; checkpointed and resumable."""
    from corl.algos.online.collector import EpisodeInfo, OnlineCollector
    from corl.pipeline.stages.online_eval import PeriodicEvaluator

    cfg = ctx.config
    if cfg.steps <= 0 or cfg.num_envs <= 0:
        raise ConfigError(f"{ctx.name}: steps and num_envs must be positive")
    limits = _cost_limits(ctx)
    per_learner = int(cfg.steps)
    total = per_learner * len(limits)
    horizon = int(ctx.task.max_episode_steps)
    metrics_path = ctx.out_dir / METRICS
    curve = _Curve(ctx)
    evaluator = PeriodicEvaluator(ctx.task, int(cfg.eval_every), int(cfg.eval_episodes), ctx.seed, ctx.device)
    ckpt = ctx.checkpointer
    t_start = time.perf_counter()

    spill = _Spill(ctx.out_dir)  # every recorded transition, all learners, in finish order
    pool_eps: list[dict[str, Any]] = []  # finished learners' episode metadata
    learner_index = 0
    resume: dict[str, Any] | None = None
    payload = ctx.load_checkpoint()
    if payload is not None and 0 < int(payload["step"]) <= total:
        resume = payload["state"]
        learner_index = int(resume["learner"])
        spill.restore(int(resume["spilled_rows"]))
        pool_eps = list(resume["pool_episodes"])
        curve.load(resume["curve"])
        evaluator.load(resume.get("eval"))
        ctx.resumed_from = int(payload["step"])
        truncate_metrics(metrics_path, ctx.resumed_from)
    else:
        metrics_path.unlink(missing_ok=True)
        spill.clear()
        for stale in ctx.out_dir.glob("policy-*-best.*"):  # a best iterate of an abandoned attempt
            stale.unlink()
    ctx.callbacks.stage_started(ctx.name, ctx.kind, total, ctx.resumed_from)

    last_progress = 0.0
    while learner_index < len(limits):
        limit, base_step = limits[learner_index], learner_index * per_learner
        if resume is not None and not resume["trainer"]:  # saved at a learner switch: start it fresh,
            restore_rng_states(payload["rng"])  # from the RNG state an uninterrupted run had here
            resume = None
        trainer = method.build(ctx, limit, learner_index)
        if resume is None:
            evaluator.start_learner()
        seed = ctx.seed + 1000 * learner_index
        collector = OnlineCollector(
            ctx.task,
            cfg.num_envs,
            seed,
            record=True,
            fixed_horizon=method.fixed_horizon,
            cost_limit=limit,
            device=ctx.device,
            workers=0,
        )  # 0: from the free cores
        if resume is not None:
            trainer.load_state_dict(resume["trainer"])
            collector.episodes = [
                EpisodeInfo(**{k: v for k, v in e.items() if k in EpisodeInfo.__dataclass_fields__})
                for e in resume["current_episodes"]
            ]
            collector.load_state_dict(resume)  # env_steps, env_episode
            open_envs = resume["open_envs"].numpy().astype(bool)
            if open_envs.any():
                trainer.cut_episodes(open_envs, resume["last_obs"].numpy())
            collector.seed = seed + collector.env_steps  # fresh resets, not episode 0's again
            restore_rng_states(payload["rng"])
            resume = None

        def get_state() -> dict[str, Any]:
            """Spill the rows recorded since the last save, then the (small) state to checkpoint."""
            spill.append(collector.take_rows())  # those rows are on disk now
            open_envs = collector.open_episodes()
            last_obs = collector.obs if collector.obs is not None else np.zeros((cfg.num_envs, collector.obs_dim))
            return {
                "learner": learner_index,
                "trainer": trainer.state_dict(),
                "spilled_rows": spill.rows,
                "pool_episodes": pool_eps,
                "current_episodes": [_plain(e.as_dict()) for e in collector.episodes],
                **collector.state_dict(),  # env_steps, env_episode
                "open_envs": torch.from_numpy(open_envs.copy()),
                "last_obs": torch.as_tensor(np.asarray(last_obs, dtype=np.float32)),
                "curve": curve.state(),
                "eval": evaluator.state(),
            }

        due_since: int | None = None
        try:
            while collector.env_steps < per_learner:
                collector.training_step = int(trainer.training_step)
                vstep = collector.step(trainer.act)
                logs = trainer.observe(vstep)
                step = base_step + collector.env_steps
                for ep in vstep.finished:
                    curve.episode(step, learner_index, ep)
                if logs:
                    ctx.last_train_metrics = {k: float(v) for k, v in logs.items()}
                    ctx.log_metrics(step, {"learner": learner_index, **ctx.last_train_metrics})
                if evaluator.due(collector.env_steps):
                    ctx.log_metrics(step, evaluator.evaluate(trainer, learner_index, collector.env_steps, step, limit))
                now = time.monotonic()
                if now - last_progress >= 0.2:
                    last_progress = now
                    ctx.callbacks.stage_progress(ctx.name, step, total, curve.latest)
                if ctx.interrupt.requested:  # save now, even mid-episode (documented above)
                    ckpt.save(step, get_state())
                    raise StageInterrupted(ctx.name, step)
                if collector.env_steps < per_learner and ckpt.due(step):
                    clean = not collector.open_episodes().any()
                    due_since = step if due_since is None else due_since
                    if clean or step - due_since >= horizon * cfg.num_envs:
                        ckpt.save(step, get_state())
                        due_since = None
        finally:
            collector.close()
        spill.append(collector.buffer.view())
        _save_trained_policy(ctx, trainer, limit)
        if evaluator.enabled:
            last = evaluator.last(learner_index, 1)
            if not last or last[0]["learner_step"] != collector.env_steps:  # the final policy's point
                step = base_step + collector.env_steps
                ctx.log_metrics(step, evaluator.evaluate(trainer, learner_index, collector.env_steps, step, limit))
            if evaluator.best is not None:
                best = evaluator.best
                _save_trained_policy(
                    ctx,
                    trainer,
                    limit,
                    best["snapshot"],
                    "-best",
                    {"learner_step": best["step"], "eval_reward": best["reward"], "eval_cost": best["cost"]},
                )
        pool_eps.extend(_plain({**e.as_dict(), "learner": learner_index}) for e in collector.episodes)
        learner_index += 1
        if learner_index < len(limits):  # a clean boundary: the next learner starts from scratch
            ckpt.save(
                learner_index * per_learner,
                {
                    "learner": learner_index,
                    "trainer": {},
                    "spilled_rows": spill.rows,
                    "pool_episodes": pool_eps,
                    "current_episodes": [],
                    "env_steps": 0,
                    "env_episode": [0] * cfg.num_envs,
                    "open_envs": torch.zeros(cfg.num_envs, dtype=torch.bool),
                    "last_obs": torch.zeros(cfg.num_envs, 1),
                    "curve": curve.state(),
                    "eval": evaluator.state(),
                },
            )
    ctx.callbacks.stage_progress(ctx.name, total, total, curve.latest)
    ctx.steps_done = total

    arrays = spill.load_all()
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
        "episodes": len(pool_eps),
        "num_envs": cfg.num_envs,
    }
    _write_hdf5(arrays, pool_eps, meta, ctx.out_dir / EPISODES_FILE)
    spill.clear()
    _plot_curve(
        metrics_path,
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

    rewards = np.array([e["reward"] for e in pool_eps])
    costs = np.array([e["cost"] for e in pool_eps])
    tail = max(1, min(10, len(pool_eps) // 4 or 1))
    # final/*: the last `tail` training episodes (stochastic policy), as `corl run` prints them
    metrics = {
        "final/reward": float(rewards[-tail:].mean()),
        "final/cost": float(costs[-tail:].mean()),
        "final/episodes": float(tail),
        "episodes": float(len(pool_eps)),
        "transitions": float(len(arrays["rewards"])),
        "env_steps": float(total),
        "cum_violations": float(curve.violations),
        "cum_violation_excess": float(curve.cum_violation),
        "wall_s": time.perf_counter() - t_start,
    }
    if evaluator.enabled:  # the last learner's: mean of its last 3 evaluations, and its best feasible one
        last = evaluator.last(len(limits) - 1, 3)
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
        "episodes": len(pool_eps),
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


def _policy_spec(ctx: StageContext, limit: float) -> dict[str, Any]:
    """The spec of a saved ``policy-<limit>.pt`` (rebuilt from the file name and the config)."""
    path = ctx.out_dir / f"policy-{limit:g}.json"
    if not path.exists():
        raise CorlError(f"{ctx.name}: {path} missing; remove {ctx.out_dir} and rerun")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------ files
def _episode_columns(episodes: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-episode metadata as arrays (HDF5 attributes cap at 64 KiB; thousands of episodes do not fit)."""

    def col(key: str, dtype: Any, default: Any = 0) -> np.ndarray:
        return np.asarray([default if e.get(key) is None else e.get(key, default) for e in episodes], dtype=dtype)

    return {
        "cost_limit": col("cost_limit", np.float64, np.nan),
        "training_step": col("training_step", np.int64),
        "env_step": col("env_step", np.int64),
        "seed": col("seed", np.int64),
        "learner": col("learner", np.int64),
        "env_index": col("env_index", np.int64),
        "reward": col("reward", np.float64),
        "cost": col("cost", np.float64),
        "length": col("length", np.int64),
        "terminated": col("terminated", bool),
    }


def _write_hdf5(
    arrays: dict[str, np.ndarray], episodes: list[dict[str, Any]], metadata: dict[str, Any], path: Path
) -> Path:
    """A DSRL-format file plus an ``episodes/`` group of per-episode metadata, written atomically."""
    import h5py

    from corl.data.dataset import TransitionDataset
    from corl.data.formats.dsrl import write_dsrl

    def episode_group(handle: "h5py.File") -> None:
        if episodes:
            group = handle.create_group(EPISODE_GROUP)
            for key, value in _episode_columns(episodes).items():
                group.create_dataset(key, data=value)

    return write_dsrl(TransitionDataset.from_numpy(arrays, metadata), path, extra=episode_group)


def _read_episodes(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    import h5py

    from corl.data.formats.dsrl import read_hdf5_arrays

    arrays, meta = read_hdf5_arrays(path, _TRANSITION_KEYS)
    with h5py.File(path, "r") as handle:
        cols = {k: v[()] for k, v in handle[EPISODE_GROUP].items()} if EPISODE_GROUP in handle else {}
    return arrays, cols, meta


def _plot_curve(metrics_path: Path, out: Path, title: str, limits: list[float], show_violations: bool) -> None:
    """Episode reward and cost against env steps (moving average of 10), the periodic evaluations
    of the deterministic policy when there are any, and violations for MICE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = (
        [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        if metrics_path.exists()
        else []
    )
    rows = [r for r in every if "episode_reward" in r]
    evals = [r for r in every if "eval_reward" in r]
    steps = np.array([r["step"] for r in rows], dtype=float)
    panels = [("episode_reward", "episode reward"), ("episode_cost", "episode cost")]
    if show_violations:
        panels.append(("cum_violations", "cumulative violations"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    for ax, (key, label) in zip(axes, panels):
        values = np.array([r[key] for r in rows], dtype=float)
        ax.plot(steps, values, ".", alpha=0.3, markersize=3)
        if len(values) and key != "cum_violations":
            k = min(10, len(values))
            ax.plot(steps[k - 1 :], np.convolve(values, np.ones(k) / k, mode="valid"), "-")
        else:
            ax.plot(steps, values, "-")
        eval_key = {"episode_reward": "eval_reward", "episode_cost": "eval_cost"}.get(key)
        if evals and eval_key:
            ax.plot(
                [r["step"] for r in evals],
                [r[eval_key] for r in evals],
                "o-",
                color="k",
                markersize=3,
                linewidth=0.8,
                label="deterministic evaluation",
            )
            ax.legend(fontsize=7)
        if key == "episode_cost":
            for limit in sorted(set(limits)):
                ax.axhline(limit, color="r", linestyle="--", linewidth=0.8)
        ax.set_xlabel("env steps")
        ax.set_title(label)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=80, metadata={"Software": None})
    plt.close(fig)


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


def _offline_name(task: Any) -> str:
    """The DSRL task recorded from this online task (its density-filter grid), else the task itself."""
    from corl.tasks import get_task, task_names

    for name in task_names():
        try:
            if get_task(name).online_task == task.name:
                return name
        except Exception:
            continue
    return task.name


def _minari_id(name: str) -> str:
    env = re.sub(r"\W", "", name.split("-v")[0])
    return env


def _export_destination(fctx: Any) -> dict[str, Any]:
    """Where the file goes joins the export's key: the same episodes exported with another
    ``CORL_DATASETS`` (or Minari store) must write there, not be served from the cache."""
    from corl.data.store import store_dir

    if fctx.config.format == "minari":
        where = os.environ.get("MINARI_DATASETS_PATH") or str(Path("~/.minari/datasets").expanduser())
    else:
        where = str(store_dir().resolve())
    return {"key": {"destination": where}}


@register_stage(
    "export",
    config=ExportConfig,
    version="1",
    inputs=("episodes",),
    fingerprint=_export_destination,
    description="write recorded episodes as a DSRL HDF5 in the dataset store (or a Minari dataset)",
)
def export_stage(ctx: StageContext) -> StageResult:
    """The dataset file lives in the store, not the artifact, so ``corl datasets``, ``--dataset``
    and other tools find it; the artifact keeps its path and sha256 (and the filter report)."""
    from corl.data.dataset import TransitionDataset
    from corl.data.hashing import file_sha256
    from corl.data.store import store_dir

    cfg: ExportConfig = ctx.config
    if cfg.format not in ("dsrl", "minari"):
        raise ConfigError(f"{ctx.name}.format: expected 'dsrl' or 'minari', got {cfg.format!r}")
    src = ctx.input("episodes")
    if "episodes_file" not in src.outputs:
        raise CorlError(f"{ctx.name}: input {src.kind!r} recorded no episodes (expected cvpo_train or mice_train)")
    ctx.progress(0, 2)
    arrays, cols, meta = _read_episodes(src.dir / src.outputs["episodes_file"])
    dataset = TransitionDataset.from_numpy(arrays, meta)
    report: dict[str, Any] = {}
    if cfg.density_filter:
        from corl.data.filtering import density_config_for, density_filter

        dataset, report = density_filter(dataset, density_config_for(_offline_name(ctx.task), cfg.density, ctx.seed))
        keep = _kept_episodes(cols, dataset)
        ok = len(keep) == dataset.num_episodes and (len(keep) == 0 or keep[-1] < len(cols.get("reward", [])))
        cols = {k: v[keep] for k, v in cols.items()} if ok else {}
        dataset.metadata.pop("selected_episodes", None)
        report = {k: v for k, v in report.items() if k != "config"}
    if len(dataset) == 0:
        raise CorlError(f"{ctx.name}: no episode left to export (density filter dropped all); use density_filter=false")
    method = src.outputs.get("method", "online")
    key8 = ctx.out_dir.name.rsplit("-", 1)[-1][:8]
    dataset.metadata.update({"train_artifact": src.dir.name, "exported_by": "corl export"})
    ctx.progress(1, 2)
    outputs: dict[str, Any] = {
        "format": cfg.format,
        "transitions": len(dataset),
        "episodes": dataset.num_episodes,
        "cost_limits": src.outputs.get("cost_limits"),
        "method": method,
    }
    if cfg.format == "dsrl":
        name = cfg.name or f"{ctx.task.name}-{method}-{key8}"
        path = (store_dir() / f"{name}.hdf5").resolve()
        if path.exists() and not cfg.overwrite:
            raise CorlError(f"{path} exists; set {ctx.name}.overwrite=true or another {ctx.name}.name")
        episodes = [dict(zip(cols, vals)) for vals in zip(*[v.tolist() for v in cols.values()])] if cols else []
        _write_hdf5(dataset.to_numpy(), episodes, {k: v for k, v in dataset.metadata.items()}, path)
        outputs.update(path=str(path), sha256=file_sha256(path))
    else:
        from corl.data.formats.minari import export_minari

        dataset_id = cfg.name or f"{_minari_id(ctx.task.name)}-{method}-{key8}-v0"
        location = export_minari(
            dataset, dataset_id, ctx.task, overwrite=cfg.overwrite, algorithm_name=f"corl-{method}"
        )
        outputs["episode_metadata"] = _annotate_minari(Path(location), cols)
        outputs.update(dataset_id=dataset_id, minari_path=location)
    if report:
        outputs["density_filter"] = report
    ctx.progress(2, 2)
    returns = dataset.episode_returns()
    metrics = {
        "episodes": float(dataset.num_episodes),
        "transitions": float(len(dataset)),
        "reward_return_mean": float(returns["reward"].mean()),
        "cost_return_mean": float(returns["cost"].mean()),
    }
    return StageResult(metrics=metrics, outputs=outputs)


def _annotate_minari(location: Path, cols: dict[str, np.ndarray]) -> bool:
    """Per-episode metadata as attributes ``corl_<name>`` of each Minari episode group.

    Only when Minari episodes and corl episodes correspond one to one (the exporter splits an
    episode whose next observations are not contiguous; the collector never produces those).
    """
    import h5py

    files = sorted(location.glob("data/*.hdf5"))
    if not cols or not files:
        return False
    with h5py.File(files[0], "a") as handle:
        groups = sorted((k for k in handle if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        if len(groups) != len(cols["reward"]):
            return False
        for i, name in enumerate(groups):
            for key, values in cols.items():
                handle[name].attrs[f"corl_{key}"] = values[i]
    return True


def _kept_episodes(cols: dict[str, np.ndarray], after: Any) -> np.ndarray:
    """Which episodes the density filter kept, by matching (reward, cost, length) in order.

    ``density_filter`` keeps episodes in their original order, so one ordered pass matches them.
    """
    if not cols:
        return np.zeros(0, dtype=int)
    ret = after.episode_returns()
    keep, i = [], 0
    for r, c, n in zip(ret["reward"], ret["cost"], ret["length"]):
        while i < len(cols["reward"]) and not (
            cols["length"][i] == n
            and abs(cols["reward"][i] - r) < 1e-3 * (1 + abs(r))
            and abs(cols["cost"][i] - c) < 1e-3 * (1 + abs(c))
        ):
            i += 1
        keep.append(i)
        i += 1
    return np.asarray(keep, dtype=int)


# ------------------------------------------------------------------------------ lookup for the dataset stage
def find_export(task: Any, source: str) -> Path:
    """The newest exported dataset of ``source`` ("cvpo", "mice" or a file stem) for ``task``.

    A convenience for scripts and tests (``--dataset "$(...)"``): an offline task
    (``OfflineCarCircle-v0``) finds the exports of its online task (``SafetyCarCircle-v0``),
    which is what ``corl run cvpo --task SafetyCarCircle-v0`` writes; the newest file wins.
    The ``dataset`` stage's ``source`` option does not use it: it takes the file from the
    export artifact of the exact collection it ran or reused, so two collections are never
    confused (see ``corl/pipeline/stages/dataset.py``).
    """
    from corl.data.store import store_dir
    from corl.errors import DatasetError

    root = store_dir()
    explicit = root / f"{source}.hdf5"
    if explicit.is_file():
        return explicit
    names = {task.name, getattr(task, "online_task", None) or task.name}
    found = sorted({p for n in names for p in root.glob(f"{n}-{source}-*.hdf5")}, key=lambda p: p.stat().st_mtime)
    if not found:
        online = getattr(task, "online_task", None) or task.name
        raise DatasetError(
            f"no {source} export for {task.name} in {root}; create one with: corl run {source} --task {online}"
        )
    return found[-1]
