"""DRCORL's per-task paper table exists twice (``corl.algos.drcorl.config.PAPER_TASKS`` for
scripts and ``[tasks.*]`` in ``pipelines/drcorl.toml`` for ``corl run``): they must agree."""

from __future__ import annotations

from pathlib import Path

import tomllib

from corl.algos.drcorl import PAPER_TASKS, paper_config
from corl.pipeline.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "pipelines" / "drcorl.toml"


def test_the_toml_task_table_is_the_paper_table():
    spec = load_spec(SPEC)
    table = tomllib.loads(SPEC.read_text())["tasks"]
    assert set(table) == set(PAPER_TASKS)
    for task in PAPER_TASKS:
        paper = paper_config(task)
        resolved = spec.resolve(task, "paper")
        for stage, learner in (("critics", paper.critics), ("policy", paper.policy)):
            given = table[task].get(stage, {})
            assert given, (task, stage)
            for key, value in given.items():
                assert getattr(learner, key) == value, (task, stage, key)
                assert getattr(resolved[stage], key) == value, (task, stage, key)
        # what the TOML leaves to the stage: the PID multiplier and the task's episode length
        assert resolved["policy"].lambda_mode == paper.policy.lambda_mode
