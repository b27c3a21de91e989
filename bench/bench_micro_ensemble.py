"""MICRO's dynamics ensemble: speed of one batched module vs a Python loop, and model quality.

1. Gradient steps/s of the 7-member batched ensemble (corl's ``DynamicsLearner.update``: one
   ``EnsembleMLP``, one bmm per layer) against a Python loop over 7 separate ``corl.nn.MLP``
   members with the same sizes, the same loss (Gaussian NLL with soft-bounded log-variance,
   per-layer weight decay, log-var bound term) and the same per-member batches. The two are
   timed in interleaved rounds in one process; the ratio is of medians.
2. Hold-out MSE of the fitted ensemble's elites on Hopper-v4 random-action transitions
   (real physics) against a constant predictor (the train split's mean target).
3. With the fitted model: model-rollout transitions/s with each elite run only on its own rows
   vs every member on every row (released behaviour), and MICRO policy updates/s with the
   robust target (N·K·B_model candidate rows) vs the plain target, interleaved.

    .venv/bin/python bench/bench_micro_ensemble.py [--device cpu|cuda] [--rounds 5] ...
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F

from corl.algos.micro import (
    DynamicsConfig,
    DynamicsLearner,
    MICROConfig,
    MICROPolicyLearner,
    model_rollout,
    sample_mixed_batch,
    termination_fn,
)
from corl.algos.micro.dynamics import dynamics_targets
from corl.data.dataset import TransitionDataset
from corl.data.replay import TensorReplayBuffer
from corl.envs import make_env
from corl.nn.mlp import MLP


def collect_random(task: str, steps: int, seed: int) -> TransitionDataset:
    env = make_env(task, seed=seed)
    obs, _ = env.reset(seed=seed)
    keys = ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")
    rows: dict[str, list] = {k: [] for k in keys}
    for _ in range(steps):
        act = env.action_space.sample()
        nxt, rew, term, trunc, info = env.step(act)
        for k, v in zip(keys, (obs, act, rew, info["cost"], nxt, term, trunc)):
            rows[k].append(v)
        obs = env.reset()[0] if (term or trunc) else nxt
    env.close()
    return TransitionDataset.from_numpy({k: np.asarray(v) for k, v in rows.items()}, {"task": task})


class LoopEnsemble:
    """The naive baseline: E separate MLPs, a Python loop, the same loss, one Adam."""

    def __init__(self, in_dim: int, target_dim: int, cfg: DynamicsConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.members = [
            MLP(in_dim, 2 * target_dim, cfg.hidden, cfg.activation).to(device) for _ in range(cfg.ensemble_size)
        ]
        self.max_logvar = torch.nn.Parameter(torch.full((target_dim,), cfg.init_max_logvar, device=device))
        self.min_logvar = torch.nn.Parameter(torch.full((target_dim,), cfg.init_min_logvar, device=device))
        params = [p for m in self.members for p in m.parameters()] + [self.max_logvar, self.min_logvar]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = 0.0
        for e, member in enumerate(self.members):
            mean, raw = member(x[e]).chunk(2, dim=-1)
            logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
            logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
            loss = loss + ((mean - y[e]).pow(2) * torch.exp(-logvar)).mean() + logvar.mean()
            linears = [m for m in member.net if isinstance(m, torch.nn.Linear)]
            loss = loss + sum(wd * 0.5 * lin.weight.pow(2).sum() for wd, lin in zip(self.cfg.weight_decays, linears))
        loss = loss + self.cfg.logvar_loss_coef * (self.max_logvar.sum() - self.min_logvar.sum())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_speed(
    data: TransitionDataset, cfg: DynamicsConfig, device: torch.device, rounds: int, steps: int
) -> dict[str, float]:
    data = data.to(device)
    learner = DynamicsLearner(data.obs_dim, data.act_dim, cfg, device)
    fields = {k: getattr(data, k) for k in ("observations", "actions", "rewards", "costs", "next_observations")}
    learner.fit_scalers(fields)
    loop = LoopEnsemble(data.obs_dim + data.act_dim, learner.model.target_dim, cfg, device)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):  # the same bootstrap batches (E, B) for both
        rows = torch.randint(0, len(data), (cfg.ensemble_size, cfg.batch_size), generator=gen).to(device)
        batches.append({k: v[rows] for k, v in fields.items()})
    loop_inputs = [
        (learner.model.normalize_inputs(b["observations"], b["actions"]), dynamics_targets(b, cfg.predict_cost))
        for b in batches
    ]
    learner.update(batches[0]), loop.update(*loop_inputs[0])  # warm-up
    batched_rates, loop_rates = [], []
    for _ in range(rounds):
        sync(device)
        t = time.perf_counter()
        for b in batches:
            learner.update(b)
        sync(device)
        batched_rates.append(steps / (time.perf_counter() - t))
        t = time.perf_counter()
        for x, y in loop_inputs:
            loop.update(x, y)
        sync(device)
        loop_rates.append(steps / (time.perf_counter() - t))
    return {"batched": statistics.median(batched_rates), "loop": statistics.median(loop_rates)}


def bench_quality(data: TransitionDataset, cfg: DynamicsConfig, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    learner = DynamicsLearner(data.obs_dim, data.act_dim, cfg, device)
    t = time.perf_counter()
    metrics = learner.fit(data, torch.Generator().manual_seed(0))
    fit_s = time.perf_counter() - t
    fields = {
        k: getattr(data, k).to(device) for k in ("observations", "actions", "rewards", "costs", "next_observations")
    }
    hold = learner.holdout_rows.to(device)
    train_mask = torch.ones(len(data), dtype=torch.bool, device=device)
    train_mask[hold] = False
    y = dynamics_targets(fields, cfg.predict_cost)
    constant = y[train_mask].mean(0)
    const_mse = float((y[hold] - constant).pow(2).mean())
    with torch.no_grad():
        mean, _ = learner.model.predict(
            fields["observations"][hold], fields["actions"][hold], members=learner.model.elites
        )
    elite_mse = float((mean - y[hold]).pow(2).mean())
    return {
        "elite_mse": elite_mse,
        "const_mse": const_mse,
        "epochs": metrics["dynamics/epochs"],
        "fit_s": fit_s,
        "n_train": float(len(data) - len(hold)),
        "n_holdout": float(len(hold)),
        "learner": learner,
    }


def bench_rollout_and_update(
    data: TransitionDataset,
    learner: DynamicsLearner,
    device: torch.device,
    rounds: int,
    starts: int,
    updates: int,
    task: str,
) -> dict[str, float]:
    data = data.to(device)
    model = learner.model.eval()
    cfg = MICROConfig()  # paper sizes: batch 256, 12 real + 244 model, N = 10
    policy = MICROPolicyLearner(data.obs_dim, data.act_dim, cfg, model, device=device)
    term = termination_fn(task)
    gen = torch.Generator(device=device).manual_seed(0)
    start = data.sample(starts, gen)["observations"]
    buffer = TensorReplayBuffer.for_transitions(starts * cfg.rollout_length, data.obs_dim, data.act_dim, device)
    out, _ = model_rollout(model, policy.actor, start, cfg.rollout_length, term)
    buffer.add(out)
    batches = [sample_mixed_batch(data, buffer, cfg.batch_size, cfg.real_ratio, gen) for _ in range(updates)]
    rates: dict[str, list[float]] = {"rows": [], "all": [], "robust": [], "plain": []}
    for _ in range(rounds):
        for key, member_rows in (("rows", True), ("all", False)):
            sync(device)
            t = time.perf_counter()
            out, _ = model_rollout(model, policy.actor, start, cfg.rollout_length, term, member_rows)
            sync(device)
            rates[key].append(out["rewards"].shape[0] / (time.perf_counter() - t))
        for key, robust in (("robust", True), ("plain", False)):
            policy.config.robust_target = robust
            sync(device)
            t = time.perf_counter()
            for b in batches:
                policy.update(b)
            sync(device)
            rates[key].append(updates / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--task", default="hopper-medium-v2")
    parser.add_argument("--collect-steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="gradient steps per timed round")
    parser.add_argument("--max-epochs", type=int, default=15, help="cap for the quality fit")
    parser.add_argument("--rollout-starts", type=int, default=5000, help="start states per timed rollout")
    parser.add_argument("--updates", type=int, default=10, help="policy updates per timed round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    console = Console()

    data = collect_random(args.task, args.collect_steps, args.seed)
    cfg = DynamicsConfig(max_epochs=args.max_epochs)  # paper sizes: 7 members, 4x200 Swish, batch 256
    speed = bench_speed(data, cfg, device, args.rounds, args.steps)
    quality = bench_quality(data, cfg, device)
    loop = bench_rollout_and_update(
        data, quality["learner"], device, args.rounds, args.rollout_starts, args.updates, args.task
    )

    table = Table(
        title=f"MICRO dynamics ensemble ({args.task} random actions, device {device}, "
        f"{torch.get_num_threads()} thread(s))"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("batched ensemble (one EnsembleMLP) steps/s", f"{speed['batched']:.1f}")
    table.add_row("python loop over 7 MLPs steps/s", f"{speed['loop']:.1f}")
    table.add_row("[bold]speed-up (batched / loop)", f"[bold]{speed['batched'] / speed['loop']:.2f}x")
    table.add_row("transitions train / hold-out", f"{quality['n_train']:.0f} / {quality['n_holdout']:.0f}")
    table.add_row("fit epochs (cap) / seconds", f"{quality['epochs']:.0f} ({args.max_epochs}) / {quality['fit_s']:.1f}")
    table.add_row("hold-out MSE, elites (mean prediction)", f"{quality['elite_mse']:.5f}")
    table.add_row("hold-out MSE, constant train-mean predictor", f"{quality['const_mse']:.5f}")
    table.add_row("[bold]error ratio (elites / constant)", f"[bold]{quality['elite_mse'] / quality['const_mse']:.3f}")
    table.add_row("rollout transitions/s, each elite on its own rows", f"{loop['rows']:.0f}")
    table.add_row("rollout transitions/s, all members on every row", f"{loop['all']:.0f}")
    table.add_row("[bold]rollout speed-up (own rows / all rows)", f"[bold]{loop['rows'] / loop['all']:.2f}x")
    table.add_row("policy updates/s, robust target (N=10, 5 elites)", f"{loop['robust']:.1f}")
    table.add_row("policy updates/s, plain target", f"{loop['plain']:.1f}")
    table.add_row(
        "[bold]cost of the conservative target (plain / robust)", f"[bold]{loop['plain'] / loop['robust']:.2f}x"
    )
    console.print(table)


if __name__ == "__main__":
    main()
