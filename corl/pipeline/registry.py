"""Stage kinds registered by name, each with its config dataclass and code version.

Why a registry: a spec names kinds (``kind = "bc"``) and the engine must validate every key
against the kind's config before any work starts, and fold the kind's code version into the
artifact key so that a change of the code invalidates old artifacts and nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from corl.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from corl.pipeline.context import FingerprintContext, RunOptions, StageContext, StageResult, UpstreamRun
    from corl.store.artifacts import Artifact


@dataclass(frozen=True)
class StageKind:
    """A registered stage kind (see ``corl.pipeline.stages`` for the contract)."""

    name: str
    fn: Callable[["StageContext"], "StageResult"]
    config: type
    version: str
    inputs: tuple[str, ...] = ()
    seeded: bool = True
    fingerprint: Callable[["FingerprintContext"], dict[str, Any]] | None = None
    description: str = ""
    upstream: Callable[["FingerprintContext"], "UpstreamRun | None"] | None = None
    stale: Callable[["Artifact", "RunOptions"], str | None] | None = None

    @property
    def config_fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config)}


_REGISTRY: dict[str, StageKind] = {}


def register_stage(
    name: str,
    *,
    config: type,
    version: str,
    inputs: tuple[str, ...] = (),
    seeded: bool = True,
    fingerprint: Callable[["FingerprintContext"], dict[str, Any]] | None = None,
    description: str = "",
    upstream: Callable[["FingerprintContext"], "UpstreamRun | None"] | None = None,
    stale: Callable[["Artifact", "RunOptions"], str | None] | None = None,
) -> Callable[[Callable], Callable]:
    """Decorator registering a stage function under ``name`` (hooks: ``corl.pipeline.stages``)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"stage {name!r}: config must be a dataclass, got {config!r}")

    def decorate(fn: Callable) -> Callable:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn.__module__ != fn.__module__:
            raise ValueError(f"stage kind {name!r} registered twice ({existing.fn.__module__}, {fn.__module__})")
        _REGISTRY[name] = StageKind(
            name,
            fn,
            config,
            str(version),
            tuple(inputs),
            seeded,
            fingerprint,
            description or (fn.__doc__ or "").strip().split("\n")[0],
            upstream,
            stale,
        )
        return fn

    return decorate


def stage_kinds() -> dict[str, StageKind]:
    """All registered kinds (imports every stage module on first use)."""
    from corl.pipeline import stages

    stages.load_all()
    return dict(_REGISTRY)


def get_stage_kind(name: str) -> StageKind:
    kinds = stage_kinds()
    if name not in kinds:
        raise ConfigError(f"unknown stage kind {name!r}{did_you_mean(name, kinds)}")
    return kinds[name]
