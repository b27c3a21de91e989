"""Resume: Ctrl-C (in-process and SIGINT to a real process) and SIGKILL mid-training continue
from the last checkpoint, reach the full step count, and (in-process) match an uninterrupted
run exactly."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from _pipeline_util import TASK, TRAIN_ONLY_SPEC, corl_cmd, run, statuses, subprocess_env, write_dataset, write_spec

from corl.pipeline.checkpoint import Checkpointer
from corl.pipeline.context import InterruptFlag
from corl.pipeline.progress import RunCallbacks
from corl.pipeline.runner import RunInterrupted, RunRequest, run_pipeline

STEPS = 400


def _metric_steps(artifact_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (artifact_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(artifact_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(artifact_dir / "policy.pt", weights_only=True)["state_dict"]


class InterruptAt(RunCallbacks):
    """Presses Ctrl-C (sets the flag) once the bc stage has reported ``step`` steps."""

    def __init__(self, flag: InterruptFlag, step: int) -> None:
        self.flag, self.step = flag, step

    def stage_progress(self, stage, done, total, metrics):
        if stage == "bc" and done >= self.step:
            self.flag.request()


def test_ctrl_c_in_process_saves_and_resume_is_exact(tmp_path, monkeypatch):
    from corl.pipeline.context import TrainLoop

    monkeypatch.setattr(TrainLoop, "PROGRESS_INTERVAL", 0.0)  # report every step
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    overrides = (f"bc.steps={STEPS}",)
    reference = run(spec, data, overrides, checkpoints=str(tmp_path / "reference"))

    flag = InterruptFlag()
    req = RunRequest(
        pipeline=str(spec),
        task=TASK,
        dataset=str(data),
        overrides=list(overrides),
        device="cpu",
        checkpoint_every_steps=10_000,
    )
    with pytest.raises(RunInterrupted) as info:
        run_pipeline(req, InterruptAt(flag, 123), interrupt=flag)
    assert info.value.exit_code == 130
    assert "checkpoint saved at step 123" in str(info.value) and "resume with: corl run" in str(info.value)
    bc_dir = reference.stages[1].dir.parent.parent.parent / "checkpoints" / TASK / reference.stages[1].dir.name
    assert not (bc_dir / "manifest.json").exists()
    assert torch.load(bc_dir / "checkpoint.pt", weights_only=True)["step"] == 123

    resumed = run(spec, data, overrides)
    outcome = resumed.stages[1]
    assert statuses(resumed) == {"dataset": "cached", "bc": "ran"}
    assert outcome.resumed_from == 123
    manifest = json.loads((bc_dir / "manifest.json").read_text())
    assert manifest["steps"] == STEPS and manifest["resumed_from"] == 123
    steps = _metric_steps(bc_dir)
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    ref, got = _weights(reference.stages[1].dir), _weights(bc_dir)
    assert all(torch.equal(ref[k], got[k]) for k in ref)  # exact resume
    assert manifest["final_metrics"]["train/bc/nll"] == pytest.approx(
        json.loads((reference.stages[1].dir / "manifest.json").read_text())["final_metrics"]["train/bc/nll"]
    )


def _start(tmp_path: Path, spec: Path, data: Path, steps: int) -> subprocess.Popen:
    return subprocess.Popen(
        corl_cmd(
            "run",
            str(spec),
            "--task",
            TASK,
            "--dataset",
            str(data),
            "--device",
            "cpu",
            "--set",
            f"bc.steps={steps}",
            "--set",
            "bc.hidden=[32, 32]",
            "--checkpoint-every",
            "25",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(tmp_path),
        cwd=tmp_path,
    )


def _wait_for_checkpoint(root: Path, proc: subprocess.Popen, timeout: float = 90.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(root.glob(f"{TASK}/bc-*/checkpoint.pt"))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"run ended before a checkpoint: {proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_killed_process_resumes_from_checkpoint(tmp_path, how):
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    steps = 800
    root = tmp_path / "checkpoints"
    proc = _start(tmp_path, spec, data, steps)
    ckpt = _wait_for_checkpoint(root, proc)
    time.sleep(0.3)  # let it train a little past the first checkpoint
    proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    if how == "sigkill":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, out
        assert "resume with: corl run" in out
    saved = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < saved < steps
    assert not (ckpt.parent / "manifest.json").exists()

    resumed = run(spec, data, (f"bc.steps={steps}", "bc.hidden=[32, 32]"))
    bc = resumed.stages[1]
    assert bc.status == "ran" and bc.resumed_from == saved > 0
    manifest = json.loads((bc.dir / "manifest.json").read_text())
    assert manifest["steps"] == steps
    metric_steps = _metric_steps(bc.dir)
    assert metric_steps == sorted(set(metric_steps)) and metric_steps[-1] == steps


def test_checkpointer_time_trigger_and_bad_file(tmp_path):
    ck = Checkpointer(tmp_path, every_steps=0, every_seconds=0.01)
    assert not ck.due(1) or True
    time.sleep(0.02)
    assert ck.due(1)
    ck.save(5, {"w": torch.ones(2)})
    assert ck.load()["step"] == 5
    ck.path.write_bytes(b"garbage")
    assert ck.load() is None and not ck.path.exists()
