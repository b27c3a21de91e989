"""Staged, cached, resumable pipelines: spec loading, stage registry, artifacts, runner.

Layering (checked by ``lint-imports``): the CLI calls :func:`corl.pipeline.runner.plan_pipeline` (the plan, no side
effects) and :func:`corl.pipeline.runner.run_pipeline`; stages (in
``corl.pipeline.stages``) call learners in ``corl.algos`` and evaluators in ``corl.eval``;
progress flows back through :class:`corl.pipeline.progress.RunCallbacks`, so a test, a CLI
or a worker can drive the same engine. What a run writes and evaluation reads (artifacts, run
records, saved policies) lives below, in :mod:`corl.store`; the value types a run takes and
returns are in :mod:`corl.pipeline.results`.
"""
