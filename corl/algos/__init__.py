"""Learning algorithms: one sub-package per method (``drcorl``, ``micro``, ``baselines``, ...).

Each method exposes pure learners (``update(batch) -> dict[str, float]``, ``state_dict()``,
``load_state_dict()``); pipelines and the CLI live above this layer.
"""
