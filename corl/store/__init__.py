"""What the engine writes and evaluation reads: artifacts, run records, saved policies.

A leaf below both ``corl.pipeline`` (which builds artifacts and records runs) and
``corl.eval`` / ``corl.export`` (which read them), so that neither reaches into the other:
:mod:`~corl.store.artifacts` (keys, manifests, verification, the cache root),
:mod:`~corl.store.lock` (one writer per artifact directory), :mod:`~corl.store.runs` (run
records under ``<cache>/runs/``) and :mod:`~corl.store.policies` (how a stage saves a policy
and how anyone rebuilds it). It imports learners only to rebuild their policy classes.
"""
