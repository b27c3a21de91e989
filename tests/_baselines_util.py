"""Helpers for the OSRL-baseline tests: the known-answer bandit and a resumable pipeline run."""

from __future__ import annotations

import numpy as np
import torch

from corl.data.dataset import TransitionDataset


def bandit(
    n: int = 2000, seed: int = 0, low: float = -1.0, high: float = 1.0, cost: str = "square"
) -> TransitionDataset:
    """One state, 1-D action ``a ~ U(low, high)``, ``r = a``, every step terminal.

    ``cost="square"``: ``c = max(a, 0)^2`` (safe optimum at ``sqrt(limit)``);
    ``cost="step"``: ``c = 1[a > 0.5]`` (safe optimum just below 0.5). The unconstrained
    optimum is ``a = high``: the high-reward action is the unsafe one.
    """
    rng = np.random.default_rng(seed)
    a = rng.uniform(low, high, size=(n, 1)).astype(np.float32)
    c = np.maximum(a[:, 0], 0) ** 2 if cost == "square" else (a[:, 0] > 0.5).astype(np.float32)
    obs = np.zeros((n, 1), np.float32)
    return TransitionDataset.from_numpy(
        dict(
            observations=obs,
            actions=a,
            rewards=a[:, 0],
            costs=c,
            next_observations=obs,
            terminals=np.ones(n, bool),
            timeouts=np.zeros(n, bool),
        )
    )


def fit_vae(data: TransitionDataset, steps: int = 300, hidden=(32, 32), seed: int = 0):
    from corl.algos.baselines.vae import VAEConfig, VAELearner

    torch.manual_seed(seed)
    learner = VAELearner(
        VAEConfig(hidden=list(hidden), batch_size=128), data.obs_dim, data.act_dim, torch.device("cpu")
    )
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = data.sample(128, gen)
        learner.update(batch["observations"], batch["actions"])
    return learner.vae


def train(learner, data: TransitionDataset, steps: int, batch_size: int = 128, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    logs: dict = {}
    for _ in range(steps):
        logs = learner.update(data.sample(batch_size, gen))
    return logs


def interrupted_then_resumed(tmp_path, monkeypatch, spec_text: str, stage: str, at: int):
    """(reference run, resumed run) of a spec interrupted in ``stage`` at step ``at``."""
    from _pipeline_util import TASK, run, write_dataset, write_spec

    from corl.pipeline.context import InterruptFlag, TrainLoop
    from corl.pipeline.progress import RunCallbacks
    from corl.pipeline.runner import RunInterrupted, RunRequest, run_pipeline

    class InterruptAt(RunCallbacks):
        def __init__(self, flag):
            self.flag = flag

        def stage_progress(self, name, done, total, metrics):
            if name == stage and done >= at:
                self.flag.request()

    monkeypatch.setattr(TrainLoop, "PROGRESS_INTERVAL", 0.0)
    spec, data = write_spec(tmp_path, spec_text, f"{stage}.toml"), write_dataset(tmp_path)
    reference = run(spec, data, checkpoints=str(tmp_path / "reference"))
    flag = InterruptFlag()
    req = RunRequest(
        pipeline=str(spec),
        task=TASK,
        dataset=str(data),
        device="cpu",
        checkpoints=str(tmp_path / "resumed"),
        checkpoint_every_steps=10_000,
    )
    try:
        run_pipeline(req, InterruptAt(flag), interrupt=flag)
        raise AssertionError("the run was not interrupted")
    except RunInterrupted:
        pass
    resumed = run(spec, data, checkpoints=str(tmp_path / "resumed"))
    return reference, resumed


def same_policy(a_dir, b_dir) -> bool:
    a = torch.load(a_dir / "policy.pt", weights_only=True)["state_dict"]
    b = torch.load(b_dir / "policy.pt", weights_only=True)["state_dict"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
