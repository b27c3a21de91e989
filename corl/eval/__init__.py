"""Evaluation: rollouts, normalized scores, sim2real perturbations, observation attacks, plots.

Kept import-free on purpose: ``corl eval`` pulls in simulators (MuJoCo, PyBullet) and
matplotlib only through the submodule it needs, so importing ``corl.eval`` stays cheap.
"""
