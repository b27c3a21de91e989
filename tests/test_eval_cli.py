"""``corl eval`` end to end on a tiny bc run: numbers in eval.json, PNGs, eps=0 == clean, errors.

One tiny bc pipeline is trained once per module (the spec file is named ``bc.toml`` so its
runs are recorded as pipeline ``bc``); every command goes through ``corl.cli.main``, the real
entry point, so exit codes and one-line errors are what a user sees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _pipeline_util import TASK, TINY_SPEC, run, write_dataset, write_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(cache root, run result) of a tiny bc run on a tiny dataset (obs 8, act 2 like CarCircle)."""
    base = tmp_path_factory.mktemp("eval_cli")
    root = base / "checkpoints"
    dataset = write_dataset(base)
    spec = write_spec(base, TINY_SPEC, name="bc.toml")
    result = run(spec, dataset, checkpoints=str(root))
    assert result.status == "ok"
    return root, result


def corl(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``corl ARGS`` in-process through the console entry point; (exit code, stdout, stderr)."""
    from corl.cli import main

    monkeypatch.setattr(sys, "argv", ["corl", *args])
    monkeypatch.setenv("COLUMNS", "200")
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_bc_writes_json_and_pngs(trained, monkeypatch, capsys):
    root, result = trained
    code, out, err = corl(
        monkeypatch,
        capsys,
        "eval",
        "bc",
        "--task",
        TASK,
        "--episodes",
        "2",
        "--num-envs",
        "2",
        "--sim2real",
        "mass=0.5,1",
        "--attack",
        "random",
        "--eps",
        "0,0.05",
        "--cost-limits",
        "10,20",
        "--checkpoints",
        str(root),
    )
    assert code == 0, err
    policy_dir = next(o.dir for o in result.stages if o.name == "bc")
    path = policy_dir / "eval" / "eval.json"
    data = json.loads(path.read_text())
    assert data["command"].startswith("corl eval bc --task") and data["seed"] == 0 and data["env_seeds"] == [0, 1]
    assert data["policy"]["checkpoint"] == "final" and data["policy"]["label"] == "BC-All"
    clean = data["clean"]
    assert clean["episodes"] == 2 and len(clean["episode_reward"]) == 2
    from corl.eval.scores import normalized_reward
    from corl.tasks import get_task

    norm = normalized_reward(get_task(TASK), np.array(clean["episode_reward"]))
    assert clean["normalized_reward"] == pytest.approx(norm.mean()) and clean["normalized_reward_std"] == pytest.approx(
        norm.std()
    )
    assert clean["normalized_cost"] == pytest.approx(np.mean(clean["episode_cost"]) / data["cost_limit"])
    assert isinstance(clean["safe"], bool)
    # the DSRL thresholds: no policy trained at 20, so the run's own one is judged there (and says so)
    per = {r["cost_limit"]: r for r in data["cost_limits"]["per_limit"]}
    assert per[20.0]["trained_at_this_limit"] is False and per[20.0]["episode_cost"] == clean["episode_cost"]
    # eps = 0 reproduces the clean score exactly (same seeds, unchanged observations)
    eps0, eps1 = data["attack"]["cells"]
    assert eps0["eps"] == 0.0 and eps0["equals_clean"] is True
    for key in ("episode_reward", "episode_cost", "normalized_reward", "normalized_cost"):
        assert eps0[key] == clean[key]
    assert eps1["eps"] == 0.05 and eps1["episodes"] == 2
    src = data["attack"]["obs_std_source"]
    assert src["sha256"] == result.dataset["sha256"] and len(src["std"]) == 8
    cells = data["sim2real"]["cells"]
    assert [c["scales"] for c in cells] == [{"mass": 0.5}, {"mass": 1.0}] and all(c["episodes"] == 2 for c in cells)
    for name in ("attack_random.png", "sim2real_mass.png"):
        png = policy_dir / "eval" / name
        assert png.read_bytes()[:8] == PNG_MAGIC
    assert "clean" in out and "sim2real mass=0.5" in out and "random eps=0.05" in out


def test_min_q_with_a_critic_file_and_selection_by_run_and_artifact(trained, monkeypatch, capsys, tmp_path):
    from corl.nn.critics import EnsembleQ

    root, result = trained
    torch.manual_seed(0)
    critic = tmp_path / "q.pt"
    torch.save({"critic": EnsembleQ(8, 2, 2, (16, 16)).state_dict()}, critic)
    run_id = Path(str(result.record_path)).stem
    code, out, err = corl(
        monkeypatch,
        capsys,
        "eval",
        "--run",
        run_id[:20],
        "--episodes",
        "1",
        "--attack",
        "min_Q",
        "--eps",
        "0,0.1",
        "--critic",
        str(critic),
        "--out",
        str(tmp_path / "out"),
        "--checkpoints",
        str(root),
    )
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert data["policy"]["run_id"] == run_id and data["attack"]["critic"]["members"] == 2
    assert data["attack"]["cells"][0]["equals_clean"] is True
    evaluate_dir = next(o.dir for o in result.stages if o.name == "evaluate")
    code, out, err = corl(
        monkeypatch,
        capsys,
        "eval",
        "--artifact",
        str(evaluate_dir),
        "--episodes",
        "1",
        "--out",
        str(tmp_path / "out2"),
        "--checkpoints",
        str(root),
    )
    assert code == 0, err
    data = json.loads((tmp_path / "out2" / "eval.json").read_text())
    assert data["policy"]["kind"] == "bc" and data["clean"]["episodes"] == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval", "bcc", "--task", TASK], "unknown pipeline 'bcc'"),
        (["eval", "bc", "--task", "OfflineBallCircle-v0"], "no finished bc run for task OfflineBallCircle-v0"),
        (
            ["eval", "bc", "--task", TASK, "--sim2real", "viscosity=0.5,1"],
            "supported: friction, gravity, mass, actuator",
        ),
        (["eval", "bc", "--task", TASK, "--sim2real", "mass=0.5:1"], "bad sim2real scales"),
        (["eval", "bc", "--task", TASK, "--attack", "min_Q", "--eps", "0,0.1"], "min_Q attack needs a Q critic"),
        (["eval", "bc", "--task", TASK, "--attack", "random", "--eps", "0:x:3"], "bad --eps"),
    ],
)
def test_errors_are_one_line_exit_2(trained, monkeypatch, capsys, args, needle):
    root, _ = trained
    code, out, err = corl(monkeypatch, capsys, *args, "--checkpoints", str(root))
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


def test_critic_loader_reads_every_layout(tmp_path):
    from corl.errors import CorlError
    from corl.eval.critics import build_ensemble_q, load_critic_file
    from corl.nn.critics import EnsembleQ

    torch.manual_seed(0)
    q = EnsembleQ(8, 2, 3, (16, 8), layer_norm=True)
    obs, act = torch.randn(5, 8), torch.randn(5, 2)
    rebuilt = build_ensemble_q(q.state_dict())
    assert torch.equal(rebuilt(obs, act), q(obs, act))
    # a DRCORL-style learner state: q_r wins over its target and over q_c
    other = EnsembleQ(8, 2, 2, (16, 8))
    torch.save(
        {"q_c": other.state_dict(), "q_r_target": other.state_dict(), "q_r": q.state_dict(), "step": 3},
        tmp_path / "critics.pt",
    )
    loaded = load_critic_file(tmp_path / "critics.pt")
    assert loaded.num_q == 3 and loaded.in_dim == 10 and torch.equal(loaded(obs, act), q(obs, act))
    torch.save({"nothing": torch.zeros(3)}, tmp_path / "empty.pt")
    with pytest.raises(CorlError, match="no EnsembleQ critic"):
        load_critic_file(tmp_path / "empty.pt")


def test_final_and_best_checkpoints_are_reported_apart(trained, monkeypatch, capsys, tmp_path):
    """A stage that also keeps a best checkpoint gets two labelled entries, never a silent pick."""
    import shutil

    root, result = trained
    src = next(o.dir for o in result.stages if o.name == "bc")
    copy = tmp_path / src.parent.name / src.name
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("eval*"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["outputs"]["best_policy"] = dict(manifest["outputs"]["policy"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = corl(
        monkeypatch, capsys, "eval", "--artifact", str(copy), "--episodes", "1", "--checkpoints", str(root)
    )
    assert code == 0, err
    final = json.loads((copy / "eval" / "eval.json").read_text())
    best = json.loads((copy / "eval-best" / "eval.json").read_text())
    assert final["policy"]["checkpoint"] == "final" and best["policy"]["checkpoint"] == "best"
    assert best["policy"]["label"] == "BC-All (best)" and "best" in out


def test_verdict_lines_say_whether_the_first_policy_is_safe_and_beats_the_others():
    """``corl eval A B`` (``make demo``) ends with one sentence per other policy."""
    from types import SimpleNamespace

    from corl.cli.eval import verdict_lines

    def ev(label, reward, cost, safe):
        return SimpleNamespace(
            data={
                "policy": {"label": label},
                "clean": {"normalized_reward": reward, "normalized_cost": cost, "safe": safe},
            }
        )

    lines = verdict_lines([ev("DRCORL", 0.05, 0.3, True), ev("BC-Safe", 0.13, 0.9, True)], "normalized_reward")
    assert lines == ["DRCORL: safe (normalized cost 0.30 <= 1); it earns 0.050, less than BC-Safe (0.130, safe)."]
    lines = verdict_lines(
        [ev("DRCORL", 0.2, 1.5, False), ev("BC-Safe", 0.13, 0.9, True), ev("BC-All", 0.3, 2.0, False)],
        "normalized_reward",
    )
    assert lines == [
        "DRCORL: unsafe (normalized cost 1.50 > 1); it earns 0.200, more than BC-Safe (0.130, safe).",
        "DRCORL: unsafe (normalized cost 1.50 > 1); it earns 0.200, less than BC-All (0.300, unsafe).",
    ]
    assert verdict_lines([ev("DRCORL", 0.05, 0.3, True)], "normalized_reward") == []


def test_eval_of_two_pipelines_ends_with_the_verdict(trained, monkeypatch, capsys):
    root, _ = trained
    base = root.parent
    second = run(write_spec(base, TINY_SPEC, name="bc2.toml"), write_dataset(base), checkpoints=str(root))
    assert second.status == "ok"
    code, out, err = corl(
        monkeypatch,
        capsys,
        "eval",
        "bc",
        "bc2",
        "--task",
        TASK,
        "--episodes",
        "2",
        "--num-envs",
        "2",
        "--checkpoints",
        str(root),
    )
    assert code == 0, err
    verdict = [line for line in out.splitlines() if line.startswith("BC-All: ")]
    assert len(verdict) == 1, out
    assert " than BC-All (" in verdict[0] or " as much as BC-All (" in verdict[0], verdict
