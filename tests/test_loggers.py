"""``--logger tensorboard|wandb`` stream the run's metrics; without the flag neither is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _pipeline_util import TASK, TINY_SPEC, TRAIN_ONLY_SPEC, subprocess_env, write_dataset, write_spec


def _run(tmp_path, logger):
    import corl

    spec, data = write_spec(tmp_path, TINY_SPEC), write_dataset(tmp_path)
    return corl.run(
        str(spec), task=TASK, dataset=data, device="cpu", checkpoints=tmp_path / "checkpoints", logger=logger
    )


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One tiny run streamed to both loggers (W&B offline: no mode or key configured)."""
    base = tmp_path_factory.mktemp("loggers")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_MODE", "WANDB_API_KEY"):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("CORL_OFFLINE", "1")
        from corl.pipeline.loggers import wandb_mode

        assert wandb_mode() == "offline"
        result = _run(base, "tensorboard,wandb")
    return base / "checkpoints" / "logs", result


def test_tensorboard_event_file_holds_the_metric_names(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs, result = logged
    runs = list((logs / "tensorboard").iterdir())
    assert len(runs) == 1 and list(runs[0].glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    # the train loop's metric (every log_every=10 steps of 60) and the evaluation's final scores
    assert (
        "bc/bc/nll" in tags and "evaluate/final/normalized_reward" in tags and "evaluate/final/normalized_cost" in tags
    )
    assert [e.step for e in acc.Scalars("bc/bc/nll")] == list(range(10, 61, 10))
    assert acc.Scalars("evaluate/final/normalized_reward")[0].value == pytest.approx(
        result.final["evaluate/normalized_reward"], rel=1e-6
    )


def test_logs_are_not_artifacts(logged):
    """``corl cache prune`` must never take the loggers' output for an unreferenced artifact."""
    from corl.store.runs import scan_cache

    logs, _ = logged
    assert all(entry.task != "logs" for entry in scan_cache(logs.parent))


def test_wandb_runs_offline_and_records_the_metric_names(logged):
    logs, _ = logged
    runs = list((logs / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for name in (b"bc/bc/nll", b"bc/step", b"evaluate/final/normalized_reward"):
        assert name in records, name


def test_unknown_logger_is_one_line(tmp_path):
    from corl.errors import ConfigError

    with pytest.raises(ConfigError, match="--logger 'mlflow': expected tensorboard or wandb"):
        _run(tmp_path, "mlflow")


def test_without_logger_nothing_new_is_imported(tmp_path):
    """A whole ``corl run`` in a fresh process: tensorboard and wandb stay out of sys.modules
    (train-only spec: the simulator adds time, not imports of either)."""
    spec, data = write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)
    code = (
        "import sys\n"
        f"sys.argv = ['corl', 'run', {str(spec)!r}, '--task', {TASK!r}, '--dataset', {str(data)!r}, "
        f"'--device', 'cpu', '--checkpoints', {str(tmp_path / 'checkpoints')!r}]\n"
        "from corl.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'wandb', 'onnx', 'onnxruntime')"
        " or m == 'torch.utils.tensorboard')\n"
        "print('IMPORTED', bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout, done.stdout[-500:]
