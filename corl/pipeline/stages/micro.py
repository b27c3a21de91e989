"""MICRO stages: ``dynamics`` -> ``micro_policy`` (learners in ``corl.algos.micro``; this module is
only the glue: data, task defaults, checkpoints, artifacts).

* ``dynamics`` (inputs: dataset): the probabilistic ensemble of algorithms.md §2.2-2.3 with
  hold-out early stopping and elite selection. Its artifact is ``dynamics.pt`` (the
  :class:`~corl.algos.micro.dynamics.GaussianEnsembleDynamics` ``state_dict``: member weights,
  learnable log-variance bounds, input/target scalers and the elite indices) plus the
  config and dims in ``outputs``; :func:`load_dynamics` rebuilds it. The kind is named
  generically because nothing in it is MICRO-specific: any model-based pipeline (MOPO/MOBILE
  style, a model-based evaluator) can take ``inputs = {dynamics = "<stage>"}`` and reuse the
  cached model.
* ``micro_policy`` (inputs: dataset, dynamics): model rollouts mixed with real data, the
  robust (conservative) target and SAC (§2.4-2.6); writes the tanh-Gaussian actor for
  ``evaluate`` (builder ``tanh_gaussian``, deterministic = mean action, the §2.9 protocol).

Resume. ``dynamics`` trains until early stopping, so its length is not known in advance: it
drives the engine's one :class:`~corl.pipeline.context.TrainLoop` from ``DynamicsLearner.fit``'s
epoch hook (``loop.restore()``, then ``loop.step_done`` per epoch; ``--checkpoint-every N``
counts epochs for this stage; the time trigger works as everywhere), because ``fit`` is
resumable exactly at epoch granularity: given the generator in its initial state it redraws
the same hold-out split and bootstrap and skips finished epochs. A Ctrl-C is honoured at the
end of the running epoch. ``micro_policy`` uses ``ctx.train_loop``
with the trainer's state (learner, optimizers, scheduler, model buffer) and the batch
generator; the loop itself saves torch's global RNG, which drives policy sampling and model
noise, so a resume is exact.

Task-dependent defaults (TOML cannot write None, so None here means "the task's default"):
``dynamics.predict_cost`` is on for safety (DSRL) tasks and off for D4RL;
``policy.target_clamp_min`` is 0 for D4RL locomotion (non-negative returns, as released) and no
clamp for safety tasks (``-inf`` switches the clamp off explicitly); ``lr_schedule_epochs``
defaults to ``epochs`` (cosine over the whole run, as released); ``episode_length`` to the
task's horizon.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from corl.algos.micro import (
    DynamicsConfig,
    DynamicsLearner,
    GaussianEnsembleDynamics,
    MICROConfig,
    MICROTrainer,
    paper_config,
    termination_fn,
)
from corl.envs.factory import action_bounds
from corl.errors import CorlError
from corl.files import torch_save_atomic
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.store.artifacts import Artifact
from corl.store.policies import save_policy
from corl.tasks import TaskSpec

DYNAMICS_FILE = "dynamics.pt"


# ----------------------------------------------------------------------------- configs
@dataclass
class DynamicsStageConfig(DynamicsConfig):
    """:class:`corl.algos.micro.DynamicsConfig` (every field is a key of the stage, validated
    there), except:

    ``predict_cost``: None = the task's default (on for safety tasks, whose policies may need
    model costs; off for D4RL, which has none).
    """

    predict_cost: bool | None = None  # type: ignore[assignment]


@dataclass
class MICROPolicyStageConfig(MICROConfig):
    """:class:`corl.algos.micro.MICROConfig` (every field is a key of the stage, with the
    paper's shared settings of algorithms.md §2.8 and the learner's validation); the dynamics
    half comes from the input artifact. Total updates = ``epochs x steps_per_epoch``.

    Three fields mean "the task's / run's default" when None, so their stage defaults differ:
    ``target_clamp_min`` (None: 0 for D4RL, no clamp for safety tasks; ``-inf``: no clamp),
    ``lr_schedule_epochs`` (None: ``epochs``; 0: constant actor lr), ``episode_length``
    (None: the task's horizon). ``cost_limit`` None is MICRO as published (reward only); a
    number switches on the cost-aware variant (cost critic + Lagrange multiplier), which
    needs a dynamics model that predicts cost.
    """

    target_clamp_min: float | None = None  # None: task default; -inf: no clamp
    lr_schedule_epochs: int | None = None  # None: = epochs; 0: constant actor lr
    episode_length: int | None = None  # type: ignore[assignment]  # None: the task's horizon


# ----------------------------------------------------------------------------- helpers
def dynamics_config(cfg: DynamicsStageConfig, task: TaskSpec) -> DynamicsConfig:
    """The learner's config: the stage's values with the task defaults filled in."""
    values = dataclasses.asdict(cfg)
    if values["predict_cost"] is None:  # D4RL has no cost signal; every other task kind has one
        values["predict_cost"] = task.kind != "d4rl"
    values["hidden"] = tuple(values["hidden"])
    values["weight_decays"] = tuple(values["weight_decays"])
    return DynamicsConfig(**values)


def micro_config(cfg: MICROPolicyStageConfig, task: TaskSpec) -> MICROConfig:
    """The learner's ``MICROConfig``: stage values with the task defaults filled in."""
    values = dataclasses.asdict(cfg)
    if cfg.target_clamp_min is None:
        values["target_clamp_min"] = paper_config(task.name).target_clamp_min
    elif math.isinf(cfg.target_clamp_min) and cfg.target_clamp_min < 0:
        values["target_clamp_min"] = None  # a clamp at -inf is no clamp
    if cfg.lr_schedule_epochs is None:
        values["lr_schedule_epochs"] = cfg.epochs
    elif cfg.lr_schedule_epochs <= 0:
        values["lr_schedule_epochs"] = None
    if cfg.episode_length is None:
        values["episode_length"] = int(task.max_episode_steps)
    values["hidden"] = tuple(cfg.hidden)
    return MICROConfig(**values)


def load_dynamics(artifact: Artifact, device: torch.device | str = "cpu") -> GaussianEnsembleDynamics:
    """The fitted ensemble of a ``dynamics`` artifact (elites and scalers included), eval mode.

    For any stage that takes ``inputs = {dynamics = "<stage>"}``.
    """
    out = artifact.outputs
    values = dict(out["config"])
    values["hidden"] = tuple(values["hidden"])
    values["weight_decays"] = tuple(values["weight_decays"])
    model = GaussianEnsembleDynamics(int(out["obs_dim"]), int(out["act_dim"]), DynamicsConfig(**values))
    state = torch.load(artifact.dir / out["file"], map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


def _fit_generator(ctx: StageContext) -> torch.Generator:
    """The generator of ``DynamicsLearner.fit``, which draws CPU index tensors (split, bootstrap).

    Fresh on every start or resume, since ``fit`` resumes exactly only from the generator's
    initial state; seeded like ``ctx.generator()`` so CPU and CUDA runs draw the same split.
    """
    if ctx.device.type == "cpu":
        return ctx.generator()
    return torch.Generator().manual_seed(ctx.generator().initial_seed())


# ----------------------------------------------------------------------------- stage 1
@register_stage(
    "dynamics",
    config=DynamicsStageConfig,
    version="1",
    inputs=("dataset",),
    description="probabilistic dynamics ensemble (hold-out early stopping, elites)",
)
def dynamics_stage(ctx: StageContext) -> StageResult:
    cfg: DynamicsStageConfig = ctx.config
    data = ctx.load_dataset()
    dcfg = dynamics_config(cfg, ctx.task)
    if len(data) < 2:
        raise CorlError(f"dynamics: the dataset has {len(data)} transitions; a hold-out split needs at least 2")
    learner = DynamicsLearner(data.obs_dim, data.act_dim, dcfg, ctx.device)
    # the one training loop, driven by fit's epoch hook (fit stops early, so no fixed total
    # is iterated); a step is an epoch, each logged on its own line
    loop = ctx.train_loop(
        dcfg.max_epochs,
        lambda: {"learner": learner.state_dict()},
        lambda state: learner.load_state_dict(state["learner"]),
        log_every=1,
    )
    loop.restore()
    fit = learner.fit(data, _fit_generator(ctx), on_epoch_end=loop.step_done)
    ctx.steps_done = learner.epoch

    torch_save_atomic(
        {"state_dict": {k: v.detach().cpu() for k, v in learner.model.state_dict().items()}},
        ctx.out_dir / DYNAMICS_FILE,
    )
    elites = [int(e) for e in learner.model.elites.tolist()]
    holdout = learner.best_holdout.tolist()
    config = dataclasses.asdict(dcfg)
    return StageResult(
        metrics={
            "epochs": float(learner.epoch),
            "elite_holdout_mse": fit["dynamics/holdout_mse"],
            "updates": float(learner.total_steps),
        },
        outputs={
            "file": DYNAMICS_FILE,
            "config": config,
            "obs_dim": data.obs_dim,
            "act_dim": data.act_dim,
            "elites": elites,
            "holdout_mse_per_member": holdout,
            "epochs": learner.epoch,
            "predict_cost": dcfg.predict_cost,
        },
    )


# ----------------------------------------------------------------------------- stage 2
@register_stage(
    "micro_policy",
    config=MICROPolicyStageConfig,
    version="1",
    inputs=("dataset", "dynamics"),
    description="MICRO: SAC on real + model rollouts with the robust (conservative) target",
)
def micro_policy_stage(ctx: StageContext) -> StageResult:
    cfg: MICROPolicyStageConfig = ctx.config
    data = ctx.load_dataset()
    dyn_art = ctx.input("dynamics")
    if (int(dyn_art.outputs["obs_dim"]), int(dyn_art.outputs["act_dim"])) != (data.obs_dim, data.act_dim):
        raise CorlError(
            f"micro_policy: dynamics artifact {dyn_art.dir.name} is for (obs, act) dims "
            f"({dyn_art.outputs['obs_dim']}, {dyn_art.outputs['act_dim']}), the dataset has "
            f"({data.obs_dim}, {data.act_dim})"
        )
    dynamics = load_dynamics(dyn_art, ctx.device)
    mcfg = micro_config(cfg, ctx.task)
    if mcfg.cost_limit is not None and not dynamics.config.predict_cost:
        raise CorlError(
            "micro_policy: policy.cost_limit (the cost-aware variant) needs model costs; set dynamics.predict_cost=true"
        )
    termination = termination_fn(ctx.task.name, mcfg.termination_two_sided_bound)
    low, high = action_bounds(ctx.task)
    trainer = MICROTrainer(mcfg, data, dynamics, termination, low, high, ctx.device)
    gen = ctx.generator()

    def get_state() -> dict[str, Any]:
        return {"trainer": trainer.state_dict(), "generator": gen.get_state()}

    def set_state(state: dict[str, Any]) -> None:
        trainer.load_state_dict(state["trainer"])
        gen.set_state(state["generator"])

    # rollout stats arrive once per rollout_freq steps; the loop averages every key over all
    # logged steps, so carry the latest ones forward instead of diluting them.
    rollout_stats: dict[str, float] = {}
    loop = ctx.train_loop(cfg.total_steps, get_state, set_state)
    for _ in loop:
        metrics = trainer.step(gen)
        if "rollout/transitions" in metrics:
            rollout_stats = {k: v for k, v in metrics.items() if k.startswith("rollout/")}
        loop.log({**metrics, **rollout_stats})

    kwargs = {
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "hidden": list(cfg.hidden),
        "act_low": [float(x) for x in low],
        "act_high": [float(x) for x in high],
    }
    policy = save_policy(ctx.out_dir, trainer.learner.actor, "tanh_gaussian", kwargs)
    # The final SAC reward critic, for `corl eval --attack min_Q` (MICRO's attack judges the
    # perturbed action with it); read back by corl.eval.critics, weights only.
    torch_save_atomic(
        {"state_dict": {k: v.detach().cpu() for k, v in trainer.learner.critic.state_dict().items()}},
        ctx.out_dir / "critic.pt",
    )
    critic = {
        "file": "critic.pt",
        "key": "state_dict",
        "what": "reward Q ensemble (MICRO's final SAC critic)",
        "kwargs": {"num_q": cfg.num_critics, "hidden": list(cfg.hidden)},
    }
    limit = cfg.cost_limit if cfg.cost_limit is not None else ctx.task.cost_limit
    label = "MICRO" if cfg.robust_target else "MICRO (plain target)"
    if cfg.cost_limit is not None:
        label += f" cost-aware@{cfg.cost_limit:g}"
    return StageResult(
        metrics={"steps": float(loop.step), "model_buffer_rows": float(len(trainer.buffer))},
        outputs={
            "policy": policy,
            "critic": critic,
            "cost_limit": limit,
            "label": label,
            "steps": loop.step,
            "robust_target": cfg.robust_target,
            "target_clamp_min": mcfg.target_clamp_min,
        },
    )
