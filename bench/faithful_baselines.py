"""Faithfulness: corl's COptiDICE and CPQ against ``osrl-lib`` 0.1.0 at loss level.

Both implementations get the same network weights (OSRL's separate MLPs copied into corl's
batched ensembles), the same batch and the same torch RNG state; one update runs on each side
while every optimiser's ``step`` records the gradients it is about to apply. The table gives
the largest absolute difference per parameter group (gradients mapped back to OSRL's layout)
and of the logged losses. OSRL is an optional dependency: see ``bench/speed_baselines.py``.

Run: ``PYTHONPATH=DIR:. .venv/bin/python bench/faithful_baselines.py [--dataset FILE]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from rich.console import Console
from rich.table import Table


def copy_mlps_into_ensemble(mlps, ensemble) -> None:
    """OSRL's ``[nn.Sequential(Linear, act, ...)]`` -> corl ``EnsembleMLP`` weights (in, out)."""
    ens_layers = [m for m in ensemble.net if hasattr(m, "ensemble_size")]
    for e, mlp in enumerate(mlps):
        linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
        for lin, ens in zip(linears, ens_layers):
            with torch.no_grad():
                ens.weight[e].copy_(lin.weight.T)
                ens.bias[e, 0].copy_(lin.bias)


def ensemble_grads(ensemble, e: int) -> list[torch.Tensor]:
    out = []
    for m in (m for m in ensemble.net if hasattr(m, "ensemble_size")):
        out += [m.weight.grad[e].T, m.bias.grad[e, 0]]
    return out


def copy_actor(osrl_actor, corl_policy) -> None:
    """OSRL SquashedGaussianMLPActor (trunk, mu, log_std) -> corl TanhGaussianPolicy (one head)."""
    o_lin = [m for m in osrl_actor.net if isinstance(m, torch.nn.Linear)]
    c_lin = [m for m in corl_policy.net.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for a, b in zip(o_lin, c_lin[:-1]):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        c_lin[-1].weight.copy_(torch.cat([osrl_actor.mu_layer.weight, osrl_actor.log_std_layer.weight]))
        c_lin[-1].bias.copy_(torch.cat([osrl_actor.mu_layer.bias, osrl_actor.log_std_layer.bias]))


def actor_grads_corl(policy) -> list[torch.Tensor]:
    lin = [m for m in policy.net.net if isinstance(m, torch.nn.Linear)]
    out = []
    for m in lin[:-1]:
        out += [m.weight.grad, m.bias.grad]
    a = lin[-1].weight.grad.shape[0] // 2
    return out + [lin[-1].weight.grad[:a], lin[-1].bias.grad[:a], lin[-1].weight.grad[a:], lin[-1].bias.grad[a:]]


def actor_grads_osrl(actor) -> list[torch.Tensor]:
    out = []
    for m in (m for m in actor.net if isinstance(m, torch.nn.Linear)):
        out += [m.weight.grad, m.bias.grad]
    return out + [actor.mu_layer.weight.grad, actor.mu_layer.bias.grad, actor.log_std_layer.weight.grad,
                  actor.log_std_layer.bias.grad]


def record(optimizer, store: dict, name: str, grads_fn) -> None:
    """Wrap ``optimizer.step`` to save the gradients it applies (cloned) under ``name``."""
    step = optimizer.step

    def wrapped(*args, **kwargs):
        store[name] = [g.detach().clone() for g in grads_fn()]
        return step(*args, **kwargs)

    optimizer.step = wrapped


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def coptidice(data, arrays: dict, batch: int) -> list[tuple[str, float, float]]:
    import osrl.algorithms as oa

    from corl.algos.coptidice import COptiDICEConfig, COptiDICELearner, initial_flags

    init = initial_flags(data.episode_ends)
    p_init = float(init.mean())
    torch.manual_seed(0)
    model = oa.COptiDICE(data.obs_dim, data.act_dim, 1.0, "softchi", p_init,
                         arrays["observations"].std(0, keepdims=True), arrays["actions"].std(0, keepdims=True),
                         [256, 256], [256, 256], num_nu=2, num_chi=2, cost_limit=10, episode_len=300)
    model.setup_optimizers(1e-4, 1e-4, 1e-4)
    corl = COptiDICELearner(COptiDICEConfig(), data.obs_dim, data.act_dim, model.qc_thres, p_init,
                            data.observations.std(0, unbiased=False), data.actions.std(0, unbiased=False))
    copy_mlps_into_ensemble(model.nu_network.q_nets, corl.nu)
    copy_mlps_into_ensemble(model.chi_network.q_nets, corl.chi)
    copy_actor(model.actor, corl.actor)
    o, c = {}, {}
    record(model.nu_optim, o, "nu", lambda: [p.grad for p in model.nu_network.parameters()])
    record(model.chi_optim, o, "chi", lambda: [p.grad for p in model.chi_network.parameters()])
    record(model.actor_optim, o, "actor", lambda: actor_grads_osrl(model.actor))
    record(model.lmbda_optim, o, "lambda", lambda: [model.lmbda.grad])
    record(model.tau_optim, o, "tau", lambda: [model.tau.grad])
    record(corl.nu_opt, c, "nu", lambda: ensemble_grads(corl.nu, 0) + ensemble_grads(corl.nu, 1))
    record(corl.chi_opt, c, "chi", lambda: ensemble_grads(corl.chi, 0) + ensemble_grads(corl.chi, 1))
    record(corl.actor_opt, c, "actor", lambda: actor_grads_corl(corl.actor))
    record(corl.lambda_opt, c, "lambda", lambda: [corl.lambda_raw.grad.reshape(1)])
    record(corl.tau_opt, c, "tau", lambda: [corl.tau_raw.grad.reshape(1)])
    idx = np.random.default_rng(0).integers(0, len(data), batch)
    done = np.logical_or(arrays["terminals"], arrays["timeouts"]).astype(np.float32)
    ob = [torch.as_tensor(x, dtype=torch.float32) for x in (
        arrays["observations"][idx], arrays["next_observations"][idx], arrays["actions"][idx],
        arrays["rewards"][idx] * 0.1, arrays["costs"][idx], done[idx], init.numpy()[idx])]
    cb = {k: getattr(data, k)[torch.as_tensor(idx)] for k in
          ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")}
    cb["is_init"] = init[torch.as_tensor(idx)]
    torch.manual_seed(1)
    o_logs = model.update(ob)
    torch.manual_seed(1)
    c_logs = corl.update(cb)
    rows = [(f"grad {k}", max_diff(o[k], c[k]), max(float(g.abs().max()) for g in o[k])) for k in o]
    rows.append(("loss nu", abs(o_logs["loss/nu_loss"] - c_logs["nu/loss"]), abs(o_logs["loss/nu_loss"])))
    rows.append(("loss chi", abs(o_logs["loss/chi_loss"] - c_logs["chi/loss"]), abs(o_logs["loss/chi_loss"])))
    rows.append(("loss actor", abs(o_logs["loss/actor_loss"] - c_logs["actor/loss"]), abs(o_logs["loss/actor_loss"])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="datasets/samples/OfflineCarCircle-v0.hdf5")
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from corl.pipeline.context import read_task_dataset
    from corl.tasks import get_task

    data = read_task_dataset(get_task("OfflineCarCircle-v0"), args.dataset)
    arrays = {k: v.astype(np.float32) if v.dtype != bool else v for k, v in data.to_numpy().items()}
    table = Table(title="corl vs osrl-lib 0.1.0: one update, same weights, batch and RNG")
    for col in ("method", "quantity", "max |corl - OSRL|", "max |OSRL|"):
        table.add_column(col)
    for name, diff, scale in coptidice(data, arrays, args.batch):
        table.add_row("COptiDICE", name, f"{diff:.2e}", f"{scale:.2e}")
    Console().print(table)


if __name__ == "__main__":
    main()
