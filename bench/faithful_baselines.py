"""Faithfulness: corl's BCQ-Lag, BEAR-Lag, CPQ, COptiDICE and CDT against ``osrl-lib`` 0.1.0
at loss and gradient level.

Both implementations get the same network weights (OSRL's separate MLPs copied into corl's
batched ensembles), the same batch and the same random numbers; one update runs on each side
while every optimiser's ``step`` records the gradients it is about to apply. The table gives
the largest absolute difference per parameter group (gradients mapped back to OSRL's layout)
and of the losses. OSRL is an optional dependency: see ``bench/speed_baselines.py``.

Same random numbers: COptiDICE draws them in OSRL's order, so one seed before the update
suffices. BCQ-Lag, BEAR-Lag and CPQ draw one set of candidate next actions for the reward and
the cost target where OSRL draws two (a documented corl deviation, same distribution), and
CPQ's OOD scoring skips OSRL's unused draws; there the bench reseeds torch at the start of
each loss on both sides (OSRL's ``critic_loss`` and ``cost_critic_loss`` with the seed of
corl's target computation, the actors' losses with another, CPQ's OOD samples with a third),
so each loss sees the same numbers. CDT's dropout masks come from one seed before the forward.
The ``*-pid`` rows repeat BCQ-Lag and BEAR-Lag with both sides' cost threshold at -1, so that
the first step's PID multiplier and penalty gradient are non-zero.

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
    ens_layers = [m for m in ensemble.modules() if type(m).__name__ == "EnsembleLinear"]
    for e, mlp in enumerate(mlps):
        linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
        for lin, ens in zip(linears, ens_layers):
            with torch.no_grad():
                ens.weight[e].copy_(lin.weight.T)
                ens.bias[e, 0].copy_(lin.bias)


def ensemble_grads(ensemble, e: int) -> list[torch.Tensor]:
    out = []
    for m in (m for m in ensemble.modules() if type(m).__name__ == "EnsembleLinear"):
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
    return out + [
        actor.mu_layer.weight.grad,
        actor.mu_layer.bias.grad,
        actor.log_std_layer.weight.grad,
        actor.log_std_layer.bias.grad,
    ]


def record(optimizer, store: dict, name: str, grads_fn) -> None:
    """Wrap ``optimizer.step`` to save the gradients it applies (cloned) under ``name``."""
    step = optimizer.step

    def wrapped(*args, **kwargs):
        store[name] = [g.detach().clone() for g in grads_fn()]
        return step(*args, **kwargs)

    optimizer.step = wrapped


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b), (len(a), len(b))
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def seeded(obj, name: str, seed: int, after: bool = False) -> None:
    """Reseed torch's global generator before (or ``after``) every call of ``obj.name``."""
    fn = getattr(obj, name)

    def wrapped(*args, **kwargs):
        if not after:
            torch.manual_seed(seed)
        out = fn(*args, **kwargs)
        if after:
            torch.manual_seed(seed)
        return out

    setattr(obj, name, wrapped)


def captured(obj, name: str, store: dict) -> None:
    """Keep the return value of every call of ``obj.name`` in ``store[name]``."""
    fn = getattr(obj, name)

    def wrapped(*args, **kwargs):
        store[name] = out = fn(*args, **kwargs)
        return out

    setattr(obj, name, wrapped)


def linears(module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def copy_linears(src: list, dst: list) -> None:
    with torch.no_grad():
        for a, b in zip(src, dst, strict=True):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


def linear_grads(mods: list) -> list[torch.Tensor]:
    return [g for m in mods for g in (m.weight.grad, m.bias.grad)]


def copy_vae(o_vae, c_vae) -> None:
    """OSRL VAE (e1, e2, mean, log_std, d1, d2, d3) -> corl VAE (encoder MLP with one (mu, log_std) head)."""
    enc = linears(c_vae.encoder)
    copy_linears([o_vae.e1, o_vae.e2], enc[:2])
    with torch.no_grad():
        enc[2].weight.copy_(torch.cat([o_vae.mean.weight, o_vae.log_std.weight]))
        enc[2].bias.copy_(torch.cat([o_vae.mean.bias, o_vae.log_std.bias]))
    copy_linears([o_vae.d1, o_vae.d2, o_vae.d3], linears(c_vae.decoder))


def vae_grads_corl(c_vae) -> list[torch.Tensor]:
    enc = linears(c_vae.encoder)
    w, b = enc[2].weight.grad, enc[2].bias.grad
    k = w.shape[0] // 2
    return linear_grads(enc[:2]) + [w[:k], b[:k], w[k:], b[k:]] + linear_grads(linears(c_vae.decoder))


def vae_grads_osrl(o_vae) -> list[torch.Tensor]:
    return linear_grads([o_vae.e1, o_vae.e2, o_vae.mean, o_vae.log_std, o_vae.d1, o_vae.d2, o_vae.d3])


def double_q_nets(critic) -> list:
    """OSRL EnsembleDoubleQCritic members in corl's member order: group Q1, then group Q2."""
    return list(critic.q1_nets) + list(critic.q2_nets)


def batches(data, arrays: dict, batch: int, init: np.ndarray | None = None) -> tuple[list, dict]:
    """(OSRL's batch list, corl's batch dict) of the same rows."""
    idx = np.random.default_rng(0).integers(0, len(data), batch)
    done = np.logical_or(arrays["terminals"], arrays["timeouts"]).astype(np.float32)
    cols = [
        arrays["observations"][idx],
        arrays["next_observations"][idx],
        arrays["actions"][idx],
        arrays["rewards"][idx] * 0.1,
        arrays["costs"][idx],
        done[idx],
    ]
    if init is not None:
        cols.append(init[idx])
    ob = [torch.as_tensor(x, dtype=torch.float32) for x in cols]
    cb = {
        k: getattr(data, k)[torch.as_tensor(idx)]
        for k in ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")
    }
    if init is not None:
        cb["is_init"] = torch.as_tensor(init[idx])
    return ob, cb


def grad_rows(o: dict, c: dict) -> list[tuple[str, float, float]]:
    return [(f"grad {k}", max_diff(o[k], c[k]), max(float(g.abs().max()) for g in o[k])) for k in o]


def loss_row(name: str, osrl_value: float, corl_value: float) -> tuple[str, float, float]:
    return (f"loss {name}", abs(float(osrl_value) - float(corl_value)), abs(float(osrl_value)))


def set_threshold(model, corl, thres: float) -> None:
    """Both sides' cost threshold (penalty and PID) set to ``thres``: at -1 the first step's
    PID error is positive, so lambda and the penalty's gradient are non-zero."""
    model.qc_thres = model.controller.thres = thres
    corl.qc_thres = corl.pid.cost_limit = corl.pid.previous = thres


def _lag_common(data) -> dict:
    return {
        "state_dim": data.obs_dim,
        "action_dim": data.act_dim,
        "max_action": 1.0,
        "a_hidden_sizes": [256, 256],
        "c_hidden_sizes": [256, 256],
        "cost_limit": 10,
        "episode_len": 300,
    }


def bcql(data, arrays: dict, batch: int, pid_active: bool = False) -> list[tuple[str, float, float]]:
    import osrl.algorithms as oa

    from corl.algos.baselines.vae import build_vae
    from corl.algos.bcql import BCQLConfig, BCQLLearner

    torch.manual_seed(0)
    model = oa.BCQL(**_lag_common(data), vae_hidden_sizes=400, num_q=2, num_qc=2)
    trainer = oa.BCQLTrainer(model, None, actor_lr=1e-3, critic_lr=1e-3, vae_lr=1e-3, reward_scale=0.1)
    corl = BCQLLearner(
        BCQLConfig(batch_size=batch, vae_joint=True),
        data.obs_dim,
        data.act_dim,
        build_vae(data.obs_dim, data.act_dim, [400, 400], None),
        model.qc_thres,
    )
    copy_vae(model.vae, corl.vae)
    copy_linears(linears(model.actor), linears(corl.actor))
    copy_linears(linears(model.actor_old), linears(corl.actor_target))
    for crit, dst in (
        ((model.critic, model.cost_critic), corl.critic),
        ((model.critic_old, model.cost_critic_old), corl.critic_target),
    ):
        copy_mlps_into_ensemble(double_q_nets(crit[0]) + double_q_nets(crit[1]), dst)
    if pid_active:
        set_threshold(model, corl, -1.0)
    o, c, o_out = {}, {}, {}
    record(model.vae_optim, o, "vae", lambda: vae_grads_osrl(model.vae))
    record(
        model.critic_optim,
        o,
        "critic",
        lambda: [g for q in double_q_nets(model.critic) for g in linear_grads(linears(q))],
    )
    record(
        model.cost_critic_optim,
        o,
        "cost critic",
        lambda: [g for q in double_q_nets(model.cost_critic) for g in linear_grads(linears(q))],
    )
    record(model.actor_optim, o, "actor", lambda: linear_grads(linears(model.actor)))
    record(corl.vae_opt, c, "vae", lambda: vae_grads_corl(corl.vae))
    record(corl.critic_opt, c, "critic", lambda: [g for e in range(8) for g in ensemble_grads(corl.critic, e)])
    record(corl.actor_opt, c, "actor", lambda: linear_grads(linears(corl.actor)))
    for name in ("critic_loss", "cost_critic_loss", "actor_loss"):
        captured(model, name, o_out)
    seeded(model, "critic_loss", 2)
    seeded(model, "cost_critic_loss", 2)
    seeded(corl, "_targets", 2)
    seeded(model, "actor_loss", 3)
    seeded(corl, "_actor_loss", 3)
    ob, cb = batches(data, arrays, batch)
    torch.manual_seed(1)
    trainer.train_one_step(*ob)
    torch.manual_seed(1)
    logs = corl.update(cb)
    c["cost critic"] = c["critic"][len(c["critic"]) // 2 :]
    c["critic"] = c["critic"][: len(c["critic"]) // 2]
    rows = grad_rows(o, c)
    o_critic = float(o_out["critic_loss"][0]) + float(o_out["cost_critic_loss"][0])
    rows.append(loss_row("critic + cost critic", o_critic, logs["critic/loss"]))
    rows.append(loss_row("actor", o_out["actor_loss"][0], logs["actor/loss"]))
    rows.append(
        (
            "PID lambda",
            abs(o_out["actor_loss"][1]["loss/lagrangian"] - logs["actor/lambda"]),
            abs(o_out["actor_loss"][1]["loss/lagrangian"]),
        )
    )
    return rows


def bearl(data, arrays: dict, batch: int, pid_active: bool = False) -> list[tuple[str, float, float]]:
    import osrl.algorithms as oa

    from corl.algos.baselines.vae import build_vae
    from corl.algos.bearl import BEARLConfig, BEARLLearner

    torch.manual_seed(0)
    model = oa.BEARL(**_lag_common(data), vae_hidden_sizes=400, num_q=2, num_qc=2, start_update_policy_step=0)
    trainer = oa.BEARLTrainer(model, None, actor_lr=1e-3, critic_lr=1e-3, vae_lr=1e-3, reward_scale=0.1)
    corl = BEARLLearner(
        BEARLConfig(batch_size=batch, vae_joint=True),
        data.obs_dim,
        data.act_dim,
        build_vae(data.obs_dim, data.act_dim, [400, 400], None),
        model.qc_thres,
    )
    copy_vae(model.vae, corl.vae)
    copy_actor(model.actor, corl.actor)
    copy_actor(model.actor_old, corl.actor_target)
    for crit, dst in (
        ((model.critic, model.cost_critic), corl.critic),
        ((model.critic_old, model.cost_critic_old), corl.critic_target),
    ):
        copy_mlps_into_ensemble(double_q_nets(crit[0]) + double_q_nets(crit[1]), dst)
    if pid_active:
        set_threshold(model, corl, -1.0)
    o, c, o_out = {}, {}, {}
    record(model.vae_optim, o, "vae", lambda: vae_grads_osrl(model.vae))
    record(
        model.critic_optim,
        o,
        "critic",
        lambda: [g for q in double_q_nets(model.critic) for g in linear_grads(linears(q))],
    )
    record(
        model.cost_critic_optim,
        o,
        "cost critic",
        lambda: [g for q in double_q_nets(model.cost_critic) for g in linear_grads(linears(q))],
    )
    record(model.actor_optim, o, "actor", lambda: actor_grads_osrl(model.actor))
    record(corl.vae_opt, c, "vae", lambda: vae_grads_corl(corl.vae))
    record(corl.critic_opt, c, "critic", lambda: [g for e in range(8) for g in ensemble_grads(corl.critic, e)])
    record(corl.actor_opt, c, "actor", lambda: actor_grads_corl(corl.actor))
    for name in ("critic_loss", "cost_critic_loss", "actor_loss"):
        captured(model, name, o_out)
    seeded(model, "critic_loss", 2)
    seeded(model, "cost_critic_loss", 2)
    seeded(corl, "_targets", 2)
    seeded(model, "actor_loss", 3)
    seeded(corl, "_actor_loss", 3)
    ob, cb = batches(data, arrays, batch)
    torch.manual_seed(1)
    trainer.train_one_step(*ob)
    torch.manual_seed(1)
    logs = corl.update(cb)
    c["cost critic"] = c["critic"][len(c["critic"]) // 2 :]
    c["critic"] = c["critic"][: len(c["critic"]) // 2]
    rows = grad_rows(o, c)
    o_critic = float(o_out["critic_loss"][0]) + float(o_out["cost_critic_loss"][0])
    rows.append(loss_row("critic + cost critic", o_critic, logs["critic/loss"]))
    rows.append(loss_row("actor", o_out["actor_loss"][0], logs["actor/loss"]))
    stats = o_out["actor_loss"][1]
    rows.append(loss_row("MMD", stats["loss/mmd_loss"], logs["actor/mmd"]))
    rows.append(("PID lambda", abs(stats["loss/lagrangian"] - logs["actor/lambda"]), abs(stats["loss/lagrangian"])))
    rows.append(("log alpha after", abs(float(model.log_alpha) - float(corl.log_alpha)), abs(float(model.log_alpha))))
    return rows


def cpq(data, arrays: dict, batch: int) -> list[tuple[str, float, float]]:
    import osrl.algorithms as oa

    from corl.algos.baselines.vae import build_vae
    from corl.algos.cpq import CPQConfig, CPQLearner

    torch.manual_seed(0)
    model = oa.CPQ(**_lag_common(data), vae_hidden_sizes=400, num_q=2, num_qc=2, beta=0.5)
    trainer = oa.CPQTrainer(model, None, actor_lr=1e-4, critic_lr=1e-3, alpha_lr=1e-4, vae_lr=1e-3, reward_scale=0.1)
    corl = CPQLearner(
        CPQConfig(batch_size=batch, vae_joint=True),
        data.obs_dim,
        data.act_dim,
        build_vae(data.obs_dim, data.act_dim, [400, 400], None),
        model.q_thres,
    )
    copy_vae(model.vae, corl.vae)
    copy_actor(model.actor, corl.actor)
    for src, dst in (
        (model.critic, corl.critic),
        (model.critic_old, corl.critic_target),
        (model.cost_critic, corl.cost_critic),
        (model.cost_critic_old, corl.cost_critic_target),
    ):
        copy_mlps_into_ensemble(src.q_nets, dst)
    o, c, o_out = {}, {}, {}
    record(model.vae_optim, o, "vae", lambda: vae_grads_osrl(model.vae))
    record(model.critic_optim, o, "critic", lambda: [g for q in model.critic.q_nets for g in linear_grads(linears(q))])
    record(
        model.cost_critic_optim,
        o,
        "cost critic",
        lambda: [g for q in model.cost_critic.q_nets for g in linear_grads(linears(q))],
    )
    record(model.actor_optim, o, "actor", lambda: actor_grads_osrl(model.actor))
    record(corl.vae_opt, c, "vae", lambda: vae_grads_corl(corl.vae))
    record(corl.critic_opt, c, "critic", lambda: [g for e in range(2) for g in ensemble_grads(corl.critic, e)])
    record(corl.cost_opt, c, "cost critic", lambda: [g for e in range(2) for g in ensemble_grads(corl.cost_critic, e)])
    record(corl.actor_opt, c, "actor", lambda: actor_grads_corl(corl.actor))
    for name in ("critic_loss", "cost_critic_loss", "actor_loss"):
        captured(model, name, o_out)
    seeded(model, "critic_loss", 2)
    seeded(model, "cost_critic_loss", 2)
    seeded(corl, "_critic_losses", 2)
    # OSRL's OOD samples follow an unused rsample in the actor call that returns the distribution
    forward = model.actor.forward

    def actor_forward(obs, deterministic=False, with_logprob=True, with_distribution=False, **kw):
        out = forward(obs, deterministic, with_logprob, with_distribution, **kw)
        if with_distribution:
            torch.manual_seed(4)
        return out

    model.actor.forward = actor_forward
    seeded(corl, "_ood_cost", 4)
    seeded(model, "actor_loss", 3)
    seeded(corl, "_actor_loss", 3)
    ob, cb = batches(data, arrays, batch)
    torch.manual_seed(1)
    trainer.train_one_step(*ob)
    torch.manual_seed(1)
    logs = corl.update(cb)
    rows = grad_rows(o, c)
    rows.append(loss_row("critic", o_out["critic_loss"][0], logs["critic/q_loss"]))
    o_cost = float(o_out["cost_critic_loss"][0])
    c_cost = logs["critic/qc_loss"] - logs["alpha"] * (logs["critic/qc_ood"] - corl.ood_thres)
    rows.append(loss_row("cost critic (with OOD term)", o_cost, c_cost))
    rows.append(loss_row("actor", o_out["actor_loss"][0], logs["actor/loss"]))
    rows.append(("log alpha after", abs(float(model.log_alpha) - float(corl.log_alpha)), abs(float(model.log_alpha))))
    return rows


CDT_NAMES = {
    "attention.": "attn.",
    "action_head.mu.": "mu.",
    "action_head.log_std.": "log_std.",
    "cost_pred_head.": "cost_head.",
}


def _cdt_name(name: str) -> str | None:
    if name.startswith("state_pred_head."):
        return None  # OSRL's next-state head has loss weight 0: no gradient, not in corl
    for a, b in CDT_NAMES.items():
        name = name.replace(a, b)
    return name


def cdt(data, arrays: dict, batch: int) -> list[tuple[str, float, float]]:
    from _osrl_cdt import osrl_cdt

    from corl.algos.cdt import CDTConfig, CDTLearner, CDTModel
    from corl.algos.cdt.data import WindowSampler, split_trajectories

    torch.manual_seed(0)
    a = data.act_dim
    model, trainer = osrl_cdt(data.obs_dim, a)
    net = CDTModel(data.obs_dim, a, seq_len=10, episode_len=300)
    corl = CDTLearner(CDTConfig(batch_size=batch), net)
    c_params = dict(net.named_parameters())
    names = [(n, _cdt_name(n)) for n, _ in model.named_parameters()]
    names = [(n, m) for n, m in names if m is not None]
    with torch.no_grad():
        for n, m in names:
            c_params[m].copy_(dict(model.named_parameters())[n])
    assert len(names) == len(c_params), "every corl CDT parameter has an OSRL counterpart"
    o, c = {}, {}
    o_params = dict(model.named_parameters())
    record(trainer.optim, o, "model", lambda: [o_params[n].grad for n, _ in names])
    record(corl.optimizer, c, "model", lambda: [c_params[m].grad for _, m in names])
    record(trainer.log_temperature_optimizer, o, "temperature", lambda: [model.log_temperature.grad])
    record(corl.temp_optimizer, c, "temperature", lambda: [corl.log_temperature.grad])
    sampler = WindowSampler(split_trajectories(data), 10, 0.1, 1.0)
    b = sampler.sample(batch, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    trainer.train_one_step(
        b["obs"], b["act"], b["rtg"], b["ctg"], b["timesteps"], b["mask"].float(), torch.zeros(batch), b["cost"]
    )
    torch.manual_seed(1)
    corl.update(b)
    return grad_rows(o, c)


def coptidice(data, arrays: dict, batch: int) -> list[tuple[str, float, float]]:
    import osrl.algorithms as oa

    from corl.algos.coptidice import COptiDICEConfig, COptiDICELearner, initial_flags

    init = initial_flags(data.episode_ends)
    p_init = float(init.mean())
    torch.manual_seed(0)
    model = oa.COptiDICE(
        data.obs_dim,
        data.act_dim,
        1.0,
        "softchi",
        p_init,
        arrays["observations"].std(0, keepdims=True),
        arrays["actions"].std(0, keepdims=True),
        [256, 256],
        [256, 256],
        num_nu=2,
        num_chi=2,
        cost_limit=10,
        episode_len=300,
    )
    model.setup_optimizers(1e-4, 1e-4, 1e-4)
    corl = COptiDICELearner(
        COptiDICEConfig(),
        data.obs_dim,
        data.act_dim,
        model.qc_thres,
        p_init,
        data.observations.std(0, unbiased=False),
        data.actions.std(0, unbiased=False),
    )
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
    ob = [
        torch.as_tensor(x, dtype=torch.float32)
        for x in (
            arrays["observations"][idx],
            arrays["next_observations"][idx],
            arrays["actions"][idx],
            arrays["rewards"][idx] * 0.1,
            arrays["costs"][idx],
            done[idx],
            init.numpy()[idx],
        )
    ]
    cb = {
        k: getattr(data, k)[torch.as_tensor(idx)]
        for k in ("observations", "actions", "rewards", "costs", "next_observations", "terminals", "timeouts")
    }
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
    parser.add_argument("--cdt-batch", type=int, default=256, help="CDT windows per batch (OSRL: 2048)")
    parser.add_argument(
        "--methods", nargs="+", default=["bcql", "bearl", "bcql-pid", "bearl-pid", "cpq", "coptidice", "cdt"]
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    from corl.data.store import load_task_dataset
    from corl.tasks import get_task

    data = load_task_dataset(get_task("OfflineCarCircle-v0"), path=args.dataset)
    arrays = {k: v.astype(np.float32) if v.dtype != bool else v for k, v in data.to_numpy().items()}
    table = Table(title="corl vs osrl-lib 0.1.0: one update, same weights, batch and RNG")
    for col in ("method", "quantity", "max |corl - OSRL|", "max |OSRL|"):
        table.add_column(col)
    methods = {
        "bcql": ("BCQ-Lag", bcql),
        "bearl": ("BEAR-Lag", bearl),
        "bcql-pid": ("BCQ-Lag, threshold -1", lambda *a: bcql(*a, pid_active=True)),
        "bearl-pid": ("BEAR-Lag, threshold -1", lambda *a: bearl(*a, pid_active=True)),
        "cpq": ("CPQ", cpq),
        "coptidice": ("COptiDICE", coptidice),
        "cdt": ("CDT", cdt),
    }
    worst = 0.0
    for key in args.methods:
        label, fn = methods[key]
        rows = fn(data, arrays, args.cdt_batch if key == "cdt" else args.batch)
        for name, diff, scale in rows:
            table.add_row(label, name, f"{diff:.2e}", f"{scale:.2e}")
            worst = max(worst, diff)
    Console().print(table)
    print(f"largest difference: {worst:.2e} ({'within' if worst <= 1e-5 else 'ABOVE'} 1e-5)")


if __name__ == "__main__":
    main()
