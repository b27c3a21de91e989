"""Resumable checkpoints of a running stage: learner state, RNG states and the step.

Why the RNG states: an exact resume needs the same random numbers after the restart as an
uninterrupted run would have drawn (batch indices, policy noise, dropout), so python's,
numpy's and torch's (CPU and CUDA) generator states are saved with the learner's
``state_dict``. Everything is stored as tensors and plain containers so the file loads with
``torch.load(weights_only=True)``, which cannot execute code from a tampered file.

Writes go to a temporary file that is renamed over ``checkpoint.pt``: a kill during the write
leaves the previous checkpoint intact. The payload is serialized in memory first and written by
:func:`corl.files.atomic_write`, so a full disk is one line naming the file and leaves no
temporary file behind (``torch.save`` straight to a full disk raises ``RuntimeError``).
An unreadable checkpoint (truncated by a bad disk or a copy) is never silently ignored:
planning says "will restart" and the stage reports that it restarts from step 0.
"""

from __future__ import annotations

import random
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corl.files import torch_save_atomic

CHECKPOINT_FILE = "checkpoint.pt"


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (cheap: the zip directory torch writes), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "not a torch checkpoint"
    except FileNotFoundError:
        return "missing"
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return f"unreadable ({exc.__class__.__name__}: truncated or corrupt)"
    return None


def capture_rng_states() -> dict[str, Any]:
    """python/numpy/torch RNG states as tensors and lists (weights_only-loadable)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = states["numpy"]
    np.random.set_state(
        (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed: int) -> None:
    """One seed for python, numpy and torch (CPU and CUDA): same seed, same numbers on a CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Checkpointer:
    """Saves a stage's state every ``every_steps`` steps or ``every_seconds`` seconds."""

    def __init__(self, directory: Path, every_steps: int = 1000, every_seconds: float = 120.0) -> None:
        self.path = Path(directory) / CHECKPOINT_FILE
        self.every_steps = max(int(every_steps), 0)
        self.every_seconds = float(every_seconds)
        self._last_step = 0
        self._last_time = time.monotonic()
        self.saves = 0
        self.dropped: str | None = None  # why the checkpoint on disk could not be resumed from

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint ({"step", "state", "rng"}) or None; an unreadable one is dropped."""
        if not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or not isinstance(payload.get("step"), int) or "state" not in payload:
                raise ValueError("not a corl checkpoint")
        except Exception as exc:
            # truncated by a crash mid-rename is impossible; a bad disk or a copy is not
            self.dropped = f"{self.path} unreadable ({exc.__class__.__name__}); restarting from step 0"
            self.path.unlink(missing_ok=True)
            return None
        self._last_step = int(payload["step"])
        self._last_time = time.monotonic()
        return payload

    def due(self, step: int) -> bool:
        if self.every_steps and step - self._last_step >= self.every_steps:
            return True
        return self.every_seconds > 0 and time.monotonic() - self._last_time >= self.every_seconds

    def save(self, step: int, state: dict[str, Any]) -> None:
        payload = {"step": int(step), "state": state, "rng": capture_rng_states(), "time": time.time()}
        torch_save_atomic(payload, self.path)
        self._last_step = step
        self._last_time = time.monotonic()
        self.saves += 1

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
