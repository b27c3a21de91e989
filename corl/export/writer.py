"""``corl export``: a trained policy as a standalone TorchScript or ONNX file plus a JSON card.

The file holds :class:`~corl.export.deployable.DeployablePolicy` (observation normalisation,
deterministic action, clip to the action box), traced on a batch of observations with a
dynamic batch dimension: input ``obs`` (B, obs_dim) float32, output ``action`` (B, act_dim)
float32. Loading it needs plain ``torch.jit.load`` or ``onnxruntime``, not corl.

The card (``<file>.json``) says what the file is: task, observation and action spaces, the
dataset's sha256, the training artifact (kind, key, config), the run's normalized scores at
export time, and the file's own sha256. Files are written to temporary names and renamed.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from corl.errors import CorlError
from corl.export.deployable import LoadedPolicy

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 17


def _example(policy: LoadedPolicy, batch: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, policy.obs_dim, generator=gen)


def write_torchscript(policy: LoadedPolicy, path: Path) -> Path:
    """Trace (the deterministic path has no data-dependent branches) and save."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the unused log-prob branch
        traced = torch.jit.trace(policy.module, _example(policy), check_trace=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.jit.save(traced, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_onnx(policy: LoadedPolicy, path: Path) -> Path:
    """ONNX through torch's TorchScript-based exporter (no onnxscript needed), batch dynamic."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise CorlError(
            "--format onnx needs the onnx extra: pip install 'corl-saferl[onnx]' (onnx, onnxruntime)"
        ) from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                policy.module,
                (_example(policy),),
                str(tmp),
                input_names=["obs"],
                output_names=["action"],
                dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def card(policy: LoadedPolicy, fmt: str, file: Path, about: dict[str, Any]) -> dict[str, Any]:
    """The JSON card beside an exported file (see the module docstring)."""
    from corl.data.hashing import file_sha256
    from corl.version import __version__

    return {
        "format": fmt,
        "file": file.name,
        "sha256": file_sha256(file),
        "input": {
            "name": "obs",
            "shape": ["batch", policy.obs_dim],
            "dtype": "float32",
            "note": "raw simulator observations: the normalisation is inside the file",
        },
        "output": {
            "name": "action",
            "shape": ["batch", policy.act_dim],
            "dtype": "float32",
            "note": "deterministic action, clipped to [act_low, act_high]",
        },
        "observation_space": {"shape": [policy.obs_dim], "normalized_inside": bool(policy.module.normalize)},
        "action_space": {"shape": [policy.act_dim], "low": policy.act_low, "high": policy.act_high},
        "policy": {"builder": policy.builder, "kwargs": policy.spec.get("kwargs", {})},
        **about,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"corl": __version__, "torch": torch.__version__},
        "load": (
            {"python": "torch.jit.load(file)(torch.as_tensor(obs, dtype=torch.float32))"}
            if fmt == "torchscript"
            else {"python": "onnxruntime.InferenceSession(file).run(['action'], {'obs': obs.astype('float32')})"}
        ),
    }


def export(policy: LoadedPolicy, fmt: str, out_dir: Path, name: str, about: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``out_dir/<name><suffix>`` and its card ``out_dir/<name><suffix>.json``; returns both paths."""
    from corl.store.artifacts import write_json_atomic

    if fmt not in FORMATS:
        raise CorlError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}{SUFFIX[fmt]}"
    (write_torchscript if fmt == "torchscript" else write_onnx)(policy, path)
    card_path = path.with_name(path.name + ".json")  # x.onnx.json, x.pt.json: both formats fit in one dir
    write_json_atomic(card_path, card(policy, fmt, path, about))
    return path, card_path


__all__ = ["FORMATS", "export", "card", "write_torchscript", "write_onnx"]
