"""What the engine may ask of an online learner and of its collector: typed protocols.

The pipeline's online stage (``corl/pipeline/stages/online.py``) checkpoints and resumes a
run through these public operations only, never through a learner's or collector's private
state. CVPO's and MICE's trainers implement :class:`OnlineAgent`;
:class:`~corl.algos.online.collector.OnlineCollector` implements :class:`EpisodeCollector`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from corl.algos.online.collector import VectorStep


class OnlineAgent(Protocol):
    """An online learner as the training loops drive it.

    ``act`` returns env actions for a batch of raw observations (optionally with per-step
    extras such as values and log-probs, which come back in ``VectorStep.extras``);
    ``observe`` stores one vector step and runs whatever updates the method's schedule says
    are due, returning their logs (or None). ``state_dict``/``load_state_dict`` make a resume
    exact; ``cut_episodes`` tells it that the episodes open in ``open_envs`` will not continue
    (the simulators cannot be checkpointed, so a resume restarts them), ``last_obs`` being
    each env's last observation.
    """

    training_step: int

    def act(self, obs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor]]: ...

    def observe(self, step: VectorStep) -> dict[str, float] | None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: Mapping) -> None: ...

    def cut_episodes(self, open_envs: np.ndarray, last_obs: np.ndarray) -> None: ...


class EpisodeCollector(Protocol):
    """A recording collector as the online stage checkpoints it.

    ``state_dict``/``load_state_dict``: the counters a restarted collector continues from (env
    steps, episodes per env); ``open_episodes``: which envs are inside an episode;
    ``take_rows``: the rows of finished episodes recorded since the last call, handed over
    (the collector keeps no copy).
    """

    env_steps: int

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def open_episodes(self) -> np.ndarray: ...

    def take_rows(self) -> dict[str, np.ndarray]: ...
