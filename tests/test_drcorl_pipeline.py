"""The DRCORL stages (dynamics included) run end to end on a tiny dataset, a second run is all
cache hits, and the policy stage (iterate labels and best-offline selection included) resumes
exactly."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _pipeline_util import run, statuses, write_dataset, write_spec

SPEC = """
description = "drcorl test pipeline"

[checkpoint]
every_steps = 20
every_seconds = 600.0
log_every = 10

[stages.dataset]
kind = "dataset"

[stages.behavior]
kind = "drcorl_behavior"
inputs = ["dataset"]
steps = 30
batch_size = 32
width = 16
blocks = 1
time_dim = 8
fourier_features = 4

[stages.critics]
kind = "drcorl_critics"
inputs = ["dataset"]
steps = 30
batch_size = 32
hidden = [16, 16]

[stages.dynamics]
kind = "dynamics"
inputs = ["dataset"]
ensemble_size = 3
num_elites = 2
hidden = [16, 16]
weight_decays = [2.5e-5, 5e-5, 1e-4]
max_epochs = 2

[stages.policy]
kind = "drcorl_policy"
inputs = ["dataset", "behavior", "critics", "dynamics"]
hidden = [16, 16]
pretrain_epochs = 1
steps_per_pretrain_epoch = 10
train_epochs = 15
warmup_iters = 5
batch_size = 32
use_lagrangian = true
select_every = 5
model_horizon = 3
model_num_starts = 64
"""
POLICY = 4  # index of the policy stage in the runs' outcomes


def test_drcorl_stages_run_and_cache(tmp_path):
    spec, data = write_spec(tmp_path, SPEC, "drcorl.toml"), write_dataset(tmp_path)
    first = run(spec, data, checkpoints=str(tmp_path / "ck"))
    assert set(statuses(first).values()) == {"ran"}, statuses(first)
    policy_dir = first.stages[-1].dir
    payload = torch.load(policy_dir / "policy.pt", weights_only=True)
    assert any(k.startswith("net.") for k in payload["state_dict"])
    labels = json.loads((policy_dir / "iterates.json").read_text())["iterates"]
    assert [x["iteration"] for x in labels] == [5, 10, 15]  # every select_every safe iterations and the end
    for x in labels:  # each labelled iterate is a loadable policy with its model estimate
        assert math.isfinite(x["model_cost"]) and math.isfinite(x["model_reward"])
        assert (policy_dir / x["file"]).is_file()
    second = run(spec, data, checkpoints=str(tmp_path / "ck"))
    assert set(statuses(second).values()) == {"cached"}, statuses(second)


def test_policy_stage_ctrl_c_resume_is_exact(tmp_path, monkeypatch):
    """Interrupted inside the safe phase, the resumed policy stage ends with the same weights."""
    from _pipeline_util import TASK

    from corl.pipeline.context import InterruptFlag, TrainLoop
    from corl.pipeline.progress import RunCallbacks
    from corl.pipeline.runner import RunInterrupted, RunRequest, run_pipeline

    class InterruptAt(RunCallbacks):
        def __init__(self, flag, step):
            self.flag, self.step = flag, step

        def stage_progress(self, stage, done, total, metrics):
            if stage == "policy" and done >= self.step:
                self.flag.request()

    monkeypatch.setattr(TrainLoop, "PROGRESS_INTERVAL", 0.0)
    spec, data = write_spec(tmp_path, SPEC, "drcorl.toml"), write_dataset(tmp_path)
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
        run_pipeline(req, InterruptAt(flag, 17), interrupt=flag)  # 10 warm-start steps, then safe its
        raise AssertionError("the run was not interrupted")
    except RunInterrupted:
        pass
    resumed = run(spec, data, checkpoints=str(tmp_path / "resumed"))
    assert statuses(resumed)["policy"] == "ran" and resumed.stages[POLICY].resumed_from == 17
    for file in ("policy.pt", "policy-best-offline.pt", "iterates/iter-000005.pt", "iterates/iter-000015.pt"):
        ref = torch.load(reference.stages[POLICY].dir / file, weights_only=True)["state_dict"]
        got = torch.load(resumed.stages[POLICY].dir / file, weights_only=True)["state_dict"]
        assert all(torch.equal(ref[k], got[k]) for k in ref), file
    # the labels made before the interruption (iteration 5) came back from the checkpoint
    assert (reference.stages[POLICY].dir / "iterates.json").read_text() == (
        resumed.stages[POLICY].dir / "iterates.json"
    ).read_text()
    assert reference.stages[POLICY].metrics == resumed.stages[POLICY].metrics


def test_quick_preset_keeps_the_paper_method_and_a_safety_sized_evaluation():
    """`quick` shrinks sizes and changes only the documented settings (see the spec's comment)."""
    from _pipeline_util import REPO, TASK

    from corl.pipeline.spec import load_spec

    spec = load_spec(REPO / "pipelines" / "drcorl.toml")
    quick, full = spec.resolve(TASK, "quick"), spec.resolve(TASK, None)
    assert quick["evaluate"].episodes == quick["evaluate_best_offline"].episodes == 20  # DSRL's number
    assert quick["critics"].tau == 0.05 and full["critics"].tau == 0.005
    # the documented CPU-size settings (see the preset's comment), and the paper's elsewhere
    assert (quick["behavior"].lr, full["behavior"].lr) == (0.001, 3e-4)
    assert (quick["policy"].pretrain_lr, full["policy"].pretrain_lr) == (0.001, None)
    assert quick["policy"].regq and not full["policy"].regq
    assert quick["policy"].use_lagrangian and full["policy"].use_lagrangian  # CarCircle's script: Lagrangian
    assert (quick["policy"].lambda_mode, quick["policy"].lambda_fixed) == ("fixed", 5.0)
    assert (quick["policy"].beta_coef, full["policy"].beta_coef) == (0.003, 0.01)
    # session 8: a local safe phase from a BC-Safe start (corl options, off in the paper preset)
    settings = ("warm_start", "warm_start_episodes", "warmup_iters", "proximal_coef", "switch_rule", "estimate_anchor")
    assert [getattr(quick["policy"], k) for k in settings] == ["bc", "safe", 0, 1.0, "always_merge", "paired"]
    assert [getattr(full["policy"], k) for k in settings] == ["score", "all", 500, 0.0, "estimate", "none"]
    for key in (
        "cost_limit",
        "slack_bound",
        "switch_estimator",
        "critic_states",
        "beta_schedule",
        "weighting",
        "lr",
        "fix_cost_normalisation",
    ):
        assert getattr(quick["policy"], key) == getattr(full["policy"], key), key


EVALUATES = """
[stages.evaluate]
kind = "evaluate"
inputs = { policy = "policy" }
episodes = 1
num_envs = 1

[stages.evaluate_best_offline]
kind = "evaluate"
inputs = { policy = "policy" }
label = "best_offline"
policy_output = "best_offline_policy"
episodes = 1
num_envs = 1
"""


def test_policy_setting_reruns_only_policy_and_evaluate(tmp_path):
    """`--set policy.slack_bound=0.2` keeps behavior, critics and dynamics (a sweep reuses them)."""
    spec, data = write_spec(tmp_path, SPEC + EVALUATES, "drcorl.toml"), write_dataset(tmp_path)
    first = run(spec, data, checkpoints=str(tmp_path / "ck"))
    assert set(statuses(first).values()) == {"ran"}, statuses(first)
    swept = run(spec, data, overrides=("policy.slack_bound=0.2",), checkpoints=str(tmp_path / "ck"))
    assert statuses(swept) == {
        "dataset": "cached",
        "behavior": "cached",
        "critics": "cached",
        "dynamics": "cached",
        "policy": "ran",
        "evaluate": "ran",
        "evaluate_best_offline": "ran",
    }, statuses(swept)
    assert swept.stages[POLICY].dir != first.stages[POLICY].dir


def test_best_offline_iterate_is_labelled_and_evaluated_beside_the_final(tmp_path):
    """The policy stage publishes best_offline/... model metrics and a second policy file; the
    second evaluate stage scores it as best_offline/..., never in place of final/..."""
    from corl.store.policies import load_policy_fn

    spec, data = write_spec(tmp_path, SPEC + EVALUATES, "drcorl.toml"), write_dataset(tmp_path)
    result = run(spec, data, overrides=("policy.switch_estimator=model",), checkpoints=str(tmp_path / "ck"))
    policy = result.stages[POLICY]
    doc = json.loads((policy.dir / "iterates.json").read_text())
    best = next(x for x in doc["iterates"] if x["iteration"] == doc["best_offline_iteration"])
    assert policy.metrics["best_offline/iteration"] == best["iteration"]
    assert policy.metrics["best_offline/model_cost"] == pytest.approx(best["model_cost"])
    assert policy.metrics["best_offline/model_reward"] == pytest.approx(best["model_reward"])
    assert policy.metrics["final/iteration"] == 15
    ref = torch.load(policy.dir / best["file"], weights_only=True)["state_dict"]
    got = torch.load(policy.dir / "policy-best-offline.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    from corl.store.artifacts import verify

    outputs = verify(policy.dir).outputs
    fn = load_policy_fn(policy.dir, outputs["best_offline_policy"])  # the final policy's loader
    assert fn(torch.zeros(3, 8)).shape == (3, 2)
    scores = result.scores
    assert "evaluate_best_offline/normalized_cost" in scores["best_offline"]
    assert (
        "evaluate/normalized_cost" in scores["final"] and "evaluate_best_offline/normalized_cost" not in scores["final"]
    )
    assert scores["best_offline"]["policy/model_cost"] == pytest.approx(best["model_cost"])
    episodes = json.loads((result.stages[-1].dir / "episodes.json").read_text())
    assert episodes["policy_output"] == "best_offline_policy"


def test_dynamics_stage_is_micros_and_shared_with_the_micro_pipeline(tmp_path):
    """drcorl's `dynamics` is MICRO's stage kind (MICRO's ensemble code) and, with equal
    settings, one cached artifact: a micro run's model is a cache hit for drcorl."""
    from _pipeline_util import REPO, TASK

    from corl.algos.micro.dynamics import GaussianEnsembleDynamics
    from corl.pipeline.registry import get_stage_kind
    from corl.pipeline.spec import load_spec
    from corl.pipeline.stages.micro import dynamics_stage, load_dynamics

    drcorl, micro = load_spec(REPO / "pipelines" / "drcorl.toml"), load_spec(REPO / "pipelines" / "micro.toml")
    assert drcorl.stages["dynamics"].kind is micro.stages["dynamics"].kind
    assert get_stage_kind("dynamics").fn is dynamics_stage
    assert drcorl.stages["policy"].inputs["dynamics"] == "dynamics"
    for preset in (None, "quick"):  # the shipped specs resolve to the same settings: one key
        assert drcorl.resolve(TASK, preset)["dynamics"] == micro.resolve(TASK, preset)["dynamics"], preset

    micro_spec = write_spec(
        tmp_path,
        SPEC.split("[stages.behavior]")[0].replace("drcorl test", "micro test")
        + SPEC[SPEC.index("[stages.dynamics]") : SPEC.index("[stages.policy]")],
        "micro.toml",
    )
    spec, data = write_spec(tmp_path, SPEC, "drcorl.toml"), write_dataset(tmp_path)
    first = run(micro_spec, data, checkpoints=str(tmp_path / "ck"))
    assert statuses(first) == {"dataset": "ran", "dynamics": "ran"}
    second = run(spec, data, checkpoints=str(tmp_path / "ck"))
    assert statuses(second)["dynamics"] == "cached" and second.stages[3].dir == first.stages[1].dir
    from corl.store.artifacts import verify

    assert isinstance(load_dynamics(verify(second.stages[3].dir)), GaussianEnsembleDynamics)


def test_corl_eval_prints_model_estimate_and_rank_correlation(tmp_path, monkeypatch, capsys):
    """`corl eval drcorl` evaluates final and best-offline, prints the model estimate beside the
    simulator's numbers, and the Spearman correlation over the iterates it rolled out."""
    import sys

    from _pipeline_util import TASK

    from corl.cli import main
    from corl.eval.iterates import pick_iterates, spearman

    root = tmp_path / "ck"
    spec, data = write_spec(tmp_path, SPEC + EVALUATES, "drcorl.toml"), write_dataset(tmp_path)
    result = run(spec, data, checkpoints=str(root))
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "corl",
            "eval",
            "drcorl",
            "--task",
            TASK,
            "--episodes",
            "1",
            "--num-envs",
            "1",
            "--iterates",
            "3",
            "--checkpoints",
            str(root),
        ],
    )
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr()
    out = capsys.readouterr().out
    assert "model estimate (offline) vs simulator" in out and "Spearman rank correlation" in out
    assert "best_offline" in out
    policy_dir = result.stages[POLICY].dir
    final = json.loads((policy_dir / "eval" / "eval.json").read_text())
    best = json.loads((policy_dir / "eval-best_offline" / "eval.json").read_text())
    doc = json.loads((policy_dir / "iterates.json").read_text())
    assert final["model_estimate"]["iteration"] == 15 and best["policy"]["checkpoint"] == "best_offline"
    assert best["model_estimate"]["iteration"] == doc["best_offline_iteration"]
    rows = final["iterates"]["iterates"]
    assert [r["iteration"] for r in rows] == [5, 10, 15]
    assert rows[-1]["sim_cost"] == final["clean"]["cost"]  # same env seeds as the final policy's episodes
    assert final["iterates"]["spearman_cost"]["n"] == 3
    # the helpers on known values
    labels = [{"iteration": i} for i in (5, 10, 15, 20, 25, 30, 35)]
    assert [x["iteration"] for x in pick_iterates(labels, 3, keep=[10])] == [5, 10, 20, 35]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45])["rho"] == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1])["rho"] == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2])["rho"] is None


def test_labelling_iterates_leaves_the_trained_policy_unchanged(tmp_path):
    """With or without the dynamics input (model labels every 5 iterations), the critic-switched
    policy stage trains the same policy, bit for bit: the estimate draws from its own generator
    and loading the ensemble does not touch the global RNG."""
    bare_spec = SPEC.replace(
        'inputs = ["dataset", "behavior", "critics", "dynamics"]', 'inputs = ["dataset", "behavior", "critics"]'
    )
    data = write_dataset(tmp_path)
    with_model = run(write_spec(tmp_path, SPEC, "drcorl.toml"), data, checkpoints=str(tmp_path / "a"))
    without = run(write_spec(tmp_path, bare_spec, "bare.toml"), data, checkpoints=str(tmp_path / "b"))
    assert not (without.stages[POLICY].dir / "iterates.json").exists()
    ref = torch.load(without.stages[POLICY].dir / "policy.pt", weights_only=True)["state_dict"]
    got = torch.load(with_model.stages[POLICY].dir / "policy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_model_options_are_checked_and_model_switch_needs_dynamics(tmp_path):
    from corl.errors import CorlError
    from corl.pipeline.stages.drcorl import PolicyStageConfig

    for bad in (
        {"model_start_states": "replay"},
        {"model_horizon": 0},
        {"model_pessimism": -1.0},
        {"select_every": -1},
        {"switch_estimator": "simulator"},
    ):
        with pytest.raises(ValueError):
            PolicyStageConfig(**bad)
    bare_spec = SPEC.replace(
        'inputs = ["dataset", "behavior", "critics", "dynamics"]', 'inputs = ["dataset", "behavior", "critics"]'
    )
    with pytest.raises(CorlError, match="switch_estimator = 'model' needs a dynamics input"):
        run(
            write_spec(tmp_path, bare_spec, "bare.toml"),
            write_dataset(tmp_path),
            overrides=("policy.switch_estimator=model",),
            checkpoints=str(tmp_path / "ck"),
        )


def test_behavior_on_safe_episodes_fits_only_them_and_keeps_the_critics(tmp_path):
    """``behavior.episodes = "safe"`` fits the diffusion model on the episodes within the cost
    limit (BC-Safe's rows) and reuses the critics; no safe episode is one clear error."""
    from corl.data.io import read_dataset
    from corl.errors import CorlError

    spec, data = write_spec(tmp_path, SPEC, "drcorl.toml"), write_dataset(tmp_path)
    costs = read_dataset(data).episode_returns()["cost"]
    limit = float(sorted(costs)[len(costs) // 2])  # about half the episodes are safe
    first = run(spec, data, checkpoints=str(tmp_path / "ck"))
    assert first.stages[1].metrics["behavior/episodes"] == len(costs)
    safe = run(
        spec,
        data,
        overrides=('behavior.episodes="safe"', f"behavior.cost_limit={limit}"),
        checkpoints=str(tmp_path / "ck"),
    )
    assert statuses(safe)["behavior"] == "ran" and statuses(safe)["critics"] == "cached", statuses(safe)
    assert safe.stages[1].metrics["behavior/episodes"] == int((costs <= limit).sum()) < len(costs)
    assert costs.min() > 0  # the test data's episodes all have some cost
    with pytest.raises(CorlError, match="behavior: no episode of the dataset has cost <= "):
        run(
            spec,
            data,
            overrides=('behavior.episodes="safe"', f"behavior.cost_limit={costs.min() / 2}"),
            checkpoints=str(tmp_path / "ck"),
        )
    with pytest.raises((ValueError, CorlError), match="episodes"):
        run(spec, data, overrides=('behavior.episodes="unsafe"',), checkpoints=str(tmp_path / "ck"))


@pytest.mark.parametrize(
    "anchor", ["policy.estimate_anchor=warm_start", "policy.estimate_anchor=paired,policy.proximal_coef=1.0"]
)
def test_bc_warm_start_on_safe_episodes_with_the_anchored_estimate(tmp_path, anchor):
    """The corl options ``warm_start=bc``, ``warm_start_episodes=safe``, ``estimate_anchor`` (both
    forms) and ``proximal_coef`` run end to end; a limit no episode meets is one clear error."""
    from corl.errors import CorlError

    spec, data = write_spec(tmp_path, SPEC + EVALUATES, "drcorl.toml"), write_dataset(tmp_path)
    options = ("policy.warm_start=bc", "policy.warm_start_episodes=safe", *anchor.split(","))
    result = run(spec, data, overrides=(*options, "policy.cost_threshold=12.5"), checkpoints=str(tmp_path / "ck"))
    metrics = result.stages[POLICY].metrics
    assert math.isfinite(metrics["cost_estimate"])
    with pytest.raises(CorlError, match="warm_start_episodes 'safe' found no episode with cost <= 0.5"):
        run(spec, data, overrides=(*options, "policy.cost_threshold=0.5"), checkpoints=str(tmp_path / "ck"))
