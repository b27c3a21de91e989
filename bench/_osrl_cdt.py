"""OSRL's CDT at its CarCircle defaults (``osrl-lib`` 0.1.0), for the benches that compare corl's
CDT with it: ``faithful_baselines.py`` (gradient parity) and ``speed_baselines.py`` (steps/s).
One place, so both compare against the same reference model."""

from __future__ import annotations


def osrl_cdt(obs_dim: int, act_dim: int):
    """``(model, trainer)``: OSRL's ``CDT`` and ``CDTTrainer`` as its CarCircle config builds them."""
    import osrl.algorithms as oa

    model = oa.CDT(
        obs_dim,
        act_dim,
        1.0,
        seq_len=10,
        episode_len=300,
        embedding_dim=128,
        num_layers=3,
        num_heads=8,
        attention_dropout=0.1,
        residual_dropout=0.1,
        embedding_dropout=0.1,
        use_rew=True,
        use_cost=True,
        cost_transform=True,
        action_head_layers=1,
        stochastic=True,
        init_temperature=0.1,
        target_entropy=-act_dim,
    )
    trainer = oa.CDTTrainer(
        model,
        None,
        learning_rate=1e-4,
        weight_decay=1e-4,
        betas=(0.9, 0.999),
        clip_grad=0.25,
        lr_warmup_steps=500,
        reward_scale=0.1,
        cost_scale=1.0,
        loss_cost_weight=0.02,
        loss_state_weight=0.0,
    )
    return model, trainer
