"""The web app: ``python app.py`` serves a Gradio page over the same :func:`text3d.pipeline.generate` call.

Modules: ``jobs`` (the one-at-a-time job runner, no Gradio), ``form`` (form values -> config), ``runs`` (past
runs, downloads and example prompts read from disk), ``status`` (the status line) and ``ui`` (the page itself).
Importing this package does not import Gradio; ``build_app`` does.
"""

from __future__ import annotations

from text3d.app.jobs import JobRunner, JobSnapshot, JobStatus

__all__ = ["JobRunner", "JobSnapshot", "JobStatus", "build_app"]


def build_app(base_config, guidance=None, **options):
    """Build the web app (see :class:`text3d.app.ui.WebApp`); imports Gradio on first use."""
    from text3d.app.ui import build_app as _build_app

    return _build_app(base_config, guidance, **options)
