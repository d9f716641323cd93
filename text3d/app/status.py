"""One-line, human status text for a job (Markdown), shared by the web page and its API.

Kept apart from the UI so the words a user reads are tested without a browser. Every string that comes from a user
or from disk (prompts, errors quoting values, run folders, ``run.json`` fields) goes through :func:`text` or
:func:`code` here, so it is shown as text: a prompt holding ``<img src=...>``, ``[a](http://...)`` or a bare URL
makes no element, no link and no request in any viewer's browser.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from text3d.app.jobs import JobSnapshot, JobStatus

_ASCII_PUNCTUATION = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")


def text(value: object) -> str:
    """``value`` as literal Markdown text on one line.

    Every ASCII punctuation character is backslash-escaped (CommonMark renders ``\\<`` as a literal ``<``), which
    leaves no HTML tag, link, image, emphasis or code span, and breaks ``http://``, ``www.`` and ``a@b.c`` so that
    GitHub-style autolinking finds no URL either. Line breaks become spaces, so nothing starts a new block.
    """
    return _ASCII_PUNCTUATION.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))


def code(value: object) -> str:
    """``value`` (a path, say) as a Markdown code span, whose content is never interpreted. The fence is longer
    than any run of backticks inside, so none can close it early."""
    body = _LINE_BREAKS.sub(" ", str(value))
    fence = "`" * (max((len(run) for run in re.findall("`+", body)), default=0) + 1)
    return f"{fence} {body} {fence}"


def toast(value: object) -> str:
    """A message for ``gr.Error`` / ``gr.Warning`` / ``gr.Info``, whose toasts Gradio renders as HTML."""
    return html.escape(str(value), quote=True)


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``; an em dash when unknown."""
    if seconds is None:
        return "—"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def describe(snap: JobSnapshot, export_error: str | None = None) -> str:
    """What the job is doing now, e.g. ``**Running** · coarse · step 120 / 10000 · loss 0.123 · ETA 3 min 20 s``."""
    p = snap.progress
    where = f" · run folder {code(snap.run_dir)}" if snap.run_dir is not None else ""
    notes = "".join(f" · ⚠ {text(note)}" for note in snap.notes)
    if snap.status is JobStatus.QUEUED:
        ahead = snap.position - 1
        others = f"{ahead} more waiting ahead of yours, " if ahead else ""
        return (
            f"**Queued** · position {snap.position} in line ({others}one job runs at a time); "
            "it starts by itself."
        )
    if snap.status is JobStatus.LOADING:
        return "**Loading the model** · once per app start; the run begins right after."
    if snap.status is JobStatus.RUNNING:
        if p is None:
            return f"**Starting** · encoding the prompt and building the scene{where}{notes}"
        loss = f"{p.loss:.4g}" if p.loss is not None else "—"
        stopping = " · **cancelling…**" if snap.cancel_requested else ""
        stage = p.stage
        if p.stage in snap.stages and len(snap.stages) > 1:
            stage = f"{p.stage} ({snap.stages.index(p.stage) + 1} of {len(snap.stages)})"
        if p.message:  # after the stage's last step: turntable frames, export phases
            return (
                f"**Running** · stage {stage} · {text(p.message)} · elapsed {format_duration(p.elapsed_s)}"
                f"{stopping}{notes}"
            )
        finishing = ""
        if (
            p.step >= p.total
        ):  # the last step is done; the turntable (and after the last stage the export) follow
            last = not snap.stages or p.stage == snap.stages[-1]
            finishing = " · rendering the turntable" + (" and exporting the mesh…" if last else "…")
        return (
            f"**Running** · stage {stage} · step {p.step} / {p.total} · loss {loss} · "
            f"ETA {format_duration(p.eta_s)} · elapsed {format_duration(p.elapsed_s)}{finishing}{stopping}{notes}"
        )
    if snap.status is JobStatus.COMPLETED:
        took = (snap.finished_at or 0) - (snap.started_at or 0)
        steps = f" · {p.stage} {p.step} / {p.total}" if p is not None else ""
        mesh = f" · **no mesh**: {text(export_error)}" if export_error else ""
        return f"**Done** in {format_duration(took)}{steps}{where}{mesh}{notes}"
    if snap.status is JobStatus.CANCELLED:
        if snap.run_dir is None:
            return "**Cancelled** before it started; nothing was written."
        at = f" at {p.stage} step {p.step} / {p.total}" if p is not None else ""
        return (
            f"**Cancelled**{at}{where}. The folder is consistent: continue it with "
            f"{code(f'text3d generate --resume {snap.run_dir}')}."
        )
    return f"**Failed** · {text(snap.error)}{where}"


def describe_past_run(prompt: str, status: str, run_dir: Path) -> str:
    """The status line for a past run loaded from the gallery (its prompt and status come from ``run.json``)."""
    return f"**Past run** · {text(prompt)} · {text(status)} · run folder {code(run_dir)}"
