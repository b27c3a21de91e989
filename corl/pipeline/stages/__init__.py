"""Stage kinds: the functions a pipeline spec's stages run. One module per method.

This docstring is the contract between the pipeline engine and the methods. A method adds
``corl/pipeline/stages/<method>.py``; every module in this package is imported when a stage
kind is looked up, so registering is all a new module has to do. Methods' learners stay in
``corl/algos`` and never import the pipeline; a stage module is the thin glue between them.

Registering a stage kind
------------------------
::

    from dataclasses import dataclass, field
    from corl.pipeline.registry import register_stage
    from corl.pipeline.context import StageContext, StageResult

    @dataclass
    class BehaviorConfig:                 # every hyper-parameter, with its default
        steps: int = 100_000
        batch_size: int = 256
        lr: float = 3e-4
        hidden: list[int] = field(default_factory=lambda: [256, 256])
        cost_limit: float | None = None   # None = the task's default (TOML cannot say None)

    @register_stage("behavior", config=BehaviorConfig, version="1",
                    inputs=("dataset",), description="diffusion behavior model")
    def behavior(ctx: StageContext) -> StageResult:
        ...

* ``name``: the ``kind`` a spec's stage names (``[stages.X] kind = "behavior"``).
* ``config``: a dataclass. Its fields are the only keys a spec, preset, task override or
  ``--set`` may give for such a stage (unknown keys are one-line errors with the closest
  key); values are type-checked against the field annotations (int, float, bool, str,
  ``X | None``, ``list[...]``). The resolved instance, as a dict, is part of the artifact key;
  a field declared with ``field(..., metadata={"key": "if_set"})`` joins the key only when it
  differs from its default, so adding an option does not invalidate existing artifacts (a
  config that subclasses a learner's config names such inherited fields in a
  ``KEYED_IF_SET`` class attribute instead). A learner's config is defined once, beside the
  learner, with its validation in ``__post_init__``; the stage config subclasses it and adds
  only the stage's own keys, so every learner option is a stage key.
* ``version``: the stage's code version. Bump it when a change alters the artifact (loss,
  defaults with the same name, file layout): old artifacts are then no longer cache hits.
* ``inputs``: the input *roles* the stage requires. A spec maps roles to stage names:
  ``inputs = ["dataset"]`` (role = stage name) or ``inputs = {policy = "bc"}``. A missing
  role or an unknown stage is a spec error. Extra roles are allowed (their keys still count).
* ``seeded`` (default True): False when the artifact does not depend on ``--seed`` (the
  dataset stage), so every seed shares it.
* ``fingerprint`` (optional ``fn(FingerprintContext) -> dict``): facts known only at plan
  time. The value under ``"key"`` joins the artifact key; the whole dict reaches the stage
  as ``ctx.fingerprint``. E.g. the dataset stage locates the file and returns
  ``{"key": {"sha256": ...}, "path": ..., "origin": ...}``, so the artifact is keyed by the
  data's content, not its location. Keep it cheap: it runs on every plan, cached runs too.
  ``fctx.inputs`` holds the input artifacts already built (a role whose stage is not built
  yet is absent); a fingerprint that needs one returns ``{"pending": why, ...}`` meanwhile,
  and the runner calls it again once that input is built.
* ``upstream`` (optional ``fn(FingerprintContext) -> UpstreamRun | None``): another pipeline
  run whose artifact this stage reads (the dataset stage with ``source = "cvpo"``:
  ``UpstreamRun(RunRequest("cvpo", ...), stage="export", role="collection", label=...)``).
  The planner plans that run too and puts its stages into the same plan, named
  ``cvpo:train``, ``cvpo:export``; the artifact arrives as input ``role``, which is not key
  material (key what you read from it in the fingerprint).
* ``stale`` (optional ``fn(Artifact, RunOptions) -> str | None``): for a kind whose artifact
  points outside its directory (``export``: a file in the dataset store), why a done
  artifact can no longer be used; the plan then says ``stale`` and the run builds it again.

What a stage function gets: ``StageContext`` (see ``corl.pipeline.context``)
---------------------------------------------------------------------------
* ``ctx.config``: the resolved config dataclass instance.
* ``ctx.task``: the :class:`corl.tasks.TaskSpec`; ``ctx.seed``: int; ``ctx.device``: a
  ``torch.device`` (``--device auto`` = cuda when available).
* ``ctx.out_dir``: the artifact directory to write weights and files into. Every regular
  file left there (except ``checkpoint.pt`` and ``metrics.jsonl``) is sha256-hashed into the
  manifest and verified on every cache hit, so write only what the artifact is.
* ``ctx.inputs``: ``{role: Artifact}``; an :class:`~corl.store.artifacts.Artifact` has
  ``.dir``, ``.key``, ``.kind``, ``.manifest`` (dict) and ``.outputs`` (the producing
  stage's ``StageResult.outputs``).
* ``ctx.load_dataset()``: the task's TransitionDataset from the ``dataset`` input (loaded
  from the path the dataset artifact recorded, sha256-verified, on ``ctx.device``).
* ``ctx.load_policy(role="policy")``: an evaluation callable ``obs (B, obs_dim) tensor ->
  action tensor`` built from a policy-producing input (see "Policies" below).
* ``ctx.generator()``: a ``torch.Generator`` on ``ctx.device`` seeded from the seed; put its
  ``get_state()`` into your checkpoint state so batches after a resume are the same batches.
* ``ctx.train_loop(total_steps, get_state, set_state)``: the resumable training loop::

      loop = ctx.train_loop(cfg.steps, get_state=lambda: {"learner": learner.state_dict(),
                                                          "gen": gen.get_state()},
                            set_state=lambda s: (learner.load_state_dict(s["learner"]),
                                                 gen.set_state(s["gen"])))
      for step in loop:                       # starts after the last checkpoint, if any
          loop.log(learner.update(dataset.sample(cfg.batch_size, gen)))

  It restores the last checkpoint (learner state plus python/numpy/torch RNG states), yields
  the remaining step numbers (1-based), writes ``metrics.jsonl`` every ``log_every`` steps,
  reports progress (rate, ETA, latest losses) through the run's callbacks, saves a
  checkpoint every N steps / M seconds (``torch.save`` to a temporary file, then
  ``os.replace``), and on Ctrl-C saves at the step boundary and stops the run (exit 130).
  ``get_state`` must return tensors and plain containers only (checkpoints are read back
  with ``torch.load(weights_only=True)``); ``learner.state_dict()`` of corl learners is.
  ``loop.step`` is the last finished step; ``loop.resumed_from`` the step it resumed at.
* ``ctx.progress(done, total, metrics)``: progress for work that is not a training loop
  (evaluation episodes); it also honours Ctrl-C.
* ``ctx.log_metrics(step, metrics)``: append one line to ``metrics.jsonl`` directly. Every
  line also reaches ``--logger`` (TensorBoard, W&B) as ``<stage>/<metric>``, and after the
  stage the engine draws ``training_curves.png`` from the file (``corl.pipeline.curves``:
  metrics named loss/nll/mse, and ``episode_reward``/``episode_cost`` or ``eval_reward``/
  ``eval_cost`` with the stage's cost limit), so name metrics accordingly.

Rules of thumb
--------------
* The runner calls ``corl.pipeline.checkpoint.seed_everything(seed)`` before every stage
  that runs, so a stage is deterministic on a CPU given its config, inputs and seed; draw
  batches from ``ctx.generator()``, not from ad-hoc generators.
* Do not catch ``KeyboardInterrupt`` or ``StageInterrupted``: the runner turns them into a
  saved checkpoint, a run record marked "interrupted" and exit code 130.
* A stage without a ``train_loop`` (evaluation, export) simply reruns from the start after
  an interruption; keep such stages short or give them a loop.
* Raise :class:`corl.errors.CorlError` (one line) for user-fixable problems, e.g. "no safe
  episode at this cost limit"; anything else keeps its traceback.
* ``ctx.input(role)`` returns one input artifact; ``ctx.fingerprint`` is what the kind's
  fingerprint hook returned at plan time.

What a stage function returns: ``StageResult``
----------------------------------------------
``StageResult(metrics={...}, outputs={...})``. ``metrics`` (floats) go into the manifest's
``final_metrics`` and the run summary, together with the train loop's last logged window
(as ``train/<name>``); name scores ``final/...`` and ``best/...`` so the
two are never confused (``corl runs`` shows them in separate columns). ``outputs`` is any
JSON-able dict downstream stages read from ``artifact.outputs`` (e.g. the policy spec, the
dataset path and sha256, the cost limit trained for). The engine then hashes the files and
writes ``manifest.json`` last and atomically; a directory without one is not done.

Policies
--------
A stage that produces a policy for ``evaluate`` calls
``corl.store.policies.save_policy(ctx.out_dir, module, builder, kwargs, obs_mean=None,
obs_std=None)`` and puts the returned dict into ``outputs["policy"]``. ``builder`` names a
constructor registered with ``corl.store.policies.register_policy_builder`` (built in:
``tanh_gaussian`` = ``corl.nn.TanhGaussianPolicy``, ``deterministic`` =
``corl.nn.DeterministicPolicy``); ``kwargs`` are its JSON-able constructor arguments. The
``evaluate`` stage then takes ``inputs = {policy = "<your stage>"}``.
"""

from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    """Import every stage module in this package so their ``register_stage`` calls run."""
    for info in pkgutil.iter_modules(__path__):  # type: ignore[name-defined]
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
