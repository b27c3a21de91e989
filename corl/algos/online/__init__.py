"""Online collection and the shared online training loop (used by CVPO and MICE)."""

from corl.algos.online.collector import (
    EpisodeInfo,
    FixedHorizon,
    OnlineAgent,
    OnlineCollector,
    OnlineResult,
    VectorStep,
    episode_summary,
    train_online,
    vector_step_costs,
)

__all__ = [
    "EpisodeInfo",
    "FixedHorizon",
    "OnlineAgent",
    "OnlineCollector",
    "OnlineResult",
    "VectorStep",
    "episode_summary",
    "train_online",
    "vector_step_costs",
]
