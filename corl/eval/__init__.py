"""Evaluation: rollouts, normalized scores, sim2real perturbations, observation attacks, plots.

Kept import-free on purpose: ``corl eval`` pulls in simulators (MuJoCo, PyBullet) and
matplotlib only through the submodule it needs, so importing ``corl.eval`` stays cheap.
"""

#: The attack budgets ``corl eval --attack`` sweeps when ``--eps`` is not given (x the data's obs std).
DEFAULT_EPS = "0:0.2:5"
