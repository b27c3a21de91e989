"""Make the OfflineCarCircle-v0 datasets of the multi-dataset quality bench (not a test).

Each kind is made only from ``corl datasets collect`` runs (real bullet-safety-gym episodes),
concatenated episode by episode into one DSRL-format HDF5 file. The kinds differ in origin, so a
setting chosen on one cannot be fitted to the others:

* ``scripted``: 200 episodes of corl's ``planar-pursuit`` controller, aggressiveness
  uniform in [0, 1] (the recipe of the sessions-1-2 bundled sample, another seed).
* ``mixture``: 100 uniform-random episodes + 300 scripted episodes at five aggressiveness
  levels (0-0.2, 0.2-0.4, ..., 0.8-1.0, 60 each): the recipe of ``shared/quality.md``'s
  "default mixture".
* ``unsafe``: 40 uniform-random + 260 scripted episodes with aggressiveness in [0.5, 1]
  (aggressive and borderline controllers dominate).
* ``safe``: 40 uniform-random + 260 scripted episodes with aggressiveness in [0, 0.45]
  (gentle controllers, little high-reward data).

The bundled CVPO-collected sample (``datasets/samples/OfflineCarCircle-v0.hdf5``) is the
fifth dataset of the bench; it is not remade here.

Run: ``.venv/bin/python bench/make_carcircle_datasets.py --out DIR [--seed S] [--kinds ...]``
(``--seed`` shifts every part's seed, so a second family of files is one flag away).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TASK = "OfflineCarCircle-v0"

# kind -> list of (policy, episodes, aggressiveness range)
RECIPES: dict[str, list[tuple[str, int, str]]] = {
    "scripted": [("scripted", 200, "0,1")],
    "mixture": [("random", 100, "0,1")]
    + [("scripted", 60, f"{lo:.1f},{lo + 0.2:.1f}") for lo in (0.0, 0.2, 0.4, 0.6, 0.8)],
    "unsafe": [("random", 40, "0,1"), ("scripted", 260, "0.5,1")],
    "safe": [("random", 40, "0,1"), ("scripted", 260, "0,0.45")],
}


def collect(policy: str, episodes: int, aggr: str, seed: int, out: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "corl.cli",
        "datasets",
        "collect",
        "--task",
        TASK,
        "--policy",
        policy,
        "--episodes",
        str(episodes),
        "--seed",
        str(seed),
        "--aggressiveness",
        aggr,
        "-o",
        str(out),
    ]
    print("  $", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def concatenate(parts: list[Path], out: Path, kind: str, seed: int) -> None:
    from corl.data.dataset import TransitionDataset
    from corl.data.formats.dsrl import read_dsrl, write_dsrl

    arrays = [read_dsrl(p).to_numpy() for p in parts]
    merged = {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}
    meta = {
        "task": TASK,
        "source": f"corl bench/make_carcircle_datasets.py kind={kind} seed={seed}",
        "collector": "corl datasets collect (random + planar-pursuit)",
    }
    write_dsrl(TransitionDataset.from_numpy(merged, meta), out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--kinds", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        target = args.out / f"carcircle-{kind}-s{args.seed}.hdf5"
        if target.exists():
            print(f"{target} exists, kept")
            continue
        print(f"{kind} -> {target}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            parts = []
            for i, (policy, episodes, aggr) in enumerate(RECIPES[kind]):
                part = Path(tmp) / f"part{i}.hdf5"
                collect(policy, episodes, aggr, args.seed + 1000 * i, part)
                parts.append(part)
            concatenate(parts, target, kind, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
