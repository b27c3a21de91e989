"""Where a sweep's graph nodes run: in this process, a local process pool, or Ray.

Every backend calls the same worker function, :func:`run_node`, which builds one node with
:func:`~corl.pipeline.runner.execute_stage` (the function ``corl run`` builds stages with)
and returns a plain dict. The :class:`Scheduler` is the same for all of them:

* A node runs only after its inputs are done. The pool gets a node when its inputs have
  finished; Ray gets every node at once, its inputs' results passed as object refs, so Ray
  itself orders them (and places them by each stage kind's ``num_cpus`` / ``num_gpus``).
* A failing node fails only what depends on it: its dependants are ``skipped`` with the
  failed input named, every other node goes on.
* Ctrl-C stops scheduling and creates the sweep's stop file; every running node sees it at
  its next step (the stage's own Ctrl-C path), saves a checkpoint and returns
  ``interrupted``; queued ones return ``not_started``. A second Ctrl-C kills the workers.
  Rerunning the sweep continues: done nodes are cached, interrupted ones resume.
* Worker processes die with the driver (``PR_SET_PDEATHSIG``), so ``kill -9`` of the driver
  leaves checkpoints and stale locks (freed when their holder is dead), never an orphan
  still writing.
* Torch threads per worker are set explicitly (``threads``, default 1): N workers with one
  thread each, not N workers each starting a thread per core.

The artifact cache is the only channel between nodes: a worker reads its inputs' manifests
from the cache root and writes its artifact there. On a Ray cluster that root must be a
shared filesystem; :func:`check_shared_root` proves every node sees it before any work.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corl.errors import CorlError
from corl.pipeline.context import InterruptFlag, StageInterrupted
from corl.pipeline.graph import Graph
from corl.pipeline.progress import RunCallbacks
from corl.pipeline.runner import StageJob, execute_stage, load_inputs

OK = ("ran", "cached")


@dataclass
class NodeResult:
    """What became of one node (a plain dict on the wire: see :func:`run_node`)."""

    node: str
    status: str  # ran | cached | failed | interrupted | skipped (an input failed) | not_started
    wall_time: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0
    step: int | None = None  # the checkpoint step of an interrupted node
    reason: str = ""  # one line, for failed and skipped nodes
    log: str = ""
    host: str = ""

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "NodeResult":
        return cls(**{k: v for k, v in value.items() if k in cls.__dataclass_fields__})


# ------------------------------------------------------------------------------ worker side
class StopFileFlag(InterruptFlag):
    """The stage's interrupt flag, raised by a file: one mechanism for this process, a pool
    worker and a Ray task on another machine (the file sits in the shared cache root)."""

    def __init__(self, path: str | Path) -> None:  # no super().__init__: ``requested`` is computed
        self.path = Path(path)
        self._seen = False
        self._next = 0.0

    @property
    def requested(self) -> bool:  # type: ignore[override]
        now = time.monotonic()
        if not self._seen and now >= self._next:  # a stat every 0.2 s, not every training step
            self._next = now + 0.2
            self._seen = self.path.exists()
        return self._seen

    def request(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._seen = True


class LogCallbacks(RunCallbacks):
    """A node's progress and messages, appended to its log file (one per node)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, text: str) -> None:
        with open(self.path, "a") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    def stage_started(self, stage: str, kind: str, total: int | None, resumed_from: int) -> None:
        self.write(
            f"{stage} ({kind}) started"
            + (f", {total} steps" if total else "")
            + (f", resumed at step {resumed_from}" if resumed_from else "")
        )

    def stage_progress(self, stage: str, done: int, total: int | None, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self._last >= 10.0:
            self._last = now
            shown = " ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:4])
            self.write(f"{stage}: {done}/{total or '?'} {shown}")

    def stage_finished(self, outcome: Any) -> None:
        self.write(f"{outcome.name}: {outcome.status} in {outcome.wall_time:.1f}s")

    def message(self, text: str, level: str = "info") -> None:
        self.write(f"[{level}] {text}")


def run_node(node: str, job: StageJob, stop_path: str, log_path: str, threads: int, *upstream: Any) -> dict:
    """Build one node in this process; never raises for a stage's failure (returns it).

    ``upstream``: the results of the node's inputs (dicts, or on Ray the resolved object refs
    of their tasks); a failed input makes this node ``skipped`` without running it.
    """
    result = {"node": node, "host": socket.gethostname(), "log": log_path}
    bad = next((u for u in upstream if isinstance(u, dict) and u.get("status") not in OK), None)
    if bad is not None:  # a failed input skips this node; an interrupted one leaves it for the rerun
        status = "skipped" if bad["status"] in ("failed", "skipped") else "not_started"
        return {**result, "status": status, "log": "", "reason": f"input {bad['node']} {bad['status']}"}
    stop = StopFileFlag(stop_path)
    if stop.requested:
        return {**result, "status": "not_started", "log": ""}
    import torch

    torch.set_num_threads(max(1, int(threads)))
    log = LogCallbacks(Path(log_path))
    log.write(
        f"{node}: {job.pipeline} stage {job.stage.name!r} seed {job.seed} on {socket.gethostname()} "
        f"(pid {os.getpid()}, {threads} torch thread{'s' if threads != 1 else ''})"
    )
    try:
        importlib.import_module(job.kind_module)  # a stage kind registered outside corl.pipeline.stages
        outcome, _ = execute_stage(job, load_inputs(job), log, stop)
    except StageInterrupted as exc:
        log.write(f"interrupted (checkpoint at step {exc.step})")
        return {**result, "status": "interrupted", "step": exc.step}
    except Exception as exc:  # a failing node fails its dependants only: report, do not raise
        log.write(traceback.format_exc())
        reason = str(exc) if isinstance(exc, CorlError) else f"{type(exc).__name__}: {exc}"
        return {
            **result,
            "status": "failed",
            "reason": reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__,
        }
    return {
        **result,
        "status": outcome.status,
        "wall_time": outcome.wall_time,
        "metrics": outcome.metrics,
        "resumed_from": outcome.resumed_from,
    }


def _init_pool_worker(threads: int, driver: int) -> None:
    """A pool worker: Ctrl-C is the driver's to handle (the stop file reaches us), we die
    with the driver, and torch uses ``threads`` threads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: an orphan finishes its node, locks keep it safe
        pass
    if os.getppid() != driver:  # the driver died while this worker was starting (before prctl)
        os._exit(1)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ backends
class InProcessBackend:
    """``--workers 1``: nodes run one after another in this process (no start-up cost)."""

    eager = False
    name = "this process (no workers)"

    def __init__(self) -> None:
        self.capacity = 1
        self._done: list[tuple[str, dict]] = []

    def submit(self, node: str, args: tuple, upstream: list[Any], resources: dict[str, float]) -> None:
        self._done.append((node, run_node(node, *args, *upstream)))

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        done, self._done = self._done, []
        return done

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


class PoolBackend:
    """``--workers N``: a local pool of N spawned processes (spawn: no forked torch state)."""

    eager = False

    def __init__(self, workers: int, threads: int) -> None:
        self.capacity, self.threads = workers, threads
        self.name = f"a pool of {workers} processes"
        self.pool = self._new_pool()
        self.futures: dict[cf.Future, tuple[str, str]] = {}

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.capacity,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_pool_worker,
            initargs=(self.threads, os.getpid()),
        )

    def submit(self, node: str, args: tuple, upstream: list[Any], resources: dict[str, float]) -> None:
        self.futures[self.pool.submit(run_node, node, *args, *upstream)] = (node, args[2])

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        if not self.futures:
            return []
        done, _ = cf.wait(list(self.futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out = []
        for future in done:
            node, log = self.futures.pop(future)
            try:
                out.append((node, future.result()))
            except Exception as exc:  # the worker process died (killed, out of memory, segfault)
                out.append(
                    (
                        node,
                        {
                            "node": node,
                            "status": "failed",
                            "log": log,
                            "reason": f"worker process died ({type(exc).__name__})",
                        },
                    )
                )
        if any(r["reason"].startswith("worker process died") for _, r in out if r.get("reason")):
            self._restart()
        return out

    def _restart(self) -> None:
        """A dead worker breaks the whole pool (every future in it fails, reported as
        ``failed`` by :meth:`wait`): start a new pool for the nodes not submitted yet."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def abort(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():  # this process's pool workers only
            child.kill()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class RayBackend:
    """``--ray [ADDRESS|auto]``: each node a Ray task with its stage kind's resources; its
    inputs' tasks are passed as object refs, so Ray runs it when they are done."""

    eager = True

    def __init__(self, address: str | None, threads: int, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise CorlError('--ray: Ray is not installed; install the extra: pip install -e ".[ray]"') from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address in (None, "", "local"):
                if num_cpus:
                    kwargs["num_cpus"] = num_cpus
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise CorlError(
                    f"--ray {address}: cannot connect ({exc}); start a head with `ray start --head`"
                ) from None
        self.capacity = 1 << 30
        self.name = f"Ray ({address or 'local'})"
        self.remote = ray.remote(run_node)
        self.refs: dict[Any, tuple[str, str]] = {}
        self.handles: dict[str, Any] = {}

    def handle(self, node: str) -> Any:
        return self.handles[node]

    def submit(self, node: str, args: tuple, upstream: list[Any], resources: dict[str, float]) -> None:
        options = {
            "num_cpus": resources.get("num_cpus", 1.0),
            "num_gpus": resources.get("num_gpus", 0.0),
            "max_retries": 0,
            "name": node,
        }
        ref = self.remote.options(**options).remote(node, *args, *upstream)
        self.refs[ref] = (node, args[2])
        self.handles[node] = ref

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            node, log = self.refs.pop(ref)
            try:
                out.append((node, self.ray.get(ref)))
            except Exception as exc:  # the worker died, or the task was cancelled
                out.append(
                    (
                        node,
                        {
                            "node": node,
                            "status": "failed",
                            "log": log,
                            "reason": f"Ray task failed ({type(exc).__name__})",
                        },
                    )
                )
        return out

    def abort(self) -> None:
        for ref in list(self.refs):
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()

    def check_shared_root(self, root: Path, files: list[str]) -> None:
        check_shared_root(self.ray, root, files)


def _probe(path: str, token: str, files: list[str]) -> dict:
    """On one Ray node: does it see the driver's cache root (and the sweep's dataset files)?"""
    probe = Path(path)
    seen = probe.read_text() if probe.is_file() else None
    return {
        "host": socket.gethostname(),
        "root": "ok" if seen == token else ("missing" if seen is None else "other"),
        "missing": [f for f in files if not Path(f).is_file()],
    }


def check_shared_root(ray: Any, root: Path, files: list[str]) -> None:
    """Every alive Ray node must see ``root`` (a token file written here is read there) and
    the dataset files; a node that does not is one clear error, before any work, instead of
    silently recomputing into its own disk."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = root / f".corl-root-probe-{token[:12]}"
    probe.write_text(token)
    try:
        remote = ray.remote(_probe)
        refs = [
            remote.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(probe), token, files)
            for n in ray.nodes()
            if n.get("Alive")
        ]
        for answer in ray.get(refs, timeout=120):
            if answer["root"] != "ok":
                what = "does not see" if answer["root"] == "missing" else "sees another directory at"
                raise CorlError(
                    f"--ray: node {answer['host']} {what} the cache root {root}; a cluster sweep needs "
                    "the cache root on a filesystem shared by every node (--checkpoints DIR)"
                )
            if answer["missing"]:
                raise CorlError(
                    f"--ray: node {answer['host']} does not see the dataset file {answer['missing'][0]}; "
                    "put the datasets on the shared filesystem too"
                )
    finally:
        probe.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ scheduling
class SweepCallbacks:
    """What the scheduler reports (the CLI shows it; tests record it)."""

    def node_submitted(self, node: str) -> None: ...

    def node_finished(self, result: NodeResult) -> None: ...

    def message(self, text: str, level: str = "info") -> None: ...


class Scheduler:
    """Runs a graph's nodes on a backend (see the module docstring)."""

    def __init__(
        self,
        graph: Graph,
        backend: Any,
        sweep_dir: Path,
        threads: int = 1,
        resources: dict[str, dict[str, float]] | None = None,
        callbacks: SweepCallbacks | None = None,
    ) -> None:
        self.graph, self.backend, self.sweep_dir, self.threads = graph, backend, sweep_dir, threads
        self.resources = resources or {}
        self.callbacks = callbacks or SweepCallbacks()
        self.stop = StopFileFlag(sweep_dir / "stop")
        self.stopping = False
        self.results: dict[str, NodeResult] = {}

    def log_path(self, node: str) -> Path:
        return self.sweep_dir / "logs" / f"{node}.log"

    def _resources(self, kind: str) -> dict[str, float]:
        out = {"num_cpus": 1.0, "num_gpus": 0.0}
        out.update(self.resources.get("default", {}))
        out.update(self.resources.get(kind, {}))
        return out

    def _finish(self, result: NodeResult) -> None:
        self.results[result.node] = result
        self.callbacks.node_finished(result)

    def run(self) -> dict[str, NodeResult]:
        """Run every node that is not cached; returns every node's result."""
        graph, backend = self.graph, self.backend
        self.stop.path.unlink(missing_ok=True)
        for nid, node in graph.nodes.items():
            if node.status == "cached":
                art = node.job.stage.artifact
                self.results[nid] = NodeResult(nid, "cached", metrics=art.metrics if art else {})
        pending = graph.todo()
        inflight: set[str] = set()
        handler = _StopOnSigint(self)
        with handler:
            try:
                while pending or inflight:
                    if self.stopping:
                        for nid in pending:
                            self._finish(NodeResult(nid, "not_started"))
                        pending = []
                    for nid in list(pending):
                        node = graph.nodes[nid]
                        if not backend.eager:
                            bad = next(
                                (d for d in node.deps if d in self.results and self.results[d].status not in OK), None
                            )
                            if bad is not None:
                                pending.remove(nid)
                                status = (
                                    "skipped" if self.results[bad].status in ("failed", "skipped") else "not_started"
                                )
                                self._finish(NodeResult(nid, status, reason=f"input {bad} {self.results[bad].status}"))
                                continue
                            if any(d not in self.results for d in node.deps) or len(inflight) >= backend.capacity:
                                continue
                            upstream: list[Any] = []
                        else:
                            upstream = [backend.handle(d) if d in inflight else self._as_dict(d) for d in node.deps]
                        self.log_path(nid).parent.mkdir(parents=True, exist_ok=True)
                        args = (node.job, str(self.stop.path), str(self.log_path(nid)), self.threads)
                        pending.remove(nid)
                        inflight.add(nid)
                        self.callbacks.node_submitted(nid)
                        backend.submit(nid, args, upstream, self._resources(node.kind))
                    for nid, value in backend.wait(0.25):
                        inflight.discard(nid)
                        self._finish(NodeResult.from_dict(value))
            except KeyboardInterrupt:  # the second Ctrl-C: stop the workers now
                backend.abort()
                for nid in list(inflight) + pending:
                    if nid not in self.results:
                        self.results[nid] = NodeResult(nid, "interrupted", reason="aborted")
                self.stopping = True
        return self.results

    def _as_dict(self, node: str) -> dict:
        r = self.results[node]
        return {"node": r.node, "status": r.status}

    def request_stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop.request()
            self.callbacks.message(
                "Ctrl-C: no new nodes; running nodes save a checkpoint and stop (Ctrl-C again to kill them now)",
                "warning",
            )


class _StopOnSigint:
    """First Ctrl-C: :meth:`Scheduler.request_stop`. Second: KeyboardInterrupt (abort)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.previous: Any = None
        self.active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> "_StopOnSigint":
        if self.active:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.scheduler.stopping:
            raise KeyboardInterrupt
        self.scheduler.request_stop()

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self.previous)


def make_backend(
    workers: int, ray_address: str | None, threads: int, use_ray: bool, ray_cpus: int | None = None
) -> Any:
    if use_ray:
        return RayBackend(ray_address, threads, ray_cpus)
    if workers <= 1:
        return InProcessBackend()
    return PoolBackend(workers, threads)
