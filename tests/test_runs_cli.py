"""``corl runs`` for humans (80 columns, labels, --show/--json/--plot/--pipeline/--task),
``corl eval`` refusing to guess between differently-set runs, labelled metric names, and the
quick presets' evaluation sizes."""

from __future__ import annotations

import json
import sys

import pytest
import tomllib
from _pipeline_util import REPO, TASK, TINY_SPEC, run, write_dataset, write_spec


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A BC-All run and a BC-Safe run (``--set bc.mode=safe``) of a tiny spec named ``bc``."""
    base = tmp_path_factory.mktemp("runs_cli")
    root = base / "checkpoints"
    dataset = write_dataset(base)
    spec = write_spec(base, TINY_SPEC, name="bc.toml")
    all_run = run(spec, dataset, checkpoints=str(root))
    safe_run = run(spec, dataset, ('bc.mode="safe"', "bc.cost_limit=20.0"), checkpoints=str(root))
    assert all_run.status == safe_run.status == "ok"
    return root, all_run, safe_run


def corl(monkeypatch, capsys, *args: str, columns: int = 200) -> tuple[int, str, str]:
    from corl.cli import main

    monkeypatch.setattr(sys, "argv", ["corl", *args])
    monkeypatch.setenv("COLUMNS", str(columns))
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _id(result) -> str:
    from corl.store.runs import short_id

    return short_id({"_path": str(result.record_path)})


def test_runs_fit_80_columns_one_line_each(two_runs, monkeypatch, capsys):
    root, all_run, safe_run = two_runs
    code, out, err = corl(monkeypatch, capsys, "runs", "--checkpoints", str(root), columns=80)
    assert code == 0, err
    lines = out.rstrip("\n").splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert len(lines) == 2 + 2  # title, header, one line per run
    safe_line = next(line for line in lines if line.startswith(_id(safe_run)))
    all_line = next(line for line in lines if line.startswith(_id(all_run)))
    assert "BC-Safe" in safe_line and "BC-All" in all_line  # the two are told apart
    assert "3 ran" in all_line and "1 cached, 2 ran" in safe_line
    assert "final" in lines[1] and "best" in lines[1]


def test_runs_show_json_and_filters(two_runs, monkeypatch, capsys):
    root, all_run, safe_run = two_runs
    code, out, _ = corl(monkeypatch, capsys, "runs", "--show", _id(safe_run), "--checkpoints", str(root))
    assert code == 0 and 'bc.mode="safe"' in out and "BC-Safe" in out and str(safe_run.record_path) in out
    code, out, _ = corl(monkeypatch, capsys, "runs", "--json", "--checkpoints", str(root))
    rows = json.loads(out)
    assert {r["id"] for r in rows} == {_id(all_run), _id(safe_run)}
    assert next(r for r in rows if r["id"] == _id(safe_run))["overrides"] == ['bc.mode="safe"', "bc.cost_limit=20.0"]
    code, out, _ = corl(monkeypatch, capsys, "runs", "--json", "--pipeline", "drcorl", "--checkpoints", str(root))
    assert json.loads(out) == []
    code, out, _ = corl(monkeypatch, capsys, "runs", "--json", "--task", TASK, "--checkpoints", str(root))
    assert len(json.loads(out)) == 2
    code, _, err = corl(monkeypatch, capsys, "runs", "--show", "zzzzzz", "--checkpoints", str(root))
    assert code == 2 and "no run 'zzzzzz'" in err and len(err.strip().splitlines()) == 1


def test_runs_plot_lists_and_redraws_curves(two_runs, monkeypatch, capsys, tmp_path):
    root, all_run, _ = two_runs
    bc_dir = next(o.dir for o in all_run.stages if o.name == "bc")
    png = bc_dir / "training_curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    png.unlink()  # an artifact from before curves existed: --plot draws it
    code, out, err = corl(monkeypatch, capsys, "runs", "--plot", _id(all_run), "--checkpoints", str(root))
    assert code == 0, err and str(png) in out and png.is_file()
    code, out, _ = corl(
        monkeypatch, capsys, "runs", "--plot", _id(all_run), "-o", str(tmp_path / "pngs"), "--checkpoints", str(root)
    )
    copied = list((tmp_path / "pngs").glob("*.png"))
    assert code == 0 and len(copied) == 1 and copied[0].read_bytes() == png.read_bytes()


def test_eval_refuses_to_guess_between_settings(two_runs, monkeypatch, capsys):
    root, all_run, safe_run = two_runs
    code, _, err = corl(
        monkeypatch, capsys, "eval", "bc", "--task", TASK, "--episodes", "1", "--checkpoints", str(root)
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert _id(all_run) in err and _id(safe_run) in err and "BC-All" in err and "BC-Safe" in err and "--run" in err
    code, out, err = corl(
        monkeypatch,
        capsys,
        "eval",
        "--run",
        _id(safe_run),
        "--episodes",
        "1",
        "--num-envs",
        "1",
        "--checkpoints",
        str(root),
    )
    assert code == 0, err
    assert "1 episodes in total, spread over 1 env" in out and "episodes x" not in out


def test_metric_names_are_labelled():
    """MICRO's critic and actor losses never print as two bare ``loss=``."""
    from corl.cli.progress import format_metrics

    text = format_metrics({"train/critic/loss": 1.0, "train/actor/loss": 2.0, "train/alpha/value": 0.1, "steps": 3})
    assert "critic/loss=1" in text and "actor/loss=2" in text and text.count(" loss=") == 0
    assert format_metrics({"train/bc/nll": 0.5}) == "nll=0.5"


def test_quick_presets_evaluate_the_same_number_of_episodes():
    """Every pipeline with an ``evaluate`` stage: its quick preset scores 20 episodes (DSRL's
    number), so quick numbers of different methods compare."""
    counts = {}
    for path in sorted((REPO / "pipelines").glob("*.toml")):
        spec = tomllib.loads(path.read_text())
        evaluate = [name for name, stage in spec.get("stages", {}).items() if stage.get("kind") == "evaluate"]
        for name in evaluate:
            quick = spec.get("presets", {}).get("quick", {}).get(name, {})
            counts[path.stem] = quick.get("episodes", spec["stages"][name].get("episodes"))
    assert {"bc", "micro", "drcorl"} <= set(counts)
    assert {name: n for name, n in counts.items() if n != 20} == {}
