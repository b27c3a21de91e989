"""The online-collection stages (cvpo_train / mice_train -> export) end to end, on tiny runs.

Why real simulator runs: the point of these stages is a file that corl, dsrl and Minari all
accept and a training stage that survives a kill; both only show with real episodes. Sizes are
a few hundred env steps (SafetyCarCircle-v0, 300-step episodes) with 16-unit networks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _pipeline_util import corl_cmd, statuses, subprocess_env  # noqa: E402

TASK = "SafetyCarCircle-v0"

SPEC = """
description = "tiny online collection"

[checkpoint]
every_steps = 300
every_seconds = 600.0
log_every = 10

[stages.train]
kind = "cvpo_train"
steps = {steps}
hidden = [16, 16]
batch_size = 32
sample_action_num = 8
episodes_per_round = 1
update_per_step = {ups}

[stages.export]
kind = "export"
inputs = {{ episodes = "train" }}
"""


def write_spec(tmp_path: Path, steps: int = 600, ups: float = 0.02) -> Path:
    path = tmp_path / "online.toml"
    path.write_text(SPEC.format(steps=steps, ups=ups))
    return path


def run(spec: Path, overrides: tuple[str, ...] = ()):
    from corl.pipeline.runner import RunRequest, run_pipeline

    return run_pipeline(RunRequest(pipeline=str(spec), task=TASK, overrides=list(overrides), device="cpu"))


def outputs(result, stage: str) -> dict:
    outcome = next(o for o in result.stages if o.name == stage)
    return json.loads((outcome.dir / "manifest.json").read_text())["outputs"]


def test_cvpo_collects_exports_and_caches(tmp_path, monkeypatch):
    spec = write_spec(tmp_path)
    first = run(spec, ("train.cost_limits=[10.0, 20.0]",))  # DSRL's recipe: one learner per limit, pooled
    assert statuses(first) == {"train": "ran", "export": "ran"}
    out = outputs(first, "export")
    path = Path(out["path"])
    assert path.parent == (tmp_path / "datasets").resolve() and path.name.startswith(f"{TASK}-cvpo-")

    from corl.data.hashing import file_sha256
    from corl.data.io import read_dataset

    assert out["sha256"] == file_sha256(path)
    data = read_dataset(path, obs_dim=8, act_dim=2)  # what `corl datasets validate` checks
    assert len(data) == 1200 and data.num_episodes == 4 and out["episodes"] == 4
    with h5py.File(path, "r") as handle:  # per-episode metadata next to the transitions
        eps = {k: v[()] for k, v in handle["episodes"].items()}
    assert eps["cost_limit"].tolist() == [10.0, 10.0, 20.0, 20.0]
    assert eps["learner"].tolist() == [0, 0, 1, 1]
    assert eps["training_step"][0] == 0 and eps["training_step"][1] > 0
    assert np.allclose(eps["cost"], data.episode_returns()["cost"])

    from corl.compat import import_dsrl

    import_dsrl()
    import gymnasium

    env = gymnasium.make("OfflineCarCircle-v0", disable_env_checker=True).unwrapped
    loaded = env.get_dataset(h5path=str(path))
    assert loaded["observations"].shape == (1200, 8) and loaded["costs"].shape == (1200,)

    train_dir = next(o.dir for o in first.stages if o.name == "train")
    rows = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    episodes = [r for r in rows if "episode_reward" in r]
    assert [r["step"] for r in episodes] == [300, 600, 900, 1200]
    assert {"episode_cost", "cost_limit", "training_step", "seed", "cum_violations"} <= set(episodes[0])
    assert (train_dir / "learning_curve.png").stat().st_size > 1000

    from corl.pipeline.stages.export import find_export
    from corl.tasks import get_task

    assert find_export(get_task("OfflineCarCircle-v0"), "cvpo") == path  # the lookup behind dataset.source=cvpo

    # each learner's actor is published as a policy that evaluation can load and roll out
    train_out = outputs(first, "train")
    assert [p["cost_limit"] for p in train_out["policies"]] == [10.0, 20.0]
    assert train_out["policy"] == train_out["policies"][-1]
    from corl.eval.rollout import rollout
    from corl.store.policies import load_policy_fn

    policy_fn = load_policy_fn(train_dir, train_out["policy"])
    result = rollout(get_task(TASK), policy_fn, episodes=1, seed=0, num_envs=1, device="cpu")
    assert result.length.tolist() == [300]

    second = run(spec, ("train.cost_limits=[10.0, 20.0]",))
    assert statuses(second) == {"train": "cached", "export": "cached"}

    # another dataset store: the export writes there (not served from the cache), training is reused
    monkeypatch.setenv("CORL_DATASETS", str(tmp_path / "other_store"))
    third = run(spec, ("train.cost_limits=[10.0, 20.0]",))
    assert statuses(third) == {"train": "cached", "export": "ran"}
    moved = Path(outputs(third, "export")["path"])
    assert moved.parent == (tmp_path / "other_store").resolve() and file_sha256(moved) == out["sha256"]


def test_train_stage_resumes_after_kill(tmp_path):
    steps = 1800
    spec = write_spec(tmp_path, steps=steps, ups=0.03)
    env = subprocess_env(tmp_path)
    evals = ("--set", "train.eval_every=600", "--set", "train.eval_episodes=1")  # their state resumes too
    proc = subprocess.Popen(
        corl_cmd("run", str(spec), "--task", TASK, "--device", "cpu", *evals),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    root = tmp_path / "checkpoints" / TASK
    deadline = time.monotonic() + 60
    saved = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(root.glob("cvpo_train-*/checkpoint.pt"))
            if found:  # wait for a save that holds several episodes (their metadata must load back)
                try:
                    saved = int(torch.load(found[0], weights_only=True)["step"])
                except FileNotFoundError:
                    saved = 0
                if saved >= 900:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before a checkpoint: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not list(root.glob("cvpo_train-*/manifest.json"))

    result = run(spec, ("train.eval_every=600", "train.eval_episodes=1"))
    train = next(o for o in result.stages if o.name == "train")
    assert train.status == "ran" and train.resumed_from == saved
    manifest = json.loads((train.dir / "manifest.json").read_text())
    assert manifest["steps"] == steps and manifest["outputs"]["env_steps"] == steps
    # saves land on episode boundaries (fixed 300-step episodes), so no episode is lost
    assert manifest["outputs"]["episodes"] == steps // 300
    rows = [json.loads(line) for line in (train.dir / "metrics.jsonl").read_text().splitlines()]
    ep_steps = [r["step"] for r in rows if "episode_reward" in r]
    assert ep_steps == list(range(300, steps + 1, 300))  # lines after the checkpoint were redone, not doubled
    assert [r["learner_step"] for r in rows if "eval_reward" in r] == [600, 1200, 1800]
    assert not list(train.dir.glob(".episodes-*"))  # the spill files are gone once episodes.hdf5 exists


def test_minari_export_loads(tmp_path):
    import minari

    spec = write_spec(tmp_path)
    result = run(spec, ("export.format=minari",))
    out = outputs(result, "export")
    ds = minari.load_dataset(out["dataset_id"])
    assert ds.total_episodes == 2 and ds.total_steps == 600
    episode = next(iter(ds.iterate_episodes()))
    assert len(episode.rewards) == 300
    assert out["episode_metadata"] is True
    from corl.data.formats.minari import import_minari

    back = import_minari(out["dataset_id"])
    assert len(back) == 600 and float(back.costs.sum()) >= 0.0


MICE_SPEC = """
description = "tiny mice"

[checkpoint]
every_steps = 100000
every_seconds = 600.0
log_every = 10

[stages.train]
kind = "mice_train"
steps = 1200
num_envs = 1
hidden = [16, 16]
steps_per_epoch = 300
update_iters = 1
batch_size = 150

[stages.export]
kind = "export"
inputs = { episodes = "train" }
"""


def test_mice_ctrl_c_mid_episode_then_resume(tmp_path):
    """Ctrl-C saves mid-episode; the resumed run restarts the open episode and still ends at
    the configured env-step count, with violations logged per episode."""
    from corl.pipeline.context import InterruptFlag
    from corl.pipeline.progress import RunCallbacks
    from corl.pipeline.runner import RunInterrupted, RunRequest, run_pipeline

    spec = tmp_path / "mice.toml"
    spec.write_text(MICE_SPEC)
    flag = InterruptFlag()

    class StopMidEpisode(RunCallbacks):
        def stage_progress(self, stage, done, total, metrics):
            if stage == "train" and done >= 450:
                flag.request()

    req = RunRequest(pipeline=str(spec), task=TASK, device="cpu")
    with pytest.raises(RunInterrupted):
        run_pipeline(req, StopMidEpisode(), interrupt=flag)
    result = run_pipeline(req)
    train = next(o for o in result.stages if o.name == "train")
    assert train.status == "ran" and train.resumed_from >= 450
    manifest = json.loads((train.dir / "manifest.json").read_text())
    assert manifest["outputs"]["env_steps"] == 1200
    rows = [json.loads(line) for line in (train.dir / "metrics.jsonl").read_text().splitlines()]
    episodes = [r for r in rows if "episode_reward" in r]
    assert len(episodes) == manifest["outputs"]["episodes"] >= 2
    assert all("cum_violations" in r for r in episodes)
    out = json.loads((next(o for o in result.stages if o.name == "export").dir / "manifest.json").read_text())[
        "outputs"
    ]
    assert out["episodes"] == len(episodes)


def test_ctrl_c_in_second_learner_keeps_the_first_learners_episodes(tmp_path):
    """cost_limits trains learners in sequence; an interrupt in the second keeps the first's
    episodes (spilled to disk) and the resumed run restarts only the open episode."""
    from corl.pipeline.context import InterruptFlag
    from corl.pipeline.progress import RunCallbacks
    from corl.pipeline.runner import RunInterrupted, RunRequest, run_pipeline

    spec = write_spec(tmp_path)
    flag = InterruptFlag()

    class StopInSecondLearner(RunCallbacks):
        def stage_progress(self, stage, done, total, metrics):
            if stage == "train" and done > 600:
                flag.request()

    req = RunRequest(pipeline=str(spec), task=TASK, device="cpu", overrides=["train.cost_limits=[10.0, 20.0]"])
    with pytest.raises(RunInterrupted):
        run_pipeline(req, StopInSecondLearner(), interrupt=flag)
    result = run_pipeline(req)
    train = next(o for o in result.stages if o.name == "train")
    assert 600 < train.resumed_from < 900
    with h5py.File(train.dir / "episodes.hdf5", "r") as handle:
        limits = handle["episodes/cost_limit"][()].tolist()
        rows = handle["rewards"].shape[0]
    assert limits == [10.0, 10.0, 20.0] and rows == 900  # the interrupted episode is not recorded
    # the first learner finished before the interruption: its policy survives the resume
    specs = json.loads((train.dir / "manifest.json").read_text())["outputs"]["policies"]
    assert [p["cost_limit"] for p in specs] == [10.0, 20.0]


def test_periodic_evaluation_points_best_policy_and_unchanged_episodes(tmp_path):
    """eval_every: deterministic test episodes logged per learner, the best feasible iterate
    published beside the final one, and the recorded training episodes exactly as without it."""
    spec = write_spec(tmp_path, steps=900, ups=0.05)
    base = ("train.cost_limit=1000.0",)  # every evaluation feasible: the best is the highest reward
    with_eval = run(spec, base + ("train.eval_every=300", "train.eval_episodes=2"))
    plain = run(spec, base)
    dirs = {
        name: next(o.dir for o in res.stages if o.name == "train")
        for name, res in (("eval", with_eval), ("plain", plain))
    }
    assert dirs["eval"] != dirs["plain"]

    rows = [json.loads(line) for line in (dirs["eval"] / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_reward" in r]
    assert [r["learner_step"] for r in evals] == [300, 600, 900]  # the final point is not repeated
    assert all(r["eval_episodes"] == 2 and r["eval_cost"] >= 0 for r in evals)

    out = outputs(with_eval, "train")
    (best,) = out["best_policies"]
    top = max(evals, key=lambda r: r["eval_reward"])
    assert best["eval_reward"] == pytest.approx(top["eval_reward"]) and best["learner_step"] == top["learner_step"]
    assert best["file"] == "policy-1000-best.pt" and (dirs["eval"] / best["file"]).is_file()
    manifest = json.loads((dirs["eval"] / "manifest.json").read_text())
    assert manifest["final_metrics"]["best/eval_reward"] == pytest.approx(top["eval_reward"])
    assert manifest["final_metrics"]["eval/last_reward"] == pytest.approx(np.mean([r["eval_reward"] for r in evals]))

    # the best iterate loads and replays its own evaluation: same seeds, deterministic actions
    from corl.eval.rollout import rollout
    from corl.pipeline.stages.online_eval import EVAL_SEED_OFFSET
    from corl.store.policies import load_policy_fn
    from corl.tasks import get_task

    replay = rollout(
        get_task(TASK), load_policy_fn(dirs["eval"], best), episodes=2, seed=EVAL_SEED_OFFSET, num_envs=2, device="cpu"
    )
    assert replay.reward.mean() == pytest.approx(best["eval_reward"], rel=1e-4, abs=1e-4)

    # evaluations draw from no training generator and no training simulator
    with h5py.File(dirs["eval"] / "episodes.hdf5") as a, h5py.File(dirs["plain"] / "episodes.hdf5") as b:
        for key in ("observations", "actions", "rewards", "costs"):
            np.testing.assert_array_equal(a[key][()], b[key][()])
