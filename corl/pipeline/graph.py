"""Many runs' plans merged into one graph of stages, deduplicated by artifact key.

Why a graph: a sweep's runs share upstream work (every run of a task reads the same
``dataset`` stage; runs that differ only in a policy setting share ``behavior``, ``critics``
and ``dynamics``). An artifact's directory, ``<task>/<kind>-<key>``, names its content (the key
hashes kind, code version, config, inputs, dataset and seed), so two runs' stages with the
same directory are the same work: they become one :class:`Node`, built once. Nothing here
plans anew: the nodes are the :class:`~corl.pipeline.runner.PlannedStage` s that
:func:`~corl.pipeline.runner.plan_pipeline` made for each run, and each is built by
:func:`~corl.pipeline.runner.execute_stage`, exactly as ``corl run`` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corl.errors import CorlError
from corl.pipeline.runner import Plan, RunRequest, StageJob, stage_job


@dataclass
class Node:
    """One artifact to build (or reuse), with the runs' stages that use it."""

    id: str  # the artifact directory relative to the cache root: <task>/<kind>-<key>
    job: StageJob  # from the first run that planned it (equal keys: equal configs and inputs)
    deps: list[str]  # node ids of its inputs
    users: list[tuple[int, str]] = field(default_factory=list)  # (run index, stage name)

    @property
    def status(self) -> str:
        """The planned state: cached | run | resume | corrupt | pending."""
        return self.job.stage.status

    @property
    def kind(self) -> str:
        return self.job.stage.kind


@dataclass
class Graph:
    """Nodes in dependency order (every node after its inputs) and the runs they serve."""

    runs: list[tuple[RunRequest, Plan]]
    nodes: dict[str, Node]
    run_nodes: list[dict[str, str]]  # per run: stage name -> node id

    @classmethod
    def from_plans(cls, runs: list[tuple[RunRequest, Plan]]) -> "Graph":
        nodes: dict[str, Node] = {}
        run_nodes: list[dict[str, str]] = []
        for index, (req, plan) in enumerate(runs):
            ids: dict[str, str] = {}
            for ps in plan.stages:  # already in dependency order
                if ps.status == "pending":
                    raise CorlError(
                        f"{plan.spec.name} on {plan.task.name} (seed {req.seed}): stage {ps.name!r} has "
                        f"no key yet ({ps.fingerprint.get('pending') or 'an input is pending'})"
                    )
                node_id = ps.dir.relative_to(plan.root).as_posix()
                ids[ps.name] = node_id
                if node_id not in nodes:
                    nodes[node_id] = Node(
                        node_id, stage_job(plan, ps.name, req), [ids[target] for target in ps.inputs.values()]
                    )
                nodes[node_id].users.append((index, ps.name))
            run_nodes.append(ids)
        return cls(runs, nodes, run_nodes)

    @property
    def stage_count(self) -> int:
        """Stages over all runs, shared ones counted once per run (the work without merging)."""
        return sum(len(ids) for ids in self.run_nodes)

    def todo(self) -> list[str]:
        """Nodes that are not cached, in dependency order."""
        return [n for n, node in self.nodes.items() if node.status != "cached"]

    def dependants(self, node_id: str) -> set[str]:
        """Every node that needs ``node_id``, directly or not."""
        out: set[str] = set()
        for nid, node in self.nodes.items():  # dependency order: inputs are seen before users
            if any(d == node_id or d in out for d in node.deps):
                out.add(nid)
        return out

    def runs_of(self, node_id: str) -> set[int]:
        return {index for index, _ in self.nodes[node_id].users}
