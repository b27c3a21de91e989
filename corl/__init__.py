"""corl: offline-first safe (constrained) reinforcement learning.

Layers, imports running one way (down): ``cli`` -> ``pipeline`` -> ``algos``, ``eval`` ->
``nn``, ``data``, ``envs``/``tasks``.
"""

__version__ = "0.1.0"
