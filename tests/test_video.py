"""Headless video on this kind of machine: MuJoCo through EGL (a Safety-Gymnasium task made by
dsrl's Offline* id, whose render mode corl has to set itself), in a fresh process so that
``MUJOCO_GL`` is chosen before mujoco is imported, as ``corl eval --video`` does. The Bullet
path (TinyRenderer) is covered end to end by ``test_api.py::test_eval_video_writes_playable_files``."""

from __future__ import annotations

import json
import subprocess
import sys

from _pipeline_util import subprocess_env

SCRIPT = r"""
import json, os, sys
from pathlib import Path
os.environ.pop("MUJOCO_GL", None)
from corl.eval.video import prefer_egl, record, VideoOptions, expected_frames
prefer_egl()
import imageio.v3 as iio
import torch
from corl.tasks import get_task
task = get_task("OfflinePointGoal1Gymnasium-v0")
files = record(task, lambda obs: torch.zeros(obs.shape[0], task.act_dim), VideoOptions(1, every=250, size=(96, 64)),
               Path(sys.argv[1]), "zero", seed=3)
f = files[0]
frames = iio.imread(f.path)
print(json.dumps({"name": f.path.name, "shape": list(frames.shape), "length": f.length,
                  "expected": expected_frames(f.length, 250), "std": float(frames.std()),
                  "gl": os.environ.get("MUJOCO_GL")}))
"""


def test_mujoco_video_renders_offscreen(tmp_path):
    env = subprocess_env(tmp_path)
    env.pop("MUJOCO_GL", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "videos")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["gl"] == "egl" and out["length"] == 1000
    assert out["shape"] == [out["expected"], 64, 96, 3] == [4, 64, 96, 3]
    assert out["std"] > 0 and out["name"].startswith("zero-clean-ep0-reward") and out["name"].endswith(".mp4")
