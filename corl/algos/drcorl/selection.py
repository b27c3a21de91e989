"""Offline policy selection over DRCORL's iterates (a corl extension, not in the paper).

Why: the final iterate of the safe phase is not necessarily the best one, and the simulator
is not available offline. Every labelled iterate carries the model estimate of its episodic
cost and reward (:mod:`corl.algos.drcorl.model_estimate`); the selector keeps the best by
that offline estimate:

* among the iterates whose estimated normalised cost is within the limit, the highest
  estimated reward;
* if none is, the lowest estimated cost.

It only bookkeeps labels (weights are the caller's business), and its ``state_dict`` is
plain containers, so a resumed policy stage selects exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping


@dataclass
class IterateLabel:
    """One labelled iterate: safe-phase iteration, model estimate, its snapshot file."""

    iteration: int
    model_cost: float  # episodic cost estimate
    model_reward: float  # episodic reward estimate
    model_normalized_cost: float
    file: str | None = None


class OfflineSelector:
    """Labels iterates and answers which is best by the offline estimate."""

    def __init__(self, cost_limit: float) -> None:
        self.cost_limit = float(cost_limit)  # on the normalised scale (DRCORL's l)
        self.labels: list[IterateLabel] = []

    def add(self, label: IterateLabel) -> None:
        self.labels = [x for x in self.labels if x.iteration != label.iteration] + [label]

    def best(self) -> IterateLabel | None:
        """Highest estimated reward within the limit; else the lowest estimated cost.

        Ties go to the later iterate (it has trained longer for the same estimate).
        """
        if not self.labels:
            return None
        feasible = [x for x in self.labels if x.model_normalized_cost <= self.cost_limit]
        if feasible:
            return max(feasible, key=lambda x: (x.model_reward, x.iteration))
        return min(self.labels, key=lambda x: (x.model_cost, -x.iteration))

    def state_dict(self) -> dict[str, Any]:
        return {"cost_limit": self.cost_limit, "labels": [asdict(x) for x in self.labels]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.cost_limit = float(state["cost_limit"])
        self.labels = [IterateLabel(**dict(x)) for x in state["labels"]]
