"""Which policy ``corl eval`` evaluates: run records and artifacts to policies and critics.

Why from run records (and not by scanning artifact directories): a record ties a pipeline
name, a task and a seed to the exact artifacts of one finished run, so "the latest drcorl
policy on CarCircle" has one answer, and the dataset the policy was trained on (for the
attack's observation std) is the one that run recorded. Nothing here trains or rolls out.

Selection, one of:

* ``PIPELINE --task T``: the newest run record of that pipeline and task whose status is
  ``ok`` and whose policy artifact verifies;
* ``--run ID``: a record by its file name (or a unique prefix / substring of it);
* ``--artifact PATH``: a finished artifact directory that holds a policy (or an ``evaluate``
  artifact, which points at one).

The policy-producing artifact is the run's *last* stage whose ``outputs["policy"]`` is a
policy spec (``{"file", "builder", ...}``): ``bc``, ``drcorl_policy``, ``micro_policy``, or
any online learner that saves with :func:`corl.store.policies.save_policy`. An optional
``outputs["best_policy"]`` spec of the same artifact is offered as the separately labelled
*best* checkpoint, and ``outputs["best_offline_policy"]`` (DRCORL's best iterate by its offline
model estimate) as *best_offline*; there is no implicit best-of selection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corl.errors import CorlError, did_you_mean
from corl.store.artifacts import MANIFEST, Artifact, CorruptArtifact, verify
from corl.store.runs import (
    describe_settings,
    find_records,
    load_records,
    policy_label,
    record_id,
    runs_dir,
    settings,
    short_id,
)
from corl.tasks import TaskSpec, get_task


@dataclass
class SelectedPolicy:
    """One policy checkpoint to evaluate and everything the report needs to cite about it."""

    artifact: Artifact  # the artifact that holds the policy file
    spec: dict[str, Any]  # its policy spec (outputs["policy"] or outputs["best_policy"])
    checkpoint: str  # "final", "best" or "best_offline"
    label: str  # e.g. "DRCORL" (the stage's own label) or "BC-Safe (best)"
    task: TaskSpec
    pipeline: str | None
    run_id: str | None
    run_path: str | None
    seed: int
    trained_cost_limit: float | None
    dataset: dict[str, Any] = field(default_factory=dict)  # path, sha256, origin, note
    eval_defaults: dict[str, Any] = field(default_factory=dict)  # episodes, num_envs of the run's evaluate
    recorded_scores: dict[str, float] = field(default_factory=dict)  # the run's own evaluate scores
    model_estimate: dict[str, Any] = field(default_factory=dict)  # DRCORL: its label in iterates.json, if any

    @property
    def name(self) -> str:
        """Short unique-ish name for files and legends, e.g. ``drcorl/DRCORL``."""
        base = self.pipeline or self.artifact.kind
        return f"{base}:{self.label}"


def _is_policy_spec(value: Any) -> bool:
    return isinstance(value, dict) and "file" in value and "builder" in value


def known_pipelines(root: Path) -> list[str]:
    """Pipeline names a user can ask for: the spec files plus any name a record carries."""
    from corl.store.pipelines import available_pipelines

    names = set(available_pipelines())
    names.update(r.get("pipeline") for r in load_records(root) if r.get("pipeline"))
    return sorted(names)


def _load_artifact(directory: Path) -> Artifact:
    try:
        artifact = verify(directory)
    except CorruptArtifact as exc:
        raise CorlError(str(exc)) from None
    if artifact is None:
        raise CorlError(f"{directory}: not a finished artifact (no {MANIFEST}); rerun its pipeline")
    return artifact


def _sibling(artifact: Artifact, role: str) -> Artifact | None:
    """The input artifact of ``role`` (inputs live next to each other under the task dir)."""
    ref = artifact.manifest.get("inputs", {}).get(role)
    if not ref:
        return None
    directory = artifact.dir.parent / ref["dir"]
    return _load_artifact(directory) if directory.is_dir() else None


def dataset_of(artifact: Artifact) -> dict[str, Any]:
    """The training data of a policy: the ``dataset`` artifact's outputs up the input chain (path,
    sha256, origin, note), or an online learner's recorded episodes."""
    seen = 0
    node: Artifact | None = artifact
    while node is not None and seen < 8:
        if node.outputs.get("episodes_file"):  # an online learner: its own recorded experience
            return {
                "path": str(node.dir / node.outputs["episodes_file"]),
                "origin": "online-experience",
                "note": "the episodes the online learner recorded while training",
                "artifact": node.dir.name,
            }
        if node.kind == "dataset":
            return dict(node.outputs, artifact=node.dir.name)
        ds = _sibling(node, "dataset")
        if ds is not None:
            return dict(ds.outputs, artifact=ds.dir.name)
        node = _sibling(node, "policy")  # an evaluate artifact: follow to its policy
        seen += 1
    return {}


def _policy_artifact_from(artifact: Artifact) -> Artifact:
    if _is_policy_spec(artifact.outputs.get("policy")):
        return artifact
    upstream = _sibling(artifact, "policy")
    if upstream is not None and _is_policy_spec(upstream.outputs.get("policy")):
        return upstream
    raise CorlError(
        f"{artifact.dir}: a {artifact.kind} artifact holds no policy; pass a policy artifact "
        "(bc, drcorl_policy, micro_policy, ...) or its evaluate artifact"
    )


def _record_id(record: dict[str, Any]) -> str:
    return record_id(record)


def _from_record(record: dict[str, Any], root: Path) -> tuple[Artifact, dict[str, Any]]:
    """(policy artifact, evaluate config defaults) of a run record."""
    policy_art = None
    eval_defaults: dict[str, Any] = {}
    for stage in record.get("stages", []):
        directory = root / stage.get("dir", "")
        if not stage.get("dir") or not (directory / MANIFEST).exists():
            continue
        artifact = _load_artifact(directory)
        if _is_policy_spec(artifact.outputs.get("policy")):
            policy_art = artifact
        if artifact.kind == "evaluate":
            cfg = artifact.manifest.get("config", {})
            eval_defaults = {k: cfg[k] for k in ("episodes", "num_envs") if k in cfg}
    if policy_art is None:
        kinds = ", ".join(s.get("kind", "?") for s in record.get("stages", []))
        raise CorlError(
            f"run {_record_id(record)} ({record.get('pipeline')}: {kinds}) produced no policy artifact; "
            "an evaluable stage saves one with corl.store.policies.save_policy"
        )
    return policy_art, eval_defaults


def _selected(
    policy_art: Artifact, task: TaskSpec, record: dict[str, Any] | None, eval_defaults: dict[str, Any]
) -> list[SelectedPolicy]:
    outputs = policy_art.outputs
    limit = outputs.get("cost_limit")
    common = dict(
        task=task,
        pipeline=record.get("pipeline") if record else policy_art.manifest.get("pipeline"),
        run_id=_record_id(record) if record else None,
        run_path=record.get("_path") if record else None,
        seed=int(record.get("seed", 0)) if record else int(policy_art.manifest.get("seed") or 0),
        trained_cost_limit=float(limit) if limit is not None else None,
        dataset=dataset_of(policy_art) or (dict(record.get("dataset", {})) if record else {}),
        eval_defaults=eval_defaults,
        recorded_scores=dict(record.get("scores", {}).get("final", {})) if record else {},
    )
    label = str(outputs.get("label") or policy_art.kind)
    labels = iterate_labels(policy_art)
    final_label = labels.get("by_iteration", {}).get(labels.get("final_iteration"), {})
    out = [SelectedPolicy(policy_art, outputs["policy"], "final", label, **common, model_estimate=final_label)]
    if _is_policy_spec(outputs.get("best_policy")):
        out.append(SelectedPolicy(policy_art, outputs["best_policy"], "best", f"{label} (best)", **common))
    if _is_policy_spec(outputs.get("best_offline_policy")):  # DRCORL: the best iterate by the model estimate
        common["recorded_scores"] = dict(record.get("scores", {}).get("best_offline", {})) if record else {}
        best = labels.get("by_iteration", {}).get(labels.get("best_offline_iteration"), {})
        out.append(
            SelectedPolicy(
                policy_art,
                outputs["best_offline_policy"],
                "best_offline",
                f"{label} (best offline)",
                **common,
                model_estimate=best,
            )
        )
    return out


def iterate_labels(policy_art: Artifact) -> dict[str, Any]:
    """A policy artifact's labelled iterates (DRCORL's ``iterates.json``), ``{}`` when it has none:
    the document plus ``by_iteration`` (iteration -> label)."""
    name = policy_art.outputs.get("iterates_file")
    if not name or not (policy_art.dir / name).is_file():
        return {}
    doc = json.loads((policy_art.dir / name).read_text())
    doc["by_iteration"] = {int(x["iteration"]): x for x in doc.get("iterates", [])}
    return doc


def _finished_runs(root: Path, pipeline: str, task: TaskSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = [r for r in load_records(root) if r.get("pipeline") == pipeline and r.get("task") == task.name]
    return [r for r in records if r.get("status") == "ok"], records


def _refuse_mixed_settings(root: Path, pipeline: str, task: TaskSpec, finished: list[dict[str, Any]]) -> None:
    """Several finished runs whose settings differ (``settings``: preset, overrides, data; not
    the seed): picking the newest would silently evaluate whichever ran last (BC-Safe and BC-All
    are both ``bc``), so name one run per setting and ask for ``--run``."""
    newest: dict[tuple, dict[str, Any]] = {}
    for record in finished:  # newest first
        newest.setdefault(settings(record), record)
    if len(newest) < 2:
        return
    listed = "; ".join(f"{short_id(r)} ({describe_settings(r, policy_label(r, root))})" for r in newest.values())
    raise CorlError(
        f"{len(newest)} kinds of finished {pipeline} runs on {task.name} differ in settings: {listed}; "
        f"pick one with --run ID (`corl runs --pipeline {pipeline}` lists them)"
    )


def select_latest(
    root: Path, pipeline: str, task: TaskSpec, cost_limit: float | None = None, strict: bool = True
) -> list[SelectedPolicy]:
    """The newest finished run of ``pipeline`` on ``task`` (optionally: trained at ``cost_limit``).

    ``strict`` (the default): refuse when finished runs differ in settings (see
    :func:`_refuse_mixed_settings`); runs that differ only in seed are fine (the newest is
    taken, and the report names it)."""
    known = known_pipelines(root)
    if pipeline not in known:
        raise CorlError(
            f"unknown pipeline {pipeline!r}{did_you_mean(pipeline, known)}; available: {', '.join(known) or 'none'}"
        )
    finished, every = _finished_runs(root, pipeline, task)
    if not finished:
        states = sorted({r.get("status", "?") for r in every})
        seen = f" ({len(every)} run(s): {', '.join(states)})" if every else ""
        raise CorlError(
            f"no finished {pipeline} run for task {task.name} under {root}{seen}; train one with: "
            f"corl run {pipeline} --task {task.name} --preset quick"
        )
    if strict and cost_limit is None:
        _refuse_mixed_settings(root, pipeline, task, finished)
    problems = []
    for record in finished:  # newest first
        try:
            policy_art, defaults = _from_record(record, root)
        except CorlError as exc:  # a pruned or corrupt artifact: fall back to an older run, say so if none
            problems.append(str(exc))
            continue
        limit = policy_art.outputs.get("cost_limit")
        if cost_limit is not None and (limit is None or abs(float(limit) - cost_limit) > 1e-9):
            continue
        return _selected(policy_art, task, record, defaults)
    if cost_limit is not None and not problems:
        raise CorlError(f"no finished {pipeline} run for task {task.name} trained at cost limit {cost_limit:g}")
    raise CorlError(f"no usable {pipeline} run for task {task.name}: {problems[0]}")


def select_run(root: Path, run_id: str, task: TaskSpec | None, pipeline: str | None) -> list[SelectedPolicy]:
    """``--run ID``: a short id (``corl runs``), a record file name, a unique part of one, or a record path."""
    matches = find_records(root, run_id)
    if not matches:
        records = load_records(root)
        ids = [_record_id(r) for r in records]
        raise CorlError(
            f"no run {run_id!r} under {runs_dir(root)}{did_you_mean(run_id, ids)}"
            f"{'' if ids else ' (no runs at all)'}; `corl runs` lists them"
        )
    if len(matches) > 1:
        raise CorlError(
            f"run {run_id!r} is ambiguous: {', '.join(_record_id(r) for r in matches[:4])}; give more of it"
        )
    record = matches[0]
    if record.get("status") != "ok":
        raise CorlError(
            f"run {_record_id(record)} is {record.get('status', 'unknown')}, not finished; rerun it: "
            f"{record.get('command', 'corl run ...')}"
        )
    if pipeline and record.get("pipeline") != pipeline:
        raise CorlError(f"run {_record_id(record)} is a {record.get('pipeline')} run, not {pipeline}")
    rtask = get_task(record["task"])
    if task is not None and task.name != rtask.name:
        raise CorlError(f"run {_record_id(record)} is on task {rtask.name}, not {task.name}")
    policy_art, defaults = _from_record(record, root)
    return _selected(policy_art, rtask, record, defaults)


def select_artifact(root: Path, path: str | Path, task: TaskSpec | None) -> list[SelectedPolicy]:
    """``--artifact PATH``: a policy artifact (or an evaluate artifact pointing at one)."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise CorlError(f"--artifact {directory}: no such directory")
    policy_art = _policy_artifact_from(_load_artifact(directory))
    atask = get_task(policy_art.manifest.get("task") or (task.name if task else ""))
    if task is not None and task.name != atask.name:
        raise CorlError(f"artifact {policy_art.dir.name} is for task {atask.name}, not {task.name}")
    record = None  # the newest finished record that references it, for the seed and the evaluate defaults
    defaults: dict[str, Any] = {}
    rel = f"{policy_art.dir.parent.name}/{policy_art.dir.name}"
    for r in load_records(Path(root)):
        if r.get("status") == "ok" and any(s.get("dir") == rel for s in r.get("stages", [])):
            record = r
            try:
                defaults = _from_record(r, Path(root))[1]
            except CorlError:
                defaults = {}
            break
    return _selected(policy_art, atask, record, defaults)


def critic_for(selected: SelectedPolicy, device: str = "cpu"):
    """The Q critic that belongs to a selected policy, or None.

    Looked for on the policy artifact itself (MICRO keeps its SAC critic there), then on its
    inputs (DRCORL's policy takes the ``critics`` artifact).
    """
    from corl.eval.critics import critic_from_artifact

    critic = critic_from_artifact(selected.artifact, device)
    if critic is not None:
        return critic
    for role in selected.artifact.manifest.get("inputs", {}):
        upstream = _sibling(selected.artifact, role)
        if upstream is not None and upstream.kind != "dataset":
            critic = critic_from_artifact(upstream, device)
            if critic is not None:
                return critic
    return None


__all__ = [
    "SelectedPolicy",
    "known_pipelines",
    "dataset_of",
    "select_latest",
    "select_run",
    "select_artifact",
    "critic_for",
    "iterate_labels",
]
