"""Locking: concurrent runs of one stage leave one valid artifact; a held lock is named; a
stale lock of a dead process is recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from _pipeline_util import TASK, TRAIN_ONLY_SPEC, run, write_dataset, write_spec

from corl.pipeline.progress import RunCallbacks
from corl.pipeline.runner import RunRequest, plan_pipeline, run_pipeline
from corl.store import artifacts as art
from corl.store.lock import ArtifactLock, LockHeld


def test_two_concurrent_runs_leave_one_valid_artifact(tmp_path):
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    overrides = ("bc.steps=300",)
    results, errors = [], []

    def go():
        try:
            results.append(run(spec, data, overrides))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    bc = sorted(r.stages[1].status for r in results)
    assert bc == ["cached", "ran"]  # one built it, the other waited and found it done
    assert results[0].stages[1].dir == results[1].stages[1].dir
    assert art.verify(results[0].stages[1].dir) is not None
    assert len(list((tmp_path / "checkpoints" / TASK).glob("bc-*"))) == 1


def test_held_lock_is_named_or_waited_for(tmp_path):
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    req = RunRequest(pipeline=str(spec), task=TASK, dataset=str(data), device="cpu", wait=False)
    plan = plan_pipeline(req)
    holder = ArtifactLock(plan.stage("bc").dir)
    holder.acquire()
    try:
        with pytest.raises(LockHeld) as info:
            run_pipeline(req)
        message = str(info.value)
        assert f"pid {os.getpid()}" in message and "\n" not in message
        waiting = []

        class Recorder(RunCallbacks):
            def message(self, text, level="info"):
                waiting.append(text)

        req.wait, req.lock_timeout = True, 0.5
        with pytest.raises(LockHeld, match="still locked"):
            run_pipeline(req, Recorder())
        assert any("waiting for bc-" in m and f"pid {os.getpid()}" in m for m in waiting)
    finally:
        holder.release()
    assert run_pipeline(req).stages[1].status == "ran"


def test_stale_lock_of_dead_process_is_recovered(tmp_path):
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    req = RunRequest(pipeline=str(spec), task=TASK, dataset=str(data), device="cpu", wait=False)
    bc_dir = plan_pipeline(req).stage("bc").dir
    # a process that took the lock and died without releasing it (as after kill -9)
    code = (
        "import sys; from pathlib import Path; from corl.store.lock import ArtifactLock; "
        f"ArtifactLock(Path({str(bc_dir)!r})).acquire(); import os; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    lock_file = bc_dir.with_name(f".{bc_dir.name}.lock")
    dead_pid = json.loads(lock_file.read_text())["pid"]
    messages = []

    class Recorder(RunCallbacks):
        def message(self, text, level="info"):
            messages.append(text)

    result = run_pipeline(req, Recorder())
    assert result.stages[1].status == "ran"
    assert any(f"recovered a stale lock of pid {dead_pid}" in m for m in messages)


def test_second_process_names_holder_then_waits_for_it(tmp_path):
    """A real second process: --no-wait names the holder's pid; waiting ends with the cached artifact."""
    import time

    from _pipeline_util import corl_cmd, subprocess_env

    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    overrides = ["bc.steps=1000", "bc.hidden=[32, 32]"]
    args = corl_cmd(
        "run", str(spec), "--task", TASK, "--dataset", str(data), "--device", "cpu", "--checkpoint-every", "20"
    )
    for item in overrides:
        args += ["--set", item]
    holder = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(tmp_path))
    try:
        deadline = time.monotonic() + 90
        root = tmp_path / "checkpoints" / TASK
        while not list(root.glob("bc-*/checkpoint.pt")):
            assert holder.poll() is None and time.monotonic() < deadline, "holder ended before checkpointing"
            time.sleep(0.05)
        req = RunRequest(
            pipeline=str(spec), task=TASK, dataset=str(data), overrides=overrides, device="cpu", wait=False
        )
        with pytest.raises(LockHeld, match=f"pid {holder.pid} "):
            run_pipeline(req)
        req.wait = True
        result = run_pipeline(req)
        assert result.stages[1].status == "cached"  # waited, then found the holder's finished artifact
        assert holder.wait(timeout=60) == 0
        assert art.verify(result.stages[1].dir) is not None
    finally:
        if holder.poll() is None:
            holder.kill()
