"""Minari (0.4.x) datasets: export a :class:`TransitionDataset` to the local Minari store and
import one back.

Why a convention is needed: Minari has no standard for safety costs (see ecosystem notes D4),
so corl defines one and every Minari dataset it writes follows it:

* **One Minari episode per corl episode.** ``observations`` has T + 1 rows (the T observations
  of the episode plus the final ``next_observations``); ``actions``, ``rewards``,
  ``terminations`` (= corl ``terminals``) and ``truncations`` (= corl ``timeouts``) have T.
  Flags are copied as they are, so a final row with neither flag stays that way.
* **Cost in ``infos["cost"]``, laid out like Minari's own ``DataCollector(record_infos=True)``**:
  T + 1 float32 values where entry 0 belongs to the reset (always 0.0) and entry ``t + 1`` is
  the cost of step ``t``. The importer also accepts T values (one per step) from other
  writers, and reads zeros (with a note in metadata) when there is no ``infos["cost"]``.
* **Lossless next observations.** Minari derives step ``t``'s next observation from
  ``observations[t + 1]``. Where a corl episode's ``next_observations[t]`` differs from
  ``observations[t + 1]`` (data stitched from several sources), the episode is split there
  into Minari episodes whose last step has neither flag, so export -> import still gives the
  same transitions bit for bit; the number of such splits is recorded in the metadata.
* **Metadata.** Minari's ``ref_min_score`` / ``ref_max_score`` hold the task's reference
  returns (DSRL's min/max episode reward, or D4RL's random/expert returns), so
  ``minari.get_normalized_score`` works. corl adds attributes ``corl_cost_convention``,
  ``corl_task``, ``corl_env_id``, ``corl_cost_limits``, ``corl_max_episode_cost`` and the
  dataset's own metadata as JSON (``corl_metadata``).
* **No simulator needed.** Spaces are gymnasium ``Box`` spaces built from the data's dims
  (observations unbounded; actions in [-1, 1] when the data fits, else unbounded). When the
  task's env id is registered, its ``EnvSpec`` is stored as Minari's ``eval_env_spec``
  (``recover_environment(eval_env=True)`` then works) without making the env.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from corl.data.dataset import TransitionDataset
from corl.data.validation import normalize_shapes, validate_arrays
from corl.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover - import for annotations only
    import gymnasium as gym

    from corl.tasks import TaskSpec

COST_CONVENTION = "corl-v1: infos['cost'] has T+1 entries, [0] is the reset (0.0), [t+1] is step t's cost"
CORL_META_ATTR = "corl_metadata"


def minari_store_dir() -> Path:
    """The local Minari store (``MINARI_DATASETS_PATH`` or ``~/.minari/datasets``), as Minari computes it."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def _check_id(dataset_id: str) -> None:
    """Minari 0.4.3 parses ids as ``(env_name-)(dataset_name)-v(version)``; fail early and in one line."""
    from minari.dataset.minari_dataset import DATASET_ID_RE

    match = DATASET_ID_RE.fullmatch(dataset_id) if dataset_id else None
    if match is None or match.group("version") is None or "/" in dataset_id:
        raise DatasetError(
            f"Minari dataset id {dataset_id!r}: expected the form 'name-dataset-v<N>' (e.g. 'carcircle-corl-v0')"
        )


def _segments(dataset: TransitionDataset) -> tuple[np.ndarray, np.ndarray, int]:
    """Row ranges (starts, stops) of the Minari episodes, and how many extra splits were needed.

    A new segment starts after every episode end and after every row whose next observation
    is not the following row's observation (see the module docstring).
    """
    n = len(dataset)
    obs = dataset.observations.detach().cpu().numpy()
    nxt = dataset.next_observations.detach().cpu().numpy()
    ends = dataset.episode_ends.cpu().numpy().copy()
    breaks = np.zeros(n, dtype=bool)
    if n > 1:
        breaks[:-1] = np.any(nxt[:-1] != obs[1:], axis=1)
    extra = int(np.count_nonzero(breaks & ~ends))
    cut = ends | breaks
    stops = np.flatnonzero(cut) + 1
    starts = np.concatenate([[0], stops[:-1]]).astype(np.int64)
    return starts, stops, extra


def _default_spaces(dataset: TransitionDataset) -> tuple["gym.spaces.Box", "gym.spaces.Box"]:
    from gymnasium import spaces

    def box(dim: int, bound: float) -> "gym.spaces.Box":
        high = np.full(dim, bound, dtype=np.float32)
        return spaces.Box(-high, high, dtype=np.float32)

    bounded = len(dataset) == 0 or bool((dataset.actions.abs() <= 1.0).all())
    return box(dataset.obs_dim, np.inf), box(dataset.act_dim, 1.0 if bounded else np.inf)


def _eval_env_spec(env_id: str) -> Any:
    """The registered ``EnvSpec`` for ``env_id`` if it exists and serialises; None otherwise.

    Registering the ids imports the simulators' packages but makes no env.
    """
    try:
        import gymnasium as gym

        try:
            spec = gym.spec(env_id)
        except Exception:
            from corl.compat import import_dsrl

            import_dsrl()
            spec = gym.spec(env_id)
        spec.to_json()
        return spec
    except Exception:
        return None


def _episode_buffers(dataset: TransitionDataset, starts: np.ndarray, stops: np.ndarray) -> list[dict[str, Any]]:
    arrays = dataset.to_numpy()
    obs = np.ascontiguousarray(arrays["observations"], dtype=np.float32)
    nxt = np.ascontiguousarray(arrays["next_observations"], dtype=np.float32)
    buffers = []
    for start, stop in zip(starts.tolist(), stops.tolist()):
        cost = np.zeros(stop - start + 1, dtype=np.float32)
        cost[1:] = arrays["costs"][start:stop]
        buffers.append(
            {
                "observations": np.concatenate([obs[start:stop], nxt[stop - 1 : stop]], axis=0),
                "actions": np.ascontiguousarray(arrays["actions"][start:stop], dtype=np.float32),
                "rewards": np.ascontiguousarray(arrays["rewards"][start:stop], dtype=np.float32),
                "terminations": arrays["terminals"][start:stop].astype(bool),
                "truncations": arrays["timeouts"][start:stop].astype(bool),
                "infos": {"cost": cost},
            }
        )
    return buffers


def export_minari(
    dataset: TransitionDataset,
    dataset_id: str,
    task: "TaskSpec | None" = None,
    *,
    overwrite: bool = False,
    author: str | None = None,
    author_email: str | None = None,
    algorithm_name: str | None = None,
    code_permalink: str | None = None,
    observation_space: "gym.Space | None" = None,
    action_space: "gym.Space | None" = None,
) -> str:
    """Write ``dataset`` as Minari dataset ``dataset_id`` in the local Minari store.

    Returns the dataset's directory. The dataset is built under a hidden temporary id and moved
    into place only when complete, so a failed export never leaves a half-written dataset and
    ``overwrite=True`` keeps the old one until the new one exists.
    """
    import minari

    _check_id(dataset_id)
    if len(dataset) == 0:
        raise DatasetError(f"Minari export {dataset_id!r}: the dataset is empty")
    root = minari_store_dir()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise DatasetError(
            f"Minari dataset {dataset_id!r} already exists at {final}; pass overwrite=True (--overwrite) or choose another id"
        )

    default_obs, default_act = _default_spaces(dataset)
    starts, stops, extra = _segments(dataset)
    buffers = _episode_buffers(dataset, starts, stops)
    env_id = task.env_id if task is not None else dataset.metadata.get("env_id")
    eval_spec = _eval_env_spec(env_id) if env_id else None
    version = ".".join(minari.__version__.split(".")[:2])

    tmp_id = f".corl-tmp-{os.getpid()}-{dataset_id}"
    tmp_dir = root / tmp_id
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    trash = root / f".corl-old-{os.getpid()}-{dataset_id}"
    try:
        with warnings.catch_warnings():
            # Minari warns about every optional field left empty; corl records what it knows.
            warnings.simplefilter("ignore")
            created = minari.create_dataset_from_buffers(
                dataset_id=tmp_id,
                buffer=buffers,
                env=None,
                eval_env=eval_spec,
                algorithm_name=algorithm_name or dataset.metadata.get("collector") or dataset.metadata.get("source"),
                author=author or "corl",
                author_email=author_email,
                code_permalink=code_permalink,
                minari_version=f"~={version}",
                observation_space=observation_space or default_obs,
                action_space=action_space or default_act,
            )
        extra_meta: dict[str, Any] = {
            "dataset_id": dataset_id,
            "corl_cost_convention": COST_CONVENTION,
            "corl_extra_splits": extra,
            CORL_META_ATTR: json.dumps(
                {k: v for k, v in dataset.metadata.items() if k not in ("path", "sha256")}, default=str, sort_keys=True
            ),
        }
        if "sha256" in dataset.metadata:
            extra_meta["corl_source_sha256"] = str(dataset.metadata["sha256"])
        if env_id:
            extra_meta["corl_env_id"] = str(env_id)
        if task is not None:
            extra_meta["corl_task"] = task.name
            if task.cost_limits:
                extra_meta["corl_cost_limits"] = np.asarray(task.cost_limits, dtype=np.float64)
            if task.max_episode_cost is not None:
                extra_meta["corl_max_episode_cost"] = float(task.max_episode_cost)
            if task.reward_min is not None and task.reward_max is not None:
                # Minari reads these in get_normalized_score; passing them to
                # create_dataset_from_buffers would make the env, so they are set here.
                extra_meta["ref_min_score"] = float(task.reward_min)
                extra_meta["ref_max_score"] = float(task.reward_max)
        created.storage.update_metadata(extra_meta)
        if final.exists():
            os.replace(final, trash)
        os.replace(tmp_dir, final)
    except DatasetError:
        raise
    except Exception as exc:
        if trash.exists() and not final.exists():
            os.replace(trash, final)
        raise DatasetError(
            f"Minari export {dataset_id!r} to {root}: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if trash.exists():
            shutil.rmtree(trash, ignore_errors=True)
    return str(final)


def _attr(value: Any) -> Any:
    """h5py attribute values as plain Python (numpy scalars and arrays unwrapped)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def import_minari(dataset_id: str) -> TransitionDataset:
    """Read Minari dataset ``dataset_id`` from the local store as a :class:`TransitionDataset`.

    Works for any Minari dataset with flat ``Box`` observation and action spaces; costs come
    from ``infos["cost"]`` (corl's convention, or one value per step), zeros when absent.
    """
    import minari
    from gymnasium import spaces

    root = minari_store_dir()
    where = root / dataset_id
    try:
        with warnings.catch_warnings():
            # Deserialised Box bounds are float64 lists; gymnasium warns when casting them back.
            warnings.simplefilter("ignore", UserWarning)
            mdata = minari.load_dataset(dataset_id)
    except FileNotFoundError:
        raise DatasetError(
            f"Minari dataset {dataset_id!r} not found in the local Minari store {root} (MINARI_DATASETS_PATH); see `minari list local`"
        ) from None
    except Exception as exc:
        raise DatasetError(
            f"{where}: Minari dataset unreadable: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    for label, space in (("observation_space", mdata.observation_space), ("action_space", mdata.action_space)):
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise DatasetError(f"{where}: {label} {space} is not supported; corl reads flat Box spaces only")

    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")
    }
    missing_cost = 0
    episodes = mdata.storage.get_episodes(mdata.episode_indices.tolist())
    for episode in episodes:
        obs = np.asarray(episode["observations"], dtype=np.float32)
        steps = len(episode["rewards"])
        if obs.shape[0] != steps + 1:
            raise DatasetError(
                f"{where}: episode {episode['id']}: key 'observations' has {obs.shape[0]} rows, expected {steps + 1} (steps + 1)"
            )
        cost = episode["infos"].get("cost") if isinstance(episode["infos"], dict) else None
        if cost is None:
            missing_cost += 1
            cost = np.zeros(steps, dtype=np.float32)
        else:
            cost = np.asarray(cost, dtype=np.float32).reshape(-1)
            if cost.shape[0] == steps + 1:
                cost = cost[1:]
            elif cost.shape[0] != steps:
                raise DatasetError(
                    f"{where}: episode {episode['id']}: key 'infos/cost' has {cost.shape[0]} values, expected {steps} or {steps + 1}"
                )
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(np.asarray(episode["actions"], dtype=np.float32).reshape(steps, -1))
        parts["rewards"].append(np.asarray(episode["rewards"], dtype=np.float32).reshape(steps))
        parts["costs"].append(cost)
        parts["terminals"].append(np.asarray(episode["terminations"]).reshape(steps).astype(bool))
        parts["timeouts"].append(np.asarray(episode["truncations"]).reshape(steps).astype(bool))
    if not episodes:
        raise DatasetError(f"{where}: Minari dataset has no episodes")
    arrays = normalize_shapes({k: np.concatenate(v, axis=0) for k, v in parts.items()})
    validate_arrays(arrays, where)

    attrs = {k: _attr(v) for k, v in mdata.storage.metadata.items() if k not in ("observation_space", "action_space")}
    metadata: dict[str, Any] = {}
    raw = attrs.pop(CORL_META_ATTR, None)
    if raw:
        try:
            metadata.update(json.loads(raw))
        except json.JSONDecodeError:
            pass
    metadata["format"] = "minari"
    metadata["minari_dataset_id"] = dataset_id
    metadata["path"] = str(where)
    metadata["minari"] = {
        k: v for k, v in attrs.items() if isinstance(v, (str, int, float, bool, list)) and k != "env_spec"
    }
    if missing_cost:
        metadata["cost_note"] = f"no infos['cost'] in {missing_cost} of {len(episodes)} episodes: their costs read as 0"
    return TransitionDataset.from_numpy(arrays, metadata)
