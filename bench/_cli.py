"""Shared by the bench scripts that drive the ``corl`` command as subprocesses (exactly the
user's commands): where the command is, and one logged, checked invocation."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORL = str(ROOT / ".venv" / "bin" / "corl")


def run_logged(cmd: list[str], env: dict[str, str], log: Path) -> tuple[str, float]:
    """Run ``cmd`` in the repository root; append command, output and wall time to ``log``.

    Returns ``(stdout, wall seconds)``; a failure exits the bench with the command and the end
    of its stderr (a bench has no use for a partial table).
    """
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + f"\n{proc.stdout}\n{proc.stderr}\n# rc={proc.returncode} wall={wall:.1f}s\n")
    if proc.returncode != 0:
        sys.exit(f"failed (rc {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}\nlog: {log}")
    return proc.stdout, wall


def finished_stage(stdout: str, root: Path, kind: str) -> tuple[Path, dict]:
    """The artifact directory and run-record entry of stage ``kind`` of the run that printed
    ``stdout`` (its "run record:" line; rich may wrap it, then the newest record under
    ``root/runs`` is used)."""
    import json
    import re

    m = re.search(r"run record: (\S+\.json)", stdout.replace("\n", " ").replace("  ", " "))
    if m and Path(m.group(1)).is_file():
        record_path = Path(m.group(1))
    else:
        record_path = max((root / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    record = json.loads(record_path.read_text())
    for stage in record["stages"]:
        if stage["kind"] == kind:
            return root / stage["dir"], stage
    sys.exit(f"{record_path}: no {kind} stage")
