"""Issue 14: odd arguments, broken caches and bad files end in one clear line (exit 2), and
nothing finished is ever lost. Numbers in the test names are the issue's items."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _cli_util import assert_one_line, corl  # noqa: E402
from _pipeline_util import TASK, TRAIN_ONLY_SPEC, run, statuses, write_dataset, write_spec  # noqa: E402

from corl.errors import ConfigError, CorlError  # noqa: E402
from corl.pipeline.runner import RunRequest, plan_pipeline  # noqa: E402
from corl.store import artifacts as art  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(tmp_path):
    return write_spec(tmp_path, TRAIN_ONLY_SPEC), write_dataset(tmp_path)


def plan_statuses(spec: Path, dataset: Path, **kwargs) -> dict[str, str]:
    req = RunRequest(pipeline=str(spec), task=TASK, dataset=str(dataset), device="cpu", **kwargs)
    return {s.name: s.status for s in plan_pipeline(req).stages}


def artifact_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / TASK).iterdir() if p.is_dir() and not p.name.startswith("."))


# ----------------------------------------------------------------------------------- 0
def _published_scores(kind: str, cfg, task) -> dict[str, float]:
    """The ``final/``/``best/`` metrics a stage kind publishes, from the code that makes them."""
    from corl.eval.scores import summarize

    if kind == "evaluate":  # corl/pipeline/stages/evaluate.py
        rng = np.random.default_rng(0)
        return summarize(
            task,
            rng.normal(100, 10, 3),
            rng.uniform(0, 20, 3),
            np.full(3, 300),
            cfg.cost_limit or task.cost_limit,
            task.cost_limits,
            prefix=f"{cfg.label}/",
        )
    if kind in ("cvpo_train", "mice_train"):  # corl/pipeline/stages/online.py, end of the train stage
        out = {"final/reward": 1.0, "final/cost": 2.0, "final/episodes": 3.0}
        if cfg.eval_every > 0:
            out.update({"best/eval_reward": 190.0, "best/eval_cost": 4.0, "best/learner_step": 3000.0})
        return out
    return {}


#: Kinds that publish no final/best scores (their metrics are training facts).
UNSCORED = {
    "dataset",
    "bc",
    "drcorl_behavior",
    "drcorl_critics",
    "drcorl_policy",
    "dynamics",
    "micro_policy",
    "export",
    "vae",
    "behavior",
    "bcql",
    "bearl",
    "cpq",
    "coptidice",
    "cdt",
    "fisor",
}


def test_0_summary_prints_every_label_of_every_shipped_preset(capsys, monkeypatch, tmp_path):
    """The carcircle preset's periodic evaluation reached the summary without an episode count
    and crashed it after 220 s of training; every preset's labels must print."""
    from corl.pipeline import runner
    from corl.pipeline.runner import RunResult, StageOutcome
    from corl.pipeline.spec import available_pipelines, load_spec
    from corl.tasks import get_task

    printed: dict[tuple[str, str | None], str] = {}
    for name in available_pipelines():
        spec = load_spec(REPO / "pipelines" / f"{name}.toml")
        task = get_task("SafetyCarCircle-v0" if name in ("cvpo", "mice") else TASK)
        for preset in [None, *spec.presets]:
            configs = spec.resolve(task.name, preset)
            outcomes = []
            for stage, sspec in spec.stages.items():
                assert sspec.kind.name in UNSCORED or sspec.kind.name in ("evaluate", "cvpo_train", "mice_train"), (
                    f"new stage kind {sspec.kind.name!r}: add what it publishes to _published_scores"
                )
                metrics = _published_scores(sspec.kind.name, configs[stage], task)
                outcomes.append(
                    StageOutcome(stage, sspec.kind.name, "k" * 12, tmp_path / TASK / stage, "ran", 1.0, metrics)
                )
            result = RunResult(name, task.name, 0, preset, outcomes, "ok", 2.0, tmp_path / "r.json")
            monkeypatch.setattr(runner, "run_pipeline", lambda *a, _r=result, **k: _r)
            args = ["run", name, "--task", task.name] + (["--preset", preset] if preset else [])
            out = corl(capsys, monkeypatch, *args)
            assert out.code == 0 and "Traceback" not in out.err, (name, preset, out.err)
            for label, scores in result.scores.items():
                for stage in {k.split("/")[0] for k in scores}:
                    assert f"{label} ({stage})" in out.out, (name, preset, label, out.out)
            printed[name, preset] = out.out
    assert len(printed) >= 10
    # the carcircle preset's best label is the one that crashed: it prints its eval numbers
    assert "best (train): eval reward 190.000, eval cost 4.000" in printed["cvpo", "carcircle"]


# ----------------------------------------------------------------------------------- 2
def test_2_prune_deletes_nothing_when_run_records_are_unreadable(setup, tmp_path, capsys, monkeypatch):
    spec, data = setup
    run(spec, data)
    root = tmp_path / "checkpoints"
    before = artifact_dirs(root)
    assert len(before) == 2
    for record in (root / "runs").glob("*.json"):
        record.write_bytes(b"\x00garbage\xff")
    line = assert_one_line(corl(capsys, monkeypatch, "cache", "prune"), "deleted nothing", "unreadable run record")
    assert str(root / "runs") in line
    assert artifact_dirs(root) == before and all((d / art.MANIFEST).exists() for d in before)
    # a record that parses but is not a record is unreadable too
    for record in (root / "runs").glob("*.json"):
        record.write_text(json.dumps({"stages": "x"}))
    assert_one_line(corl(capsys, monkeypatch, "cache", "prune", "--dry-run"), "deleted nothing")
    # `corl runs` and `cache ls` name the bad record and go on
    listed = corl(capsys, monkeypatch, "runs")
    assert listed.code == 0 and "skipped" in listed.out and "unreadable run record" in listed.out
    shown = corl(capsys, monkeypatch, "cache", "ls")
    assert shown.code == 0 and "skipped" in shown.out


# ----------------------------------------------------------------------------------- 3
def test_3_in_place_edit_with_restored_mtime_is_rehashed(tmp_path):
    """The memo's key includes inode and ctime: restoring the mtime cannot hide an edit."""
    path = write_dataset(tmp_path)
    root = tmp_path / "checkpoints"
    first = art.cached_file_sha256(path, root)
    assert art.cached_file_sha256(path, root) == first  # memoised
    st = os.stat(path)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF  # same size, one byte different
    with open(path, "r+b") as handle:
        handle.write(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_size == st.st_size
    from corl.data.hashing import file_sha256

    assert art.cached_file_sha256(path, root) == file_sha256(path) != first


def test_3_edited_dataset_reruns_every_stage(setup, tmp_path):
    spec, data = setup
    run(spec, data)
    assert set(plan_statuses(spec, data).values()) == {"cached"}
    st = os.stat(data)
    with h5py_file(data, "r+") as handle:
        handle["rewards"][0] = handle["rewards"][0] + 1.0
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert set(plan_statuses(spec, data).values()) == {"run"}


def h5py_file(path: Path, mode: str):
    import h5py

    return h5py.File(path, mode)


# ----------------------------------------------------------------------------------- 5
def test_5_broken_cache_files_end_in_one_line_or_are_rebuilt(setup, tmp_path, capsys, monkeypatch):
    spec, data = setup
    run(spec, data)
    root = tmp_path / "checkpoints"
    bc_dir = next(d for d in artifact_dirs(root) if d.name.startswith("bc-"))
    # non-UTF-8 bytes in a manifest: `cache ls` shows it corrupt, `run` rebuilds it
    (bc_dir / art.MANIFEST).write_bytes(b'{"key": "\xff\xfe"}')
    shown = corl(capsys, monkeypatch, "cache", "ls")
    assert shown.code == 0 and "corrupt" in shown.out
    assert plan_statuses(spec, data)["bc"] == "corrupt"
    # a hash cache of garbage, or a JSON list, is rebuilt
    for garbage in (b"\x89\x00garbage", b"[1, 2, 3]", b'{"x": [1]}'):
        (root / art.HASH_CACHE).write_bytes(garbage)
        run(spec, data)
        assert set(plan_statuses(spec, data).values()) == {"cached"}
    # a lock file of binary garbage names nobody and blocks nothing
    from corl.store.lock import ArtifactLock

    lock = ArtifactLock(bc_dir)
    lock.path.write_bytes(os.urandom(64) + b"\xff")
    assert lock.holder() is None
    (bc_dir / art.MANIFEST).unlink()
    assert statuses(run(spec, data))["bc"] == "ran"
    lock.path.write_bytes(b'{"pid": "x", "started": "y", "host": 3}')
    from corl.store.lock import describe

    assert "pid x" in describe(lock.holder())


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--set", "bc.lr=nan"], ["--set bc.lr=nan", "finite"]),
        (["--set", "bc.steps=0"], ["--set bc.steps=0", ">= 1"]),
        (["--set", "bc.steps=-1"], ["--set bc.steps=-1"]),
        (["--set", "bc.hidden=[]"], ["--set bc.hidden=[]", "hidden layer"]),
        (["--seed", "-1"], ["--seed", "got -1"]),
        (["--seed", "99999999999999999999"], ["--seed", "99999999999999999999"]),
        (["--checkpoint-every", "0"], ["--checkpoint-every"]),
        (["--checkpoint-seconds", "nan"], ["--checkpoint-seconds"]),
    ],
)
def test_5_6_bad_run_options_fail_before_any_work(setup, args, needles, capsys, monkeypatch):
    """Each of these passed a dry run and crashed after training (or trained on nonsense)."""
    spec, data = setup
    for dry in (["--dry-run"], []):
        result = corl(capsys, monkeypatch, "run", str(spec), "--task", TASK, "--dataset", str(data), *args, *dry)
        assert_one_line(result, *needles)
    assert not (Path(os.environ["CORL_CHECKPOINTS"]) / TASK).exists()  # nothing ran


def test_5_paths_and_devices(setup, tmp_path, capsys, monkeypatch):
    spec, data = setup
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert_one_line(
        corl(
            capsys, monkeypatch, "run", str(spec), "--task", TASK, "--dataset", str(data), "--checkpoints", str(a_file)
        ),
        str(a_file),
        "expected a directory",
    )
    assert_one_line(corl(capsys, monkeypatch, "cache", "ls", "--checkpoints", str(a_file)), str(a_file))
    import torch

    if not torch.cuda.is_available():
        assert_one_line(
            corl(capsys, monkeypatch, "eval", "bc", "--task", TASK, "--device", "cuda"),
            "--device cuda",
            "CUDA is not available",
        )
    out_dir = tmp_path / "a_dir"
    out_dir.mkdir()
    assert_one_line(
        corl(capsys, monkeypatch, "datasets", "collect", "--task", TASK, "--episodes", "1", "-o", str(out_dir)),
        str(out_dir),
        "is a directory",
    )
    assert_one_line(corl(capsys, monkeypatch, "datasets", "convert", str(data), str(out_dir)), str(out_dir))


def test_5_unwritable_cache_root_is_one_line(setup, tmp_path, capsys, monkeypatch):
    """A read-only or immutable cache root (EROFS/EPERM/EACCES on every write under it)."""
    import errno

    spec, data = setup
    root = tmp_path / "ro"
    root.mkdir()
    real_open, real_mkdir = os.open, Path.mkdir

    def refuse(path) -> None:
        if str(path).startswith(str(root)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def fake_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *a, **k)

    def fake_mkdir(self, *a, **k):
        refuse(self)
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(Path, "mkdir", fake_mkdir)
    line = assert_one_line(
        corl(capsys, monkeypatch, "run", str(spec), "--task", TASK, "--dataset", str(data), "--checkpoints", str(root)),
        "read-only file system",
    )
    assert str(root) in line


# ----------------------------------------------------------------------------------- 6
@pytest.mark.parametrize(
    "override",
    ["bc.steps=0", "bc.steps=-1", "bc.hidden=[]", "bc.batch_size=0", "bc.lr=-0.1", "bc.lr=inf", "bc.hidden=[16,0]"],
)
def test_6_nonsense_configs_are_refused(setup, override):
    spec, data = setup
    with pytest.raises(ConfigError) as info:
        plan_statuses(spec, data, overrides=[override])
    assert f"--set {override}" in str(info.value) and "\n" not in str(info.value)


def test_6_every_shipped_preset_passes_the_value_checks():
    from corl.pipeline.spec import available_pipelines, load_spec

    for name in available_pipelines():
        spec = load_spec(REPO / "pipelines" / f"{name}.toml")
        for preset in [None, *spec.presets]:
            for task in [None, *spec.tasks]:
                spec.resolve(task, preset)


@pytest.mark.parametrize(
    "manifest",
    [{}, {"key": "K", "files": {}}, {"key": "K", "kind": "bc", "files": [], "outputs": {}, "final_metrics": {}}],
)
def test_6_forged_manifests_are_corrupt_for_run_and_ls(setup, tmp_path, manifest, capsys, monkeypatch):
    spec, data = setup
    run(spec, data)
    root = tmp_path / "checkpoints"
    bc_dir = next(d for d in artifact_dirs(root) if d.name.startswith("bc-"))
    real = json.loads((bc_dir / art.MANIFEST).read_text())
    forged = {k: (real["key"] if v == "K" else v) for k, v in manifest.items()}
    (bc_dir / art.MANIFEST).write_text(json.dumps(forged))
    assert plan_statuses(spec, data)["bc"] == "corrupt"
    shown = corl(capsys, monkeypatch, "cache", "ls")
    assert shown.code == 0
    row = next(line for line in shown.out.splitlines() if bc_dir.name in line)
    assert "corrupt" in row and "done" not in row
    assert statuses(run(spec, data))["bc"] == "ran"  # rebuilt, not crashed with KeyError: 'kind'


# ----------------------------------------------------------------------------------- 7
def test_7_truncated_metrics_are_detected(setup, tmp_path):
    spec, data = setup
    run(spec, data)
    bc_dir = next(d for d in artifact_dirs(tmp_path / "checkpoints") if d.name.startswith("bc-"))
    manifest = json.loads((bc_dir / art.MANIFEST).read_text())
    assert art.METRICS in manifest["files"]
    metrics = bc_dir / art.METRICS
    metrics.write_bytes(metrics.read_bytes()[:-20])
    assert plan_statuses(spec, data)["bc"] == "corrupt"


def test_7_unreadable_checkpoint_is_announced_not_silently_dropped(setup, tmp_path):
    from corl.pipeline.progress import RunCallbacks

    spec, data = setup

    class Interrupt(RunCallbacks):
        def stage_progress(self, stage, done, total, metrics):
            if stage == "bc" and done >= 55:
                raise KeyboardInterrupt

    with pytest.raises(CorlError):  # RunInterrupted: the checkpoint at step 50 is on disk
        run(spec, data, callbacks=Interrupt())
    bc_dir = next(d for d in artifact_dirs(tmp_path / "checkpoints") if d.name.startswith("bc-"))
    ckpt = bc_dir / art.CHECKPOINT
    assert ckpt.exists() and plan_statuses(spec, data)["bc"] == "resume"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    req = RunRequest(pipeline=str(spec), task=TASK, dataset=str(data), device="cpu")
    planned = plan_pipeline(req).stage("bc")
    assert planned.status == "restart" and "will restart from step 0" in planned.reason

    class Record(RunCallbacks):
        messages: list[str] = []

        def message(self, text, level="info"):
            self.messages.append(text)

    result = run(spec, data, callbacks=Record())
    assert statuses(result)["bc"] == "ran"
    assert any("restarting from step 0" in m for m in Record.messages), Record.messages


def test_7_prune_removes_empty_partials_of_failed_runs(setup, tmp_path, capsys, monkeypatch):
    spec, data = setup
    run(spec, data)
    root = tmp_path / "checkpoints"
    record = json.loads(next((root / "runs").glob("*.json")).read_text())
    # a failed run left two partial dirs it references: one empty, one with a checkpoint
    empty, resumable = root / TASK / "bc-aaaaaaaaaaaa", root / TASK / "bc-bbbbbbbbbbbb"
    empty.mkdir()
    (empty / art.METRICS).write_text('{"step": 1}\n')
    resumable.mkdir()
    (resumable / art.CHECKPOINT).write_bytes(b"x")
    failed = dict(
        record,
        status="failed",
        stages=[
            {"name": "bc", "kind": "bc", "key": d.name[3:], "dir": f"{TASK}/{d.name}", "status": "failed"}
            for d in (empty, resumable)
        ],
    )
    art.write_json_atomic(root / "runs" / "failed.json", failed)
    shown = corl(capsys, monkeypatch, "cache", "ls")
    assert "empty" in next(line for line in shown.out.splitlines() if empty.name in line)
    out = corl(capsys, monkeypatch, "cache", "prune")
    assert out.code == 0 and f"removed {TASK}/{empty.name}" in out.out
    assert not empty.exists() and resumable.exists()
    assert all((d / art.MANIFEST).exists() for d in artifact_dirs(root) if d != resumable)
