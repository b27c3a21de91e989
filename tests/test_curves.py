"""Training curves from metrics.jsonl: which metrics are drawn, and the reward/cost panels
(with the cost limit) for a stage that evaluates."""

from __future__ import annotations

import json

from corl.pipeline.curves import cost_limits_of, layout, loss_keys, plot_training_curves


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9')  # torn last line (a kill)


def test_losses_are_picked_by_name_and_bookkeeping_is_not(tmp_path):
    rows = [
        {"step": s, "critic/loss": 1.0 / s, "actor/loss": -s, "alpha/value": 0.1, "learner": 0, "seed": 3}
        for s in range(1, 6)
    ]
    assert loss_keys(rows) == ["critic/loss", "actor/loss"]
    assert loss_keys([{"step": 1, "dynamics/holdout_mse": 0.5, "dynamics/epochs": 1}]) == ["dynamics/holdout_mse"]
    assert loss_keys([{"step": 1, "value": 2.0}]) == ["value"]  # no loss-like name: the numbers it has
    metrics = tmp_path / "metrics.jsonl"
    _write(metrics, rows)
    out = plot_training_curves(metrics, tmp_path / "curves.png", "t")
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"


def test_an_evaluating_stage_gets_reward_and_cost_panels_with_its_limit(tmp_path):
    rows = []
    for s in range(1, 31):
        rows.append(
            {
                "step": s * 100,
                "episode": s,
                "learner": 0,
                "cost_limit": 10.0,
                "episode_reward": float(s),
                "episode_cost": float(30 - s),
            }
        )
        if s % 10 == 0:
            rows.append({"step": s * 100, "eval_reward": float(s), "eval_cost": 5.0})
        rows.append({"step": s * 100, "learner": 0, "loss_pi": 0.5, "loss_q": 1.0 / s})
    metrics = tmp_path / "metrics.jsonl"
    _write(metrics, rows)
    panels, pair, limits = layout(rows, [])
    assert panels == [("loss", "loss_pi"), ("loss", "loss_q"), ("reward", "episode_reward"), ("cost", "episode_cost")]
    assert pair[0] == "episode_reward" and limits == [10.0]  # the limit the episodes ran under, dashed
    assert layout([{"step": 1, "eval_reward": 1.0, "eval_cost": 2.0}], [25.0])[0] == [
        ("reward", "eval_reward"),
        ("cost", "eval_cost"),
    ]
    out = plot_training_curves(metrics, tmp_path / "curves.png", "t")
    assert out is not None and out.stat().st_size > 0
    assert cost_limits_of({"cost_limits": [10.0, 20.0]}, {"cost_limit": 5.0}) == [10.0, 20.0]
    assert cost_limits_of({}, {"cost_limit": 5.0}) == [5.0]
    assert plot_training_curves(tmp_path / "missing.jsonl", tmp_path / "none.png", "t") is None
