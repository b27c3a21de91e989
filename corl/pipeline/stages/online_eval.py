"""Periodic deterministic evaluation of an online learner, and its best snapshot.

Why: a training episode's return measures the *stochastic* behaviour policy while it is still
changing, and a constrained learner's last iterate can sit in a trough of its Lagrange
multiplier. FSRL and OmniSafe therefore run test episodes of the deterministic policy every
epoch and report the last ones; users also ask for the final and the best iterate reported
separately (ecosystem.md). With ``eval_every > 0`` a train stage:

* every ``eval_every`` env steps of each learner (and at its end) runs ``eval_episodes``
  episodes of the mean action in separate simulators, always from the same environment seeds
  (so successive points differ only by the policy), and logs ``eval_reward``/``eval_cost``
  (mean and std over the episodes) to ``metrics.jsonl``;
* keeps the actor of the evaluation with the highest reward among those whose mean cost is
  within the learner's limit, and publishes it as ``policy-<limit>-best.pt`` beside the final
  ``policy-<limit>.pt``.

The evaluation neither draws from the training RNG streams (they are forked around it) nor
touches the training simulators, so a run with evaluations collects exactly the episodes a
run without them collects.
"""

from __future__ import annotations

import contextlib
import copy
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

EVAL_SEED_OFFSET = 7_000_003  # evaluation env seeds: --seed + this (+ env index), apart from training's


def greedy_policy(trainer: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The learner's deterministic action (mean of its Gaussian), on the inputs it was trained on."""
    learner = trainer.learner
    normalizer = getattr(trainer, "normalizer", None)
    device = learner.device

    def policy_fn(obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(device)
        if normalizer is not None:
            x = normalizer(x.cpu()).to(device)
        return learner.actor.sample(x, True)[0].cpu()

    return policy_fn


def actor_snapshot(trainer: Any) -> dict[str, Any]:
    """A CPU copy of what a saved policy needs: the actor's weights and the obs normaliser's stats."""
    snap: dict[str, Any] = {
        "actor": {k: v.detach().cpu().clone() for k, v in trainer.learner.actor.state_dict().items()}
    }
    normalizer = getattr(trainer, "normalizer", None)
    if normalizer is not None:
        snap["obs_mean"] = normalizer.mean.detach().cpu().float().clone()
        snap["obs_std"] = torch.sqrt(normalizer.var + normalizer.eps).detach().cpu().float().clone()
    return snap


@contextlib.contextmanager
def _rng_untouched():
    """Run the block without advancing torch's, numpy's or Python's global generators."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


@dataclass
class PeriodicEvaluator:
    """Evaluation schedule, the evaluations so far and the best snapshot of the current learner."""

    task: Any
    every: int  # env steps between evaluations (per learner); 0 disables
    episodes: int
    seed: int
    device: torch.device | str = "cpu"
    next_at: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # every evaluation, all learners
    best: dict[str, Any] | None = None  # current learner: {"step", "reward", "cost", "snapshot"}

    @property
    def enabled(self) -> bool:
        return self.every > 0 and self.episodes > 0

    def start_learner(self) -> None:
        self.next_at, self.best = self.every, None

    def due(self, learner_steps: int) -> bool:
        return self.enabled and learner_steps >= self.next_at

    def evaluate(self, trainer: Any, learner: int, learner_steps: int, step: int, limit: float) -> dict[str, float]:
        """Run the episodes, record the point, update the best snapshot; returns the logged row."""
        from corl.eval.rollout import rollout

        while self.next_at <= learner_steps:
            self.next_at += self.every
        with _rng_untouched():
            result = rollout(
                self.task,
                greedy_policy(trainer),
                self.episodes,
                seed=self.seed + EVAL_SEED_OFFSET,
                num_envs=min(self.episodes, 5),
                device="cpu",
            )
        rewards, costs = np.asarray(result.reward, float), np.asarray(result.cost, float)
        row = {
            "learner": learner,
            "learner_step": learner_steps,
            "eval_reward": float(rewards.mean()),
            "eval_reward_std": float(rewards.std()),
            "eval_cost": float(costs.mean()),
            "eval_cost_std": float(costs.std()),
            "eval_episodes": len(rewards),
            "cost_limit": float(limit),
        }
        self.history.append({**row, "step": step})
        feasible = row["eval_cost"] <= limit
        if feasible and (self.best is None or row["eval_reward"] > self.best["reward"]):
            self.best = {
                "step": learner_steps,
                "reward": row["eval_reward"],
                "cost": row["eval_cost"],
                "snapshot": actor_snapshot(trainer),
            }
        return row

    def last(self, learner: int, k: int = 3) -> list[dict[str, float]]:
        """The learner's last ``k`` evaluations."""
        return [h for h in self.history if h["learner"] == learner][-k:]

    # checkpoint state (tensors and Python scalars only: loadable with weights_only=True)
    def state(self) -> dict[str, Any]:
        return {"next_at": self.next_at, "history": [dict(h) for h in self.history], "best": copy.deepcopy(self.best)}

    def load(self, state: dict[str, Any] | None) -> None:
        if state:
            self.next_at = int(state["next_at"])
            self.history = [dict(h) for h in state["history"]]
            self.best = state["best"]
