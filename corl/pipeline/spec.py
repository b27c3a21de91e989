"""Pipeline specs (``pipelines/NAME.toml``): loading, validation and config resolution.

A spec is data, validated in full before any work starts, because a typo found after an hour
of training is an hour lost. Every error is one line naming the file and the dotted key, with
the closest valid key when there is one.

Layout::

    description = "..."
    [checkpoint]                       # run options: not part of any artifact key
    every_steps = 1000
    every_seconds = 120.0
    log_every = 100

    [stages.dataset]
    kind = "dataset"

    [stages.bc]
    kind = "bc"                        # a registered stage kind
    inputs = ["dataset"]               # or {role = "stage", ...}
    steps = 100000                     # any other key: a field of the kind's config

    [presets.quick.bc]                 # named presets: stage -> {key = value}
    steps = 2000

    [tasks."OfflineCarCircle-v0".bc]   # per-task overrides
    cost_limit = 10.0

Resolution order (later wins): the config dataclass defaults, the stage table, the task
override, the preset, then ``--set stage.key=value``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from corl.checks import check_config, check_value
from corl.errors import ConfigError, closest
from corl.pipeline.registry import StageKind, stage_kinds
from corl.store.pipelines import available_pipelines, pipeline_dirs


def did_you_mean(name: str, candidates) -> str:
    """`` (did you mean 'x'?)`` with the single closest valid name, or nothing."""
    hits = closest(str(name), list(candidates), n=1)
    return f" (did you mean {hits[0]!r}?)" if hits else ""


TOP_KEYS = ("description", "checkpoint", "stages", "presets", "tasks")
STAGE_RESERVED = ("kind", "inputs", "description")


@dataclass(frozen=True)
class CheckpointPolicy:
    """How often a running stage saves a resumable checkpoint and logs metrics."""

    every_steps: int = 1000
    every_seconds: float = 120.0
    log_every: int = 100


@dataclass
class StageSpec:
    name: str
    kind: StageKind
    inputs: dict[str, str]  # role -> stage name
    params: dict[str, Any]  # config keys given in the stage table


@dataclass
class PipelineSpec:
    """A validated spec: stages in dependency order, presets, task overrides."""

    name: str
    path: Path
    description: str
    stages: dict[str, StageSpec]  # topological order
    presets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    tasks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)

    @property
    def order(self) -> list[str]:
        return list(self.stages)

    def resolve(
        self, task: str | None = None, preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The config dataclass instance of every stage for this task/preset/overrides."""
        values: dict[str, dict[str, Any]] = {name: dict(s.params) for name, s in self.stages.items()}
        if task is not None:
            for tname, table in self.tasks.items():
                if _same_task(tname, task):
                    for stage, params in table.items():
                        values[stage].update(params)
        if preset is not None:
            if preset not in self.presets:
                known = sorted(self.presets)
                raise ConfigError(
                    f"{self.path}: no preset {preset!r}{did_you_mean(preset, known)}; presets: {', '.join(known) or 'none'}"
                )
            for stage, params in self.presets[preset].items():
                values[stage].update(params)
        for item in overrides:
            stage, key, value = self._parse_override(item)
            values[stage][key] = value
        return {
            name: build_config(s.kind, values[name], f"{self.path}: stages.{name}") for name, s in self.stages.items()
        }

    def _parse_override(self, item: str) -> tuple[str, str, Any]:
        where = f"--set {item}"
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"{where}: expected stage.key=value")
        lhs, raw = item.split("=", 1)
        stage, key = lhs.strip().split(".", 1)
        if stage not in self.stages:
            raise ConfigError(f"{where}: no stage {stage!r} in {self.path.name}{did_you_mean(stage, self.stages)}")
        fields = self.stages[stage].kind.config_fields
        if key not in fields:
            raise ConfigError(
                f"{where}: stage {stage!r} ({self.stages[stage].kind.name}) has no key {key!r}{did_you_mean(key, fields)}"
            )
        value = parse_value(raw.strip())
        hint = typing.get_type_hints(self.stages[stage].kind.config).get(key, Any)
        try:
            coerced = _coerce(value, hint, where)
        except ConfigError:
            return stage, key, value  # a type error: build_config names the key and the type expected
        check_value(key, coerced, where, fields[key])  # a range error names the --set
        return stage, key, value


def _same_task(spec_name: str, task: str) -> bool:
    if spec_name == task:
        return True
    try:
        from corl.tasks import get_task

        return get_task(spec_name).name == get_task(task).name
    except Exception:
        return False


def parse_value(raw: str) -> Any:
    """A ``--set`` value as TOML (``3``, ``1e-4``, ``true``, ``[256, 256]``, ``"x"``); else a string."""
    if raw.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation; ints become floats where floats are due."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if errors else ConfigError(f"{where}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(annotation) or (Any,)
        return [_coerce(v, inner, where) for v in value]
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build_config(kind: StageKind, values: dict[str, Any], where: str) -> Any:
    """Instantiate ``kind.config`` from ``values`` (checked key by key)."""
    hints = typing.get_type_hints(kind.config)
    fields = kind.config_fields
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key for stage kind {kind.name!r}{did_you_mean(key, fields)}")
        kwargs[key] = _coerce(value, hints.get(key, Any), f"{where}.{key}")
    try:
        config = kind.config(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check_config(config, where)  # ranges and finiteness, by field (corl.checks)
    return config


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


# ------------------------------------------------------------------------------- loading
def find_spec(name: str) -> Path:
    """A pipeline name (or a path to a .toml file) to its file."""
    as_path = Path(name)
    if name.endswith(".toml") or as_path.is_file():
        if not as_path.is_file():
            raise ConfigError(f"{name}: no such pipeline file")
        return as_path
    for d in pipeline_dirs():
        candidate = d / f"{name}.toml"
        if candidate.is_file():
            return candidate
    known = available_pipelines()
    raise ConfigError(f"unknown pipeline {name!r}{did_you_mean(name, known)}; available: {', '.join(known) or 'none'}")


def load_spec(name_or_path: str | Path) -> PipelineSpec:
    """Load and fully validate a spec (kinds, keys, inputs, cycles, presets, task overrides)."""
    path = find_spec(str(name_or_path))
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable: {exc.strerror}") from None
    return parse_spec(raw, path)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def parse_spec(raw: dict[str, Any], path: Path) -> PipelineSpec:
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: {key}: unknown key{did_you_mean(key, TOP_KEYS)}")
    stages_raw = _table(raw.get("stages", {}), f"{path}: stages")
    if not stages_raw:
        raise ConfigError(f"{path}: stages: no stages defined")
    kinds = stage_kinds()

    stages: dict[str, StageSpec] = {}
    for name, table in stages_raw.items():
        where = f"{path}: stages.{name}"
        table = _table(table, where)
        if "kind" not in table:
            raise ConfigError(f"{where}.kind: missing (one of: {', '.join(sorted(kinds))})")
        kind_name = table["kind"]
        if kind_name not in kinds:
            raise ConfigError(f"{where}.kind: unknown stage kind {kind_name!r}{did_you_mean(str(kind_name), kinds)}")
        kind = kinds[kind_name]
        inputs_raw = table.get("inputs", [])
        if isinstance(inputs_raw, list):
            inputs = {str(s): str(s) for s in inputs_raw}
        elif isinstance(inputs_raw, dict):
            inputs = {str(k): str(v) for k, v in inputs_raw.items()}
        else:
            raise ConfigError(f"{where}.inputs: expected a list of stage names or a table role = stage")
        params = {k: v for k, v in table.items() if k not in STAGE_RESERVED}
        build_config(kind, params, where)  # validates keys and types now
        stages[name] = StageSpec(name, kind, inputs, params)

    for name, stage in stages.items():
        where = f"{path}: stages.{name}.inputs"
        for role, target in stage.inputs.items():
            if target not in stages:
                raise ConfigError(f"{where}: no stage {target!r}{did_you_mean(target, stages)}")
            if target == name:
                raise ConfigError(f"{where}: stage {name!r} depends on itself")
        for role in stage.kind.inputs:
            if role not in stage.inputs:
                raise ConfigError(
                    f"{where}: missing input {role!r} required by kind {stage.kind.name!r}"
                    f' (e.g. inputs = {{{role} = "<stage>"}})'
                )

    order = _toposort(stages, path)

    presets: dict[str, dict[str, dict[str, Any]]] = {}
    for pname, ptable in _table(raw.get("presets", {}), f"{path}: presets").items():
        presets[pname] = _overrides(ptable, stages, f"{path}: presets.{pname}")
    tasks: dict[str, dict[str, dict[str, Any]]] = {}
    for tname, ttable in _table(raw.get("tasks", {}), f"{path}: tasks").items():
        _check_task(tname, f"{path}: tasks.{tname}")
        tasks[tname] = _overrides(ttable, stages, f"{path}: tasks.{tname}")

    ck_raw = _table(raw.get("checkpoint", {}), f"{path}: checkpoint")
    ck_fields = {f.name: f for f in dataclasses.fields(CheckpointPolicy)}
    ck_hints = typing.get_type_hints(CheckpointPolicy)
    ck = {}
    for key, value in ck_raw.items():
        if key not in ck_fields:
            raise ConfigError(f"{path}: checkpoint.{key}: unknown key{did_you_mean(key, ck_fields)}")
        ck[key] = _coerce(value, ck_hints[key], f"{path}: checkpoint.{key}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{path}: description: expected a string")
    return PipelineSpec(
        name=path.stem,
        path=path,
        description=description,
        stages={n: stages[n] for n in order},
        presets=presets,
        tasks=tasks,
        checkpoint=CheckpointPolicy(**ck),
    )


def _overrides(table: Any, stages: dict[str, StageSpec], where: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for stage, params in _table(table, where).items():
        if stage not in stages:
            raise ConfigError(f"{where}.{stage}: no stage {stage!r}{did_you_mean(stage, stages)}")
        params = _table(params, f"{where}.{stage}")
        merged = dict(stages[stage].params)
        merged.update(params)
        build_config(stages[stage].kind, merged, f"{where}.{stage}")
        out[stage] = dict(params)
    return out


def _check_task(name: str, where: str) -> None:
    from corl.errors import TaskError
    from corl.tasks import get_task, task_names

    try:
        get_task(name)
    except TaskError:
        hits = closest(name, task_names(), n=1)
        hint = f" (did you mean {hits[0]!r}?)" if hits else ""
        raise ConfigError(f"{where}: unknown task {name!r}{hint}") from None


def _toposort(stages: dict[str, StageSpec], path: Path) -> list[str]:
    """Stages in dependency order (spec order among equals); a cycle is named in the error."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name) :] + [name]
            raise ConfigError(f"{path}: stages.{name}.inputs: dependency cycle {' -> '.join(cycle)}")
        state[name] = 1
        for target in stages[name].inputs.values():
            visit(target, trail + [name])
        state[name] = 2
        order.append(name)

    for name in stages:
        visit(name, [])
    return order


def dependents(spec: PipelineSpec, name: str) -> set[str]:
    """Every stage that depends on ``name``, directly or not."""
    out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for s in spec.stages.values():
            if s.name not in out and any(t == name or t in out for t in s.inputs.values()):
                out.add(s.name)
                changed = True
    return out
