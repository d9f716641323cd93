"""Batch generation from prompt files (``text3d batch``).

- :mod:`text3d.batch.promptfile`: the file format, per-line overrides, bad-line reports, run folder names.
- :mod:`text3d.batch.runner`: :func:`~text3d.batch.runner.run_batch` (one model load per process, skip/resume,
  failure isolation, sharding with accelerate).
- :mod:`text3d.batch.summary`: ``summary.json``, ``summary.csv`` and the ``index.html`` gallery.
- :mod:`text3d.batch.command`: the ``text3d batch`` subcommand.

Nothing is imported here, so ``text3d --help`` stays fast; import from the submodules.
"""
