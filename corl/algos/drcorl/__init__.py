"""DRCORL: diffusion-regularised constrained offline RL (Guo et al., NeurIPS 2025).

Three pure learners, run in order (``algorithms.md`` 1.7):

1. :class:`BehaviorLearner` - the diffusion behaviour model ``eps_phi(a_t, t, s)``;
2. :class:`CriticLearner` - reward/cost critics by IQL (then TD fine-tuned in stage 3);
3. :class:`PolicyLearner` - behaviour-mode warm start, then score-regularised policy
   extraction with the safety switch and PCGrad merge.
"""

from corl.algos.drcorl.behavior import BehaviorLearner, build_score_net
from corl.algos.drcorl.config import (
    PAPER_TASKS,
    BehaviorConfig,
    CriticConfig,
    DRCORLConfig,
    PolicyConfig,
    paper_config,
    reproduce_code_bugs,
)
from corl.algos.drcorl.critics import CriticLearner, iql_reward_scale
from corl.algos.drcorl.policy import (
    PolicyLearner,
    critic_episodic_cost,
    initial_observations,
    normalised_cost,
    switch_branch,
)

__all__ = [
    "BehaviorConfig",
    "CriticConfig",
    "PolicyConfig",
    "DRCORLConfig",
    "PAPER_TASKS",
    "paper_config",
    "reproduce_code_bugs",
    "BehaviorLearner",
    "build_score_net",
    "CriticLearner",
    "iql_reward_scale",
    "PolicyLearner",
    "switch_branch",
    "normalised_cost",
    "critic_episodic_cost",
    "initial_observations",
]
