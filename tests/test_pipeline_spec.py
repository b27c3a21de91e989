"""Spec loading and validation: every error path is one line naming the file and the key."""

from __future__ import annotations

import subprocess

import pytest
from _pipeline_util import TASK, TINY_SPEC, corl_cmd, subprocess_env, write_dataset, write_spec

from corl.errors import ConfigError
from corl.pipeline.spec import dependents, load_spec, parse_value


def _error(tmp_path, text: str) -> str:
    path = write_spec(tmp_path, text, "bad.toml")
    with pytest.raises(ConfigError) as info:
        load_spec(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_valid_spec_orders_stages_and_resolves_layers(tmp_path):
    spec = load_spec(str(write_spec(tmp_path)))
    assert spec.order == ["dataset", "bc", "evaluate"]
    assert spec.checkpoint.every_steps == 50
    configs = spec.resolve(TASK, "tiny", ["bc.lr=0.01", "evaluate.episodes=2"])
    assert configs["bc"].steps == 30 and configs["bc"].lr == 0.01 and configs["bc"].hidden == [16, 16]
    assert configs["evaluate"].episodes == 2
    assert dependents(spec, "bc") == {"evaluate"}
    assert dependents(spec, "dataset") == {"bc", "evaluate"}


def test_shipped_bc_spec_loads():
    spec = load_spec("bc")
    assert set(spec.presets) >= {"paper", "quick"}
    quick = spec.resolve(TASK, "quick")
    assert quick["bc"].cost_limit == 10.0 and quick["bc"].steps < spec.resolve(TASK, "paper")["bc"].steps


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda t: t.replace("[checkpoint]", "stagez = 1\n[checkpoint]"),
            "stagez: unknown key (did you mean 'stages'?)",
        ),
        (
            lambda t: t.replace('kind = "bc"', 'kind = "bcc"'),
            "stages.bc.kind: unknown stage kind 'bcc' (did you mean 'bc'",
        ),
        (
            lambda t: t.replace('inputs = ["dataset"]', 'inputs = ["datset"]'),
            "stages.bc.inputs: no stage 'datset' (did you mean 'dataset'?)",
        ),
        (
            lambda t: t.replace('inputs = { policy = "bc" }', 'inputs = { model = "bc" }'),
            "stages.evaluate.inputs: missing input 'policy'",
        ),
        (
            lambda t: t.replace("steps = 60", "stpes = 60"),
            "stages.bc.stpes: unknown key for stage kind 'bc' (did you mean 'steps'?)",
        ),
        (lambda t: t.replace("steps = 60", 'steps = "many"'), "stages.bc.steps: expected an integer"),
        (
            lambda t: t.replace("[presets.tiny.bc]", "[presets.tiny.bcx]"),
            "presets.tiny.bcx: no stage 'bcx' (did you mean 'bc'?)",
        ),
        (
            lambda t: t.replace("[presets.tiny.bc]\nsteps = 30", "[presets.tiny.bc]\nlr = true"),
            "presets.tiny.bc.lr: expected a number",
        ),
        (
            lambda t: t + '\n[tasks."OfflineCarCircle-v9".bc]\nsteps = 3\n',
            "tasks.OfflineCarCircle-v9: unknown task 'OfflineCarCircle-v9' (did you mean 'OfflineCarCircle-v0'?)",
        ),
        (
            lambda t: t.replace("every_steps = 50", "every_step = 50"),
            "checkpoint.every_step: unknown key (did you mean 'every_steps'?)",
        ),
        (lambda t: t.replace("[stages.dataset]\nkind", '[stages.dataset]\ninputs = ["bc"]\nkind'), "dependency cycle"),
        (lambda t: t.replace('kind = "evaluate"\n', ""), "stages.evaluate.kind: missing"),
        (lambda t: t + "\n[stages.x\n", "invalid TOML"),
    ],
    ids=[
        "top-key",
        "kind",
        "input-name",
        "input-role",
        "config-key",
        "type",
        "preset-stage",
        "preset-type",
        "task-name",
        "checkpoint-key",
        "cycle",
        "no-kind",
        "toml",
    ],
)
def test_spec_errors_are_one_line(tmp_path, edit, expected):
    assert expected in _error(tmp_path, edit(TINY_SPEC))


def test_cycle_names_the_path(tmp_path):
    text = TINY_SPEC.replace(
        '[stages.dataset]\nkind = "dataset"', '[stages.dataset]\nkind = "dataset"\ninputs = ["evaluate"]'
    )
    message = _error(tmp_path, text)
    assert "->" in message and "evaluate" in message and "bc" in message


def test_override_and_preset_errors(tmp_path):
    spec = load_spec(str(write_spec(tmp_path)))
    cases = {
        "bc.stpes=3": "--set bc.stpes=3: stage 'bc' (bc) has no key 'stpes' (did you mean 'steps'?)",
        "bcc.steps=3": "--set bcc.steps=3: no stage 'bcc'",
        "steps=3": "--set steps=3: expected stage.key=value",
        "bc.steps=abc": "stages.bc.steps: expected an integer, got 'abc'",
    }
    for item, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            spec.resolve(TASK, None, [item])
        assert expected in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no preset 'quik' \\(did you mean 'quick'|no preset 'quik'"):
        spec.resolve(TASK, "quik")
    with pytest.raises(ConfigError, match="unknown pipeline 'bcx' \\(did you mean 'bc'"):
        load_spec("bcx")


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("[64, 64]") == [64, 64] and parse_value("safe") == "safe" and parse_value("none") is None


def test_cli_spec_error_exits_2_with_one_line(tmp_path):
    spec = write_spec(tmp_path)
    data = write_dataset(tmp_path)
    proc = subprocess.run(
        corl_cmd("run", str(spec), "--task", TASK, "--dataset", str(data), "--set", "bc.stpes=3"),
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'steps'" in lines[0]
