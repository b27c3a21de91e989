"""The Python API, end to end: the README's example as written, ``corl export`` files that act
like corl without corl, and ``corl eval --video``.

One BC quick run on the bundled CarCircle sample (the README's own call) serves every test in
this module: it is the slow part (a few thousand updates and 20 evaluation episodes).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _pipeline_util import REPO, TASK

README = REPO / "README.md"
MARKER = "<!-- api-example"


def readme_example() -> str:
    text = README.read_text()
    start = text.index(MARKER)
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block, "README: no python block after the api-example marker"
    return block.group(1)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README example's namespace, run with its own cache root (and the bundled sample)."""
    base = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORL_CHECKPOINTS", str(base / "checkpoints"))
        mp.setenv("CORL_DATASETS", str(base / "datasets"))
        mp.setenv("DSRL_DATASET_DIR", str(base / "dsrl"))
        mp.setenv("CORL_OFFLINE", "1")
        namespace: dict = {}
        exec(compile(readme_example(), str(README), "exec"), namespace)  # noqa: S102 (our own README)
    namespace["root"] = base / "checkpoints"
    return namespace


def test_readme_example_runs(example):
    import corl

    run = example["run"]
    assert isinstance(run, corl.Run) and run.status == "ok" and len(run.id) == 6
    assert {"dataset", "bc", "evaluate"} <= set(run.artifacts)
    assert run.final["evaluate/episodes"] == 20  # the quick preset's evaluation
    scores = example["report"].scores()
    assert len(scores) == 1 and next(iter(scores.values()))["episodes"] == 4
    assert example["actions"].shape == (1000, 2) and example["actions"].dtype == np.float32
    assert np.all(np.abs(example["actions"]) <= 1.0)
    assert math.isfinite(example["episode_reward"])
    # the bc stage drew its training curves beside its weights, outside the hashed content
    bc_dir = run.artifacts["bc"]
    assert (bc_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "training_curves.png" not in json.loads((bc_dir / "manifest.json").read_text())["files"]
    # the same policy by short id, by artifact directory, and one observation at a time
    by_id = corl.load_policy(run.id, checkpoints=example["root"])
    by_dir = corl.load_policy(bc_dir, checkpoints=example["root"])
    obs = example["data"].observations[:7].numpy()
    np.testing.assert_array_equal(by_id(obs), example["policy"](obs))
    np.testing.assert_allclose(by_dir(obs[0]), example["policy"](obs)[0], rtol=0, atol=1e-6)  # batch of 1 vs 7


def test_api_errors_are_corl_errors(example):
    import corl
    from corl.errors import CorlError

    with pytest.raises(CorlError, match="no run 'nope'"):
        corl.load_policy("nope", checkpoints=example["root"])
    with pytest.raises(CorlError, match="bc.nope"):
        corl.plan("bc", task=TASK, overrides={"bc.nope": 1}, checkpoints=example["root"])
    with pytest.raises(CorlError, match="takes observations of shape"):
        example["policy"](np.zeros(3))


LOADER = r"""
import json, sys
import numpy as np
fmt, path, obs_path, out_path = sys.argv[1:]
obs = np.load(obs_path)
if fmt == "torchscript":
    import torch
    actions = torch.jit.load(path)(torch.as_tensor(obs)).detach().numpy()
else:
    import onnxruntime
    actions = onnxruntime.InferenceSession(path).run(["action"], {"obs": obs})[0]
np.save(out_path, actions)
print(json.dumps({"corl_imported": any(m == "corl" or m.startswith("corl.") for m in sys.modules)}))
"""


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_reproduces_corl_actions_without_corl(example, fmt, tmp_path):
    """``corl export`` files, loaded by plain torch / onnxruntime in a process that never
    imports corl (and cannot: its path does not include the repository), act like corl."""
    from corl.cli import main

    run, root = example["run"], example["root"]
    argv = ["corl", "export", run.id, "--format", fmt, "-o", str(tmp_path / "out"), "--checkpoints", str(root)]
    old = sys.argv
    sys.argv = argv
    try:
        main()
    finally:
        sys.argv = old
    suffix = {"torchscript": ".pt", "onnx": ".onnx"}[fmt]
    files = list((tmp_path / "out").glob(f"*{suffix}"))
    assert len(files) == 1
    card = json.loads(files[0].with_name(files[0].name + ".json").read_text())
    assert card["task"] == TASK and card["format"] == fmt and card["label"] == "BC-Safe"
    assert card["observation_space"] == {"shape": [8], "normalized_inside": True}
    assert card["action_space"]["low"] == [-1.0, -1.0] and card["action_space"]["high"] == [1.0, 1.0]
    assert card["dataset"]["sha256"] == run.dataset["sha256"]
    assert card["training"]["kind"] == "bc" and card["training"]["key"] in str(run.artifacts["bc"])
    assert card["scores_at_export"]["evaluate/normalized_reward"] == run.final["evaluate/normalized_reward"]

    obs = example["data"].observations[:1000].numpy().astype(np.float32)
    assert obs.shape == (1000, 8)
    np.save(tmp_path / "obs.npy", obs)
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(script), fmt, str(files[0]), str(tmp_path / "obs.npy"), str(tmp_path / "act.npy")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"corl_imported": False}
    exported = np.load(tmp_path / "act.npy")
    expected = example["policy"](obs)
    assert exported.shape == expected.shape == (1000, 2)
    np.testing.assert_allclose(exported, expected, atol=1e-5, rtol=0)


def test_every_policy_builder_exports_alike(tmp_path):
    """Each builder's deployable module equals its ``act(deterministic=True)`` on normalised
    observations (then clipped), and both file formats reproduce it."""
    import onnxruntime
    import torch

    from corl.export.deployable import DeployablePolicy, LoadedPolicy
    from corl.export.writer import write_onnx, write_torchscript
    from corl.nn import DeterministicPolicy, TanhGaussianPolicy
    from corl.nn.policies import CholeskyGaussianPolicy, DiagGaussianPolicy

    torch.manual_seed(0)
    low, high = [-1.0, -2.0], [1.0, 0.5]
    obs = torch.randn(256, 5) * 3
    for cls in (TanhGaussianPolicy, DeterministicPolicy, DiagGaussianPolicy, CholeskyGaussianPolicy):
        module = cls(5, 2, [16, 16], act_low=low, act_high=high).eval()
        mean, std = torch.randn(5), torch.rand(5) + 0.5
        deployable = DeployablePolicy(module, mean, std, low, high).eval().requires_grad_(False)
        want = module.act((obs - mean) / std, deterministic=True).clamp(torch.tensor(low), torch.tensor(high))
        got = deployable(obs)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        loaded = LoadedPolicy(deployable, cls.__name__, 5, 2, low, high, tmp_path, {})
        ts = torch.jit.load(str(write_torchscript(loaded, tmp_path / f"{cls.__name__}.pt")))(obs)
        onnx_path = write_onnx(loaded, tmp_path / f"{cls.__name__}.onnx")
        ox = onnxruntime.InferenceSession(str(onnx_path)).run(["action"], {"obs": obs.numpy()})[0]
        torch.testing.assert_close(ts, got, rtol=0, atol=1e-5)
        np.testing.assert_allclose(ox, got.numpy(), rtol=0, atol=1e-5)


def test_eval_video_writes_playable_files(example, monkeypatch, capsys):
    """``corl eval --video 2``: two MP4s with the episode's reward and cost in the name, the
    expected number of frames (one per ``--video-every`` steps) at the asked size."""
    import imageio.v3 as iio

    from corl.cli import main
    from corl.eval.video import expected_frames

    run, root = example["run"], example["root"]
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "corl",
            "eval",
            "--run",
            run.id,
            "--episodes",
            "1",
            "--num-envs",
            "1",
            "--video",
            "2",
            "--video-every",
            "30",
            "--video-size",
            "160x120",
            "--checkpoints",
            str(root),
        ],
    )
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    data = json.loads((run.artifacts["bc"] / "eval" / "eval.json").read_text())
    videos = data["videos"]
    assert len(videos) == 2 and [v["env_seed"] for v in videos] == [0, 1]
    for v in videos:
        path = Path(v["path"])
        assert path.suffix == ".mp4" and path.is_file()
        assert f"reward{v['reward']:.1f}-cost{v['cost']:.1f}" in path.name
        frames = iio.imread(path)
        assert frames.shape == (expected_frames(v["length"], 30), 120, 160, 3) == (10, 120, 160, 3)
        assert frames.std() > 0  # a picture, not a blank
