"""One validation layer for values from the command line and from config files.

Why in one place: the same kinds of value (a seed, a step count, a learning rate, a layer
list) arrive through ``--seed``, ``--set``, presets and specs; each must fail the same way,
before any work is spent (one line naming the option and the range expected), instead of
passing a dry run and crashing after an hour of training.

Config rules go by field type and name, so every stage kind's config is covered, new ones
included: every float is finite (NaN never; an infinity only where it is a documented setting,
:data:`INFINITE_OK`); every int is >= 0; counts and sizes (:data:`POSITIVE_INTS`,
``*_lr`` rates, ``hidden`` layer lists) are >= 1 or > 0; discounts lie in [0, 1]; cost
limits are >= 0 (costs are non-negative). A field may override its rule with
``metadata={"min": ..., "max": ...}``. Dataset values read from disk are checked in
:mod:`corl.data.validation`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from corl.errors import ConfigError

#: The seed range every consumer accepts (numpy's legacy seed, env resets, torch generators).
SEED_MAX = 2**32 - 1
#: Int config fields that count or size something and must be >= 1.
POSITIVE_INTS = frozenset(
    {
        "steps",
        "batch_size",
        "episodes",
        "num_envs",
        "ensemble_size",
        "num_elites",
        "epochs",
        "n_policy_epochs",
        "train_epochs",
        "steps_per_epoch",
        "steps_per_pretrain_epoch",
        "episodes_per_round",
        "buffer_size",
        "sample_action_num",
        "num_q",
        "num_qc",
        "num_critics",
        "num_samples",
        "width",
        "time_dim",
        "memory_capacity",
        "k_knn",
        "update_iters",
        "estimate_episodes",
        "estimate_every",
        "estimate_num_envs",
        "eval_episodes",
        "max_holdout",
        "n_step",
        "mstep_iter_num",
        "estep_iter_num",
        "slsqp_maxiter",
        "rollout_length",
        "rollout_batch_size",
        "rollout_freq",
        "blocks",
        "expansion",
        "model_retain_epochs",
        "reward_scale_episode_steps",
        "max_q_backup_samples",
        "max_epochs_since_update",
        "episode_len",
        "episode_length",
        "horizon",
        "max_epochs",
        "episode_rerun_num",
    }
)
#: Float fields that are probabilities or discounts, in [0, 1].
UNIT_FLOATS = frozenset(
    {
        "gamma",
        "cost_gamma",
        "tau",
        "expectile",
        "cost_expectile",
        "dropout",
        "holdout_ratio",
        "real_ratio",
        "density",
        "intrinsic_decay",
        "t_min",
        "t_max",
    }
)


#: Float fields where an infinity is a documented setting (``-inf``: no clamp); bounds named
#: ``*_max`` / ``*_upper_bound`` also take ``inf`` (no bound). NaN is never a setting.
INFINITE_OK = frozenset({"target_clamp_min"})


def finite_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        out = float(value)
    except OverflowError:
        raise ConfigError(f"{where}: {value!r} is too large for a float") from None
    if not math.isfinite(out):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return out


def int_in_range(value: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"in [{lo}, {hi}]")
        raise ConfigError(f"{where}: expected an integer {span}, got {value}")
    return value


def check_seed(seed: Any, where: str = "--seed") -> int:
    return int_in_range(seed, where, 0, SEED_MAX)


def check_run_options(req: Any) -> None:
    """The numeric options of a run request (``corl run``'s flags)."""
    check_seed(req.seed)
    if req.checkpoint_every_steps is not None:
        int_in_range(req.checkpoint_every_steps, "--checkpoint-every", 1)
    if req.checkpoint_every_seconds is not None:
        if finite_float(req.checkpoint_every_seconds, "--checkpoint-seconds") <= 0:
            raise ConfigError(f"--checkpoint-seconds: expected a number > 0, got {req.checkpoint_every_seconds}")
    if getattr(req, "log_every", None) is not None:
        int_in_range(req.log_every, "log_every", 1)
    if getattr(req, "lock_timeout", None) is not None and finite_float(req.lock_timeout, "lock timeout") < 0:
        raise ConfigError(f"lock timeout: expected a number >= 0, got {req.lock_timeout}")


def _rule(name: str, value: Any) -> tuple[float | None, float | None, bool]:
    """(min, max, min exclusive) for a config field by its name and value's type."""
    if isinstance(value, float):
        if name == "lr" or name.endswith("_lr"):
            return 0.0, None, True
        if name in UNIT_FLOATS:
            return 0.0, 1.0, False
        if "cost_limit" in name or name == "cost_threshold":
            return 0.0, None, False
        return None, None, False
    if isinstance(value, int) and not isinstance(value, bool):
        return (1 if name in POSITIVE_INTS else 0), None, False
    return None, None, False


def check_value(name: str, value: Any, where: str, field: dataclasses.Field | None = None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is acceptable for config field ``name``."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (list, tuple)):
        if name == "hidden" and not value:
            raise ConfigError(f"{where}: expected at least one hidden layer, got []")
        for i, item in enumerate(value):
            check_value("hidden" if name == "hidden" else name.rstrip("s"), item, f"{where}[{i}]")
        if name == "hidden":
            for i, item in enumerate(value):
                int_in_range(item, f"{where}[{i}]", 1)
        return
    if isinstance(value, float):
        if math.isnan(value) or not (name in INFINITE_OK or name.endswith(("_max", "_upper_bound"))):
            finite_float(value, where)
    lo, hi, open_lo = _rule(name, value)
    meta = field.metadata if field is not None else {}
    lo, hi = meta.get("min", lo), meta.get("max", hi)
    if lo is not None and (value <= lo if open_lo else value < lo):
        raise ConfigError(f"{where}: expected {'>' if open_lo else '>='} {lo:g}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: expected <= {hi:g}, got {value!r}")


def check_config(config: Any, where: str) -> None:
    """Every field of a stage's config dataclass instance (see the module docstring)."""
    for f in dataclasses.fields(config):
        check_value(f.name, getattr(config, f.name), f"{where}.{f.name}", f)
