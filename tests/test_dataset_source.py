"""``dataset.source=cvpo``: one ``corl run`` collects (or reuses) CVPO data and trains on its export.

Why real runs: the point is the chain collection -> export file -> dataset key -> offline
learner, cached end to end; only a real (tiny) CVPO run on SafetyCarCircle-v0 shows it.
Sizes: 600 env steps (two 300-step episodes), 16-unit networks, 30 BC steps, 1 eval episode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _pipeline_util import corl_cmd, statuses, subprocess_env  # noqa: E402

TASK = "OfflineCarCircle-v0"
COLLECT = [
    "train.steps=600",
    "train.num_envs=1",
    "train.hidden=[16, 16]",
    "train.batch_size=32",
    "train.sample_action_num=8",
    "train.episodes_per_round=1",
    "train.update_per_step=0.02",
    "train.warmup_steps=0",
]
OVERRIDES = [
    "dataset.source=cvpo",
    f"dataset.source_set={json.dumps(COLLECT)}",
    "bc.mode=all",
    "bc.steps=30",
    "bc.hidden=[16, 16]",
    "bc.batch_size=32",
    "evaluate.episodes=1",
    "evaluate.num_envs=1",
]


def run(*extra: str, seed: int = 0, dry_run: bool = False, task: str = TASK, preset: str | None = None):
    from corl.pipeline.runner import RunRequest, plan_pipeline, run_pipeline

    req = RunRequest(
        pipeline="bc", task=task, seed=seed, preset=preset, overrides=OVERRIDES + list(extra), device="cpu"
    )
    return plan_pipeline(req) if dry_run else run_pipeline(req)


def manifest(result, stage: str) -> dict:
    outcome = next(o for o in result.stages if o.name == stage)
    return json.loads((outcome.dir / "manifest.json").read_text())


def test_bc_trains_on_the_cvpo_export_and_reruns_fully_cached(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from corl.cli import app
    from corl.data.hashing import file_sha256

    first = run()
    assert statuses(first) == {
        "cvpo:train": "ran",
        "cvpo:export": "ran",
        "dataset": "ran",
        "bc": "ran",
        "evaluate": "ran",
    }
    export_dir = next(o.dir for o in first.stages if o.name == "cvpo:export")
    assert export_dir.parent.name == "SafetyCarCircle-v0"  # collected on the online counterpart
    export = manifest(first, "cvpo:export")["outputs"]
    data = manifest(first, "dataset")["outputs"]
    path = Path(export["path"])
    assert path.parent == (tmp_path / "datasets").resolve()
    assert data["path"] == str(path) and data["sha256"] == export["sha256"] == file_sha256(path)
    assert data["origin"] == f"cvpo export {export_dir.name}"
    assert data["collection"]["task"] == "SafetyCarCircle-v0" and data["collection"]["seed"] == 0
    assert manifest(first, "bc")["dataset_sha256"] == export["sha256"]
    # the run record names the file and references the collection's artifacts (prune keeps them)
    record = json.loads(first.record_path.read_text())
    assert record["dataset"]["sha256"] == export["sha256"]
    assert [s["name"] for s in record["stages"]] == ["cvpo:train", "cvpo:export", "dataset", "bc", "evaluate"]
    assert set(first.scores["final"]) == {k for k in first.scores["final"] if k.startswith("evaluate/")}

    second = run()
    assert set(statuses(second).values()) == {"cached"} and len(second.stages) == 5

    # another seed of the offline learner trains on the same collection
    other_seed = run(seed=1)
    assert statuses(other_seed) == {
        "cvpo:train": "cached",
        "cvpo:export": "cached",
        "dataset": "cached",
        "bc": "ran",
        "evaluate": "ran",
    }

    # the exported file left the store: export again from the cached train artifact
    path.unlink()
    replanned = run(dry_run=True)  # planning sees it and builds nothing
    assert replanned.stage("cvpo:export").status == "stale" and "is gone" in replanned.stage("cvpo:export").reason
    assert replanned.stage("dataset").status == "pending" and not path.exists()
    repaired = run()
    assert statuses(repaired) == {
        "cvpo:train": "cached",
        "cvpo:export": "ran",
        "dataset": "cached",
        "bc": "cached",
        "evaluate": "cached",
    }
    assert file_sha256(path) == export["sha256"]

    # `corl run`: fully cached, and the summary says which file was used
    monkeypatch.setenv("COLUMNS", "250")
    args = ["run", "bc", "--task", TASK, "--device", "cpu"]
    for item in OVERRIDES:
        args += ["--set", item]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output[-2000:]
    assert path.name in out.output and export["sha256"][:12] in out.output
    assert "cvpo:train" in out.output and " ran " not in out.output and "cached" in out.output


def test_dry_run_plans_the_collection_without_training(tmp_path):
    from corl.pipeline.runner import Plan

    plan = run(dry_run=True, preset="quick")
    assert isinstance(plan, Plan)
    # one plan of every stage the run builds: the collection's stages first, then the run's own,
    # whose keys depend on the data the collection will make
    assert [(s.name, s.status) for s in plan.stages] == [
        ("cvpo:train", "run"),
        ("cvpo:export", "run"),
        ("dataset", "pending"),
        ("bc", "pending"),
        ("evaluate", "pending"),
    ]
    assert plan.stage("cvpo:export").inputs == {"episodes": "cvpo:train"}
    assert plan.stage("dataset").inputs == {"collection": "cvpo:export"}  # the edge the executor follows
    assert "after the cvpo collection" in plan.stage("dataset").fingerprint["pending"]
    assert plan.upstream[0].request.preset == "quick"  # source_preset "" follows the run's preset
    assert plan.upstream[0].request.seed == 0 and plan.upstream[0].request.task == "SafetyCarCircle-v0"
    assert not (tmp_path / "checkpoints" / "SafetyCarCircle-v0").exists()
    assert not (tmp_path / "datasets").exists() or not list((tmp_path / "datasets").iterdir())

    explicit = run("dataset.source_preset=paper", "dataset.source_seed=3", dry_run=True, preset="quick")
    assert explicit.upstream[0].request.preset == "paper" and explicit.upstream[0].request.seed == 3


def test_source_options_do_not_change_existing_dataset_keys():
    from corl.pipeline.registry import get_stage_kind
    from corl.pipeline.runner import _key_config
    from corl.pipeline.stages.dataset import DatasetConfig

    kind = get_stage_kind("dataset")
    assert _key_config(kind, DatasetConfig()) == {"path": ""}  # the key material before dataset.source existed
    assert _key_config(kind, DatasetConfig(source="cvpo"))["source"] == "cvpo"


def test_errors_are_one_line(tmp_path):
    from corl.errors import ConfigError, TaskError

    with pytest.raises(TaskError, match="hopper-medium-v2 has no online counterpart") as info:
        run(task="hopper-medium-v2", dry_run=True)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="dataset.source=cvpo and dataset.path"):
        run("dataset.path=x.hdf5", dry_run=True)

    proc = subprocess.run(
        corl_cmd("run", "bc", "--task", TASK, "--set", "dataset.source=cvp", "--dry-run"),
        env=subprocess_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "dataset.source" in lines[0] and "cvpo, mice" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_sweep_graph_has_the_collection_as_shared_nodes(tmp_path):
    """Two seeds of bc over one collection: the collection's stages are graph nodes that both
    runs use, and the dataset node depends on the export node (the edge the plan carries)."""
    from corl.errors import CorlError
    from corl.pipeline.sweep import flag_sweep, plan_sweep

    spec = flag_sweep("bc", [TASK], "0-1", None, OVERRIDES, [], [], device="cpu")
    runs = spec.expand()
    with pytest.raises(CorlError, match="no key yet"):  # planning alone builds nothing
        plan_sweep(spec, runs)
    assert not (tmp_path / "checkpoints" / "SafetyCarCircle-v0").exists()

    graph = plan_sweep(spec, runs, collect=True)  # builds the collection in the driver
    kinds = sorted(node.kind for node in graph.nodes.values())
    assert kinds == ["bc", "bc", "cvpo_train", "dataset", "evaluate", "evaluate", "export"]
    assert graph.stage_count == 10  # 5 stages per run, the collection and dataset shared
    train, export, dataset = (
        next(n for n in graph.nodes.values() if n.kind == k) for k in ("cvpo_train", "export", "dataset")
    )
    assert train.status == export.status == "cached" and graph.runs_of(train.id) == {0, 1}
    assert dataset.deps == [export.id] and export.deps == [train.id]
    assert [name for _, name in train.users] == ["cvpo:train", "cvpo:train"]
