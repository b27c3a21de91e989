"""`corl sweep`: one graph deduplicated by artifact key, on this process, a process pool and a
real local Ray instance; failures stop only their dependants; a killed driver resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _pipeline_util import TASK, TINY_SPEC, TRAIN_ONLY_SPEC, corl_cmd, subprocess_env, write_dataset, write_spec

SWEEP = """
description = "test sweep"
tasks = ["{task}"]
seeds = "{seeds}"
datasets = ["{data}"]
set = {set}

[grid]
{grid}

[[methods]]
label = "BC"
pipeline = "{spec}"
"""


def write_sweep(
    tmp_path: Path,
    spec_text: str = TINY_SPEC,
    seeds: str = "0-1",
    grid: str = '"bc.lr" = [1e-3, 3e-4]',
    overrides: list[str] | None = None,
    name: str = "sweep.toml",
) -> Path:
    spec = write_spec(tmp_path, spec_text)
    data = tmp_path / "tiny.hdf5"
    if not data.exists():
        write_dataset(tmp_path)
    path = tmp_path / name
    path.write_text(
        SWEEP.format(task=TASK, seeds=seeds, data=data, spec=spec, grid=grid, set=json.dumps(overrides or []))
    )
    return path


def run_api(sweep_path: Path, root: Path, backend):
    from corl.pipeline.sweep import load_sweep, plan_sweep, run_sweep

    spec = load_sweep(sweep_path)
    runs = spec.expand(checkpoints=str(root))
    graph = plan_sweep(spec, runs)
    return graph, run_sweep(spec, runs, graph, backend, root, f"corl sweep {sweep_path}")


def manifests(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (root / TASK).glob("*/manifest.json")}


def test_sweep_file_errors_are_one_line(tmp_path):
    from corl.errors import ConfigError
    from corl.pipeline.sweep import load_sweep, parse_seeds, plan_sweep

    good = write_sweep(tmp_path)
    cases = [
        (good.read_text().replace("seeds =", "seed ="), "seed: unknown key (did you mean 'seeds'?)"),
        (good.read_text().replace('"0-1"', '"0-x"'), "seeds: bad seed range '0-x'"),
        (good.read_text().replace('label = "BC"', 'lable = "BC"'), "methods[0].lable: unknown key"),
        (
            good.read_text().replace(f'pipeline = "{tmp_path / "tiny.toml"}"', 'pipeline = "bcc"'),
            "unknown pipeline 'bcc' (did you mean 'bc'?)",
        ),
        (good.read_text().replace("tiny.hdf5", "nope.hdf5"), "datasets: "),
        (good.read_text().replace('"bc.lr" = [1e-3, 3e-4]', '"bc.lr" = []'), 'grid."bc.lr": expected a non-empty list'),
    ]
    for text, expected in cases:
        good.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_sweep(good)
        assert expected in str(info.value) and str(good) in str(info.value) and "\n" not in str(info.value)
    assert parse_seeds("0-2,7", "x") == [0, 1, 2, 7]

    # a grid key the pipeline does not have: found when planning, before any work
    path = write_sweep(tmp_path, grid='"bc.lrr" = [1e-3]', name="bad.toml")
    spec = load_sweep(path)
    with pytest.raises(ConfigError) as info:
        plan_sweep(spec, spec.expand(checkpoints=str(tmp_path / "ck")))
    assert "has no key 'lrr' (did you mean 'lr'?)" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "ck").exists()


def test_pool_and_ray_build_identical_artifacts_and_share_the_dataset(tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install -e '.[ray]')")
    from corl.errors import CorlError
    from corl.pipeline.executors import PoolBackend, RayBackend, check_shared_root

    path = write_sweep(tmp_path, TRAIN_ONLY_SPEC)  # 2 seeds x 2 settings
    graph, pool = run_api(path, tmp_path / "pool", PoolBackend(2, threads=1))
    assert graph.stage_count == 8 and len(graph.nodes) == 5  # 4 runs x 2 stages; one dataset node for all
    assert pool.ok and {r.status for r in pool.nodes.values()} == {"ran"}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        backend = RayBackend("local", threads=1)
        with pytest.raises(CorlError, match="does not see the dataset file"):
            check_shared_root(ray, tmp_path / "ray", [str(tmp_path / "not-there.hdf5")])
        _, on_ray = run_api(path, tmp_path / "ray", backend)
    finally:
        ray.shutdown()
    assert on_ray.ok and {r.status for r in on_ray.nodes.values()} == {"ran"}

    a, b = manifests(tmp_path / "pool"), manifests(tmp_path / "ray")
    assert set(a) == set(b) == {n.split("/")[1] for n in graph.nodes}  # same keys
    for name in a:
        assert a[name]["files"] == b[name]["files"], name  # bit-identical weights and episode files
    kinds = [m["kind"] for m in a.values()]
    assert kinds.count("dataset") == 1 and kinds.count("bc") == 4  # the shared stage ran once
    results = json.loads((pool.dir / "sweep.json").read_text())
    assert results["graph"] == {"runs": 4, "stages": 8, "nodes": 5, "ran": 5, "cached_at_start": 0}
    records = [json.loads(p.read_text()) for p in (tmp_path / "pool" / "runs").glob("*.json")]
    assert len(records) == 4 and {r["status"] for r in records} == {"ok"} and records[0]["sweep"]["method"] == "BC"


def test_failing_node_fails_only_its_dependants(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from corl.cli import app
    from corl.pipeline.executors import InProcessBackend

    # BC-Safe with a cost limit below every episode's cost (a valid value, so planning passes):
    # that bc node fails at run time
    path = write_sweep(tmp_path, seeds="0", grid='"bc.cost_limit" = [1000.0, 0.0]', overrides=['bc.mode="safe"'])
    root = tmp_path / "ck"
    graph, out = run_api(path, root, InProcessBackend())
    assert sorted(r.status for r in out.nodes.values()) == ["failed", "ran", "ran", "ran", "skipped"]
    by_status = {r.status: graph.nodes[n] for n, r in out.nodes.items() if r.status in ("failed", "skipped")}
    assert by_status["failed"].kind == "bc" and by_status["failed"].job.config.cost_limit == 0.0
    assert by_status["skipped"].deps == [by_status["failed"].id]  # its evaluate: skipped, not run
    failed = out.failures[0]
    assert "no episode of the dataset has cost <= 0.0" in failed.reason and "\n" not in failed.reason
    assert "Traceback" in Path(failed.log).read_text()
    assert [r["status"] for r in out.runs] == ["ok", "failed"] and not out.ok
    assert out.runs[0]["scores"]["final"]["reward"] is not None
    results = json.loads((out.dir / "sweep.json").read_text())
    assert results["failures"][0]["log"] == failed.log
    assert [(g["setting"], g["finished"]) for g in results["groups"]] == [
        ("bc.cost_limit=1000.0", 1),
        ("bc.cost_limit=0.0", 0),
    ]
    assert results["groups"][0]["final"]["n"] == 1 and "final" not in results["groups"][1]
    assert (out.dir / "sweep.csv").read_text().startswith("method,pipeline,task,dataset,setting")
    assert (out.dir / "sweep.png").stat().st_size > 0

    monkeypatch.setenv("COLUMNS", "250")
    shown = CliRunner().invoke(app, ["sweep", str(path), "--status", "--checkpoints", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "failed" in shown.output and "skipped" in shown.output and "1/2 runs done" in shown.output


def _orphans(cwd: Path) -> list[int]:
    """Live processes started in ``cwd`` (the killed driver's pool workers)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd") == str(cwd) and b"multiprocessing" in (proc / "cmdline").read_bytes():
                out.append(int(proc.name))
        except OSError:
            continue
    return out


def test_kill_driver_mid_sweep_then_rerun_is_bit_identical(tmp_path):
    from corl.pipeline.executors import InProcessBackend

    path = write_sweep(tmp_path, TRAIN_ONLY_SPEC, grid='"bc.lr" = [1e-3]', overrides=["bc.steps=600"])
    root = tmp_path / "killed"
    proc = subprocess.Popen(
        corl_cmd("sweep", str(path), "--workers", "2", "--checkpoints", str(root)),
        env=subprocess_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300  # generous: a loaded CI machine starts processes slowly
        while not list((root / TASK).glob("bc-*/checkpoint.pt")):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.time() + 120  # its pool workers die with it (PR_SET_PDEATHSIG, or at start-up)
    while _orphans(tmp_path) and time.time() < deadline:
        time.sleep(0.1)
    assert not _orphans(tmp_path)

    _, resumed = run_api(path, root, InProcessBackend())
    _, reference = run_api(path, tmp_path / "reference", InProcessBackend())
    assert resumed.ok and reference.ok
    a, b = manifests(root), manifests(tmp_path / "reference")
    assert set(a) == set(b)
    assert all(a[n]["files"] == b[n]["files"] for n in a)  # bit-identical policies
    assert any(m["resumed_from"] > 0 for m in a.values())  # continued from a checkpoint, not step 0


def test_every_bundled_sweep_file_plans(tmp_path):
    """Each pipelines/sweeps/*.toml validates and plans (no work), e.g. the DRCORL quality bench."""
    from _pipeline_util import REPO

    from corl.pipeline.sweep import load_sweep, plan_sweep

    files = sorted((REPO / "pipelines" / "sweeps").glob("*.toml"))
    assert files
    for path in files:
        spec = load_sweep(path)
        graph = plan_sweep(spec, spec.expand(checkpoints=str(tmp_path / "ck")))
        assert len(graph.nodes) < graph.stage_count  # the dataset node at least is shared
    quality = load_sweep(REPO / "pipelines" / "sweeps" / "quality_carcircle.toml")
    assert [m.label for m in quality.methods] == ["DRCORL", "BC-Safe", "BC-All", "MICRO"]
    assert quality.seeds == [0, 1, 2, 3, 4] and len(quality.expand()) == 20


def test_flag_form_expands_like_a_file(tmp_path):
    from corl.errors import ConfigError
    from corl.pipeline.sweep import flag_sweep, parse_grid_flag, plan_sweep

    data = write_dataset(tmp_path)
    assert parse_grid_flag("bc.hidden=[16, 16],[32, 32]") == ("bc.hidden", [[16, 16], [32, 32]])
    spec = flag_sweep(
        str(write_spec(tmp_path)),
        ["OfflineCarCircle-v0"],
        "0-2",
        "tiny",
        ['bc.mode="all"'],
        ["bc.lr=1e-3,3e-4"],
        [str(data)],
    )
    runs = spec.expand(checkpoints=str(tmp_path / "ck"))
    assert len(runs) == 6 and runs[0].request.overrides == ['bc.mode="all"', "bc.lr=0.001"]
    assert runs[0].request.preset == "tiny" and runs[0].request.dataset == str(data.resolve())
    graph = plan_sweep(spec, runs)
    assert len(graph.nodes) == 13 and graph.stage_count == 18  # 1 dataset + 6 bc + 6 evaluate
    with pytest.raises(ConfigError, match="--grid bc.lr: expected stage.key=value1,value2"):
        parse_grid_flag("bc.lr")
    with pytest.raises(ConfigError, match="--tasks is required"):
        flag_sweep("bc", [], "0", None, [], [], [])
