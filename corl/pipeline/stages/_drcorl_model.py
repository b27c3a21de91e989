"""Glue of DRCORL's model-based extension (a helper of ``drcorl.py``, not a stage kind).

The ``drcorl_policy`` stage may take a ``dynamics`` input (the generic ``dynamics`` stage of
``micro.py``: MICRO's ensemble, shared and cached). With it, this module gives the stage

* a :class:`~corl.algos.drcorl.model_estimate.PolicyModelEstimator` (the switch's estimator
  for ``switch_estimator = "model"``, and the labeller of iterates);
* :class:`IterateSelection`: every ``select_every`` safe iterations and at the end it labels
  the current iterate with the model estimate, writes its weights to
  ``iterates/iter-<k>.pt`` (the ``deterministic`` policy format, so ``corl eval`` can roll it
  out), and keeps the best by the offline estimate (:class:`~corl.algos.drcorl.selection.OfflineSelector`),
  saved as ``policy-best-offline.pt`` beside the final ``policy.pt``. All labels go to
  ``iterates.json``. The selection never replaces the final policy: its scores are labelled
  ``best_offline/...``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import torch

from corl.algos.drcorl.model_estimate import ModelEstimate, ModelEstimateConfig, PolicyModelEstimator
from corl.algos.drcorl.policy import initial_observations, normalised_cost
from corl.algos.drcorl.selection import IterateLabel, OfflineSelector
from corl.errors import CorlError
from corl.pipeline.context import StageContext
from corl.store.policies import save_policy

ITERATES_DIR = "iterates"
ITERATES_FILE = "iterates.json"
BEST_OFFLINE_FILE = "policy-best-offline.pt"


def model_estimate_config(cfg: Any) -> ModelEstimateConfig:
    """The stage's ``model_*`` keys as the estimator's config (ValueError when invalid: the spec
    loader reports it as a one-line error naming the stage)."""
    return ModelEstimateConfig(
        horizon=cfg.model_horizon,
        start_states=cfg.model_start_states,
        num_starts=cfg.model_num_starts,
        pessimism=cfg.model_pessimism,
        sample_noise=cfg.model_sample_noise,
        clip_obs=cfg.model_clip_obs,
    )


def build_estimator(
    ctx: StageContext, cfg: Any, data, critics, gamma: float, episode_len: int
) -> PolicyModelEstimator | None:
    """The model estimator, or None when the stage has no ``dynamics`` input."""
    mcfg = model_estimate_config(cfg)
    art = ctx.inputs.get("dynamics")
    if art is None:
        if cfg.switch_estimator == "model":
            raise CorlError(
                f"stage {ctx.name!r}: switch_estimator = 'model' needs a dynamics input "
                '(inputs = ["dataset", "behavior", "critics", "dynamics"])'
            )
        return None
    from corl.algos.micro import termination_fn
    from corl.pipeline.stages.micro import load_dynamics

    out = art.outputs
    if (int(out["obs_dim"]), int(out["act_dim"])) != (data.obs_dim, data.act_dim):
        raise CorlError(
            f"stage {ctx.name!r}: dynamics artifact {art.dir.name} is for (obs, act) dims "
            f"({out['obs_dim']}, {out['act_dim']}), the dataset has ({data.obs_dim}, {data.act_dim})"
        )
    if not out.get("predict_cost"):
        raise CorlError(f"stage {ctx.name!r}: the model estimate needs model costs; set dynamics.predict_cost=true")
    with torch.random.fork_rng(devices=[]):  # building the ensemble draws its init from the global RNG:
        dynamics = load_dynamics(art, ctx.device)  # keep it out of the policy's (same policy with or without)
    return PolicyModelEstimator(
        dynamics,
        mcfg,
        gamma,
        episode_len,
        data.observations,
        initial_observations(data),
        critics,
        seed=ctx.seed,
        termination=termination_fn(ctx.task.name),
    )


class IterateSelection:
    """Labels, snapshots and the best-offline choice of one policy stage run (resumable)."""

    def __init__(
        self,
        ctx: StageContext,
        estimator: PolicyModelEstimator,
        select_every: int,
        kappa: float,
        cost_limit: float,
        dsrl_rule: bool,
        policy_kwargs: dict[str, Any],
    ) -> None:
        self.ctx, self.estimator, self.select_every = ctx, estimator, int(select_every)
        self.kappa, self.dsrl_rule, self.policy_kwargs = float(kappa), dsrl_rule, policy_kwargs
        self.selector = OfflineSelector(cost_limit)
        self.last: ModelEstimate | None = None

    def due(self, learner) -> bool:
        k = learner.step - learner.pretrain_steps
        if learner.step >= learner.total_steps:
            return True
        return k >= 1 and self.select_every > 0 and k % self.select_every == 0

    def label(self, learner) -> dict[str, float]:
        """Label the learner's current iterate (safe-phase iteration ``k``); returns metrics."""
        k = max(0, learner.step - learner.pretrain_steps)
        est = self.estimator.estimate(learner.policy)
        self.last = est
        (self.ctx.out_dir / ITERATES_DIR).mkdir(exist_ok=True)
        file = f"{ITERATES_DIR}/iter-{k:06d}.pt"
        save_policy(self.ctx.out_dir, learner.policy, "deterministic", self.policy_kwargs, file=file)
        norm = normalised_cost(est.cost, self.kappa, self.dsrl_rule)
        self.selector.add(IterateLabel(k, est.cost, est.reward, norm, file))
        return {"select/model_cost": est.cost, "select/model_reward": est.reward, "select/model_normalized_cost": norm}

    def finish(self, learner, normalize_reward) -> tuple[dict[str, float], dict[str, Any]]:
        """Label the final iterate (if not yet), save the best one; metrics and outputs."""
        k = max(0, learner.step - learner.pretrain_steps)
        if not any(x.iteration == k for x in self.selector.labels):
            self.label(learner)
        final = next(x for x in self.selector.labels if x.iteration == k)
        best = self.selector.best()
        assert best is not None
        payload = torch.load(self.ctx.out_dir / best.file, map_location="cpu", weights_only=True)
        tmp = self.ctx.out_dir / f".{BEST_OFFLINE_FILE}.tmp"
        torch.save(payload, tmp)
        os.replace(tmp, self.ctx.out_dir / BEST_OFFLINE_FILE)
        labels = sorted(self.selector.labels, key=lambda x: x.iteration)
        rows = [dict(x.__dict__, model_normalized_reward=normalize_reward(x.model_reward)) for x in labels]
        doc = {
            "what": "model-estimated episodic cost and reward of labelled policy iterates",
            "cost_threshold": self.kappa,
            "cost_limit": self.selector.cost_limit,
            "estimate": self.estimator.config.__dict__,
            "final_iteration": k,
            "best_offline_iteration": best.iteration,
            "iterates": rows,
        }
        tmp = self.ctx.out_dir / f".{ITERATES_FILE}.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.ctx.out_dir / ITERATES_FILE)
        metrics: dict[str, float] = {}
        for prefix, x in (("final", final), ("best_offline", best)):
            metrics.update(
                {
                    f"{prefix}/model_cost": x.model_cost,
                    f"{prefix}/model_reward": x.model_reward,
                    f"{prefix}/model_normalized_cost": x.model_normalized_cost,
                    f"{prefix}/model_normalized_reward": normalize_reward(x.model_reward),
                    f"{prefix}/iteration": float(x.iteration),
                }
            )
        spec = {
            "file": BEST_OFFLINE_FILE,
            "builder": "deterministic",
            "kwargs": self.policy_kwargs,
            "normalize_obs": False,
        }
        outputs = {
            "best_offline_policy": spec,
            "best_offline_iteration": best.iteration,
            "iterates_file": ITERATES_FILE,
        }
        return metrics, outputs

    def state_dict(self) -> dict[str, Any]:
        return self.selector.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.selector.load_state_dict(state)
