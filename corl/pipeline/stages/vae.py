"""The ``vae`` stage: the behaviour VAE shared by BCQ-Lag, BEAR-Lag and CPQ (one cached
artifact, so the three methods with the same VAE settings and seed fit it once), and the
helpers their stage modules share (task defaults, loading the VAE, the common train loop).
"""

from __future__ import annotations

from typing import Callable

import torch

from corl.algos.baselines.common import BatchPrep, OfflineSafeConfig, q_threshold
from corl.algos.baselines.vae import VAEConfig, VAELearner, build_vae
from corl.errors import CorlError
from corl.nn.vae import VAE
from corl.pipeline.context import StageContext, StageResult
from corl.pipeline.registry import register_stage
from corl.pipeline.stages.bc import action_bounds
from corl.store.policies import save_policy


@register_stage(
    "vae",
    config=VAEConfig,
    version="1",
    inputs=("dataset",),
    description="behaviour VAE (BCQ/BEAR/CPQ): MSE + beta KL on normalised actions",
)
def vae_stage(ctx: StageContext) -> StageResult:
    cfg: VAEConfig = ctx.config
    data = ctx.load_dataset()
    low, high = action_bounds(ctx.task)
    prep = BatchPrep(OfflineSafeConfig(), low, high, data.act_dim, ctx.device)
    learner = VAELearner(cfg, data.obs_dim, data.act_dim, ctx.device)

    def step(batch: dict) -> dict[str, float]:
        b = prep(batch)
        return learner.update(b["obs"], b["act"])

    steps = train(ctx, learner, cfg.steps, lambda g: data.sample(cfg.batch_size, g), step)
    torch.save({k: v.detach().cpu() for k, v in learner.vae.state_dict().items()}, ctx.out_dir / "vae.pt")
    return StageResult(
        metrics={"steps": float(steps)},
        outputs={
            "file": "vae.pt",
            "hidden": list(cfg.hidden),
            "latent_dim": learner.vae.latent_dim,
            "obs_dim": data.obs_dim,
            "act_dim": data.act_dim,
        },
    )


# ----------------------------------------------------------------------------- helpers
def load_vae(ctx: StageContext, role: str = "vae") -> VAE:
    art = ctx.input(role)
    out = art.outputs
    vae = build_vae(out["obs_dim"], out["act_dim"], out["hidden"], out["latent_dim"])
    vae.load_state_dict(torch.load(art.dir / out["file"], map_location="cpu", weights_only=True))
    return vae.to(ctx.device)


def task_threshold(ctx: StageContext, cfg: OfflineSafeConfig) -> tuple[float, int, float]:
    """(episodic cost limit, episode length, OSRL's Q threshold) with the task's defaults."""
    limit = cfg.cost_limit if cfg.cost_limit is not None else ctx.task.cost_limit
    if limit is None:
        raise CorlError(f"task {ctx.task.name} has no cost limit; set <stage>.cost_limit")
    horizon = cfg.episode_len if cfg.episode_len is not None else int(ctx.task.max_episode_steps)
    return float(limit), int(horizon), q_threshold(float(limit), cfg.gamma, int(horizon))


def train(ctx: StageContext, learner, steps: int, sample: Callable, step: Callable | None = None) -> int:
    """The resumable loop: learner state and the batch generator are checkpointed together."""
    gen = ctx.generator()
    step = step or learner.update

    def get_state() -> dict:
        return {"learner": learner.state_dict(), "generator": gen.get_state()}

    def set_state(state: dict) -> None:
        learner.load_state_dict(state["learner"])
        gen.set_state(state["generator"].cpu())

    loop = ctx.train_loop(steps, get_state, set_state)
    for _ in loop:
        loop.log(step(sample(gen)))
    return loop.step


def vae_policy_stage(ctx: StageContext, learner_cls, policy_attr: str, builder: str, label: str) -> StageResult:
    """The whole body of the stages that train on the pre-fitted VAE (``bcql``, ``bearl``, ``cpq``):
    one learner ``learner_cls(cfg, obs_dim, act_dim, vae, qc_thres, low, high, device)`` trained
    for ``cfg.steps``, its ``policy_attr`` network saved for evaluation with ``builder``."""
    cfg = ctx.config
    data = ctx.load_dataset()
    limit, horizon, thres = task_threshold(ctx, cfg)
    low, high = action_bounds(ctx.task)
    learner = learner_cls(cfg, data.obs_dim, data.act_dim, load_vae(ctx), thres, low, high, ctx.device)
    steps = train(ctx, learner, cfg.steps, lambda g: data.sample(cfg.batch_size, g))
    policy = save_policy(ctx.out_dir, getattr(learner, policy_attr), builder, learner.policy_kwargs)
    return StageResult(
        metrics={"steps": float(steps), "qc_thres": thres},
        outputs={
            "policy": policy,
            "cost_limit": limit,
            "episode_len": horizon,
            "qc_thres": thres,
            "label": label,
            "steps": steps,
        },
    )
