"""The web app shows user strings as text (issue 12, item 1) and tells the user about cut-off prompts (item 8).

The Markdown the app produces is rendered by markdown-it-py (a CommonMark renderer, with raw HTML allowed, so an
unescaped tag would come through); the browser test walks the real page in chromium (``-m browser``).
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from conftest import TINY_OVERRIDES  # noqa: E402

from text3d.app.jobs import JobSnapshot, JobStatus  # noqa: E402
from text3d.app.status import code, describe, describe_past_run, text, toast  # noqa: E402
from text3d.config import GenerateConfig, apply_overrides  # noqa: E402
from text3d.training.trainer import Progress  # noqa: E402

BAD_HOST = "127.0.0.1:9"
HOSTILE = (
    f'<img src="http://{BAD_HOST}/x.png"> <a href="http://{BAD_HOST}/a">a link</a> '
    f"![i](http://{BAD_HOST}/i.png) [md](http://{BAD_HOST}/md) http://{BAD_HOST}/bare www.example.com "
    "x@example.com **bold** `code` $$x$$ &amp; \\* line\nbreak # not a heading"
)
"""Raw HTML, Markdown links and images, bare URLs and an e-mail (autolinked by GitHub-flavoured renderers),
emphasis, code, TeX, an entity, an escape and a line break: each must come out as the same characters."""


def _render(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).render(markdown)


def _tags(rendered: str) -> set[str]:
    return {m.lower() for m in re.findall(r"<\s*([a-zA-Z][\w-]*)", rendered)}


def _plain(rendered: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


# ---------------------------------------------------------------------------------------------- text helpers
def test_text_renders_as_exactly_the_characters_and_no_element():
    rendered = _render(text(HOSTILE))
    assert _tags(rendered) == {"p"}, rendered
    assert _plain(rendered) == HOSTILE.replace("\n", " ")


@pytest.mark.parametrize("value", [HOSTILE, "/runs/a`b``c/x", "/runs/<img src=x>"])
def test_code_spans_hold_any_path_without_breaking_out(value):
    rendered = _render(code(value))
    assert _tags(rendered) == {"p", "code"}, rendered
    assert _plain(rendered) == value.replace("\n", " ")


def test_toasts_are_escaped_html():
    assert "<" not in toast(HOSTILE) and html.unescape(toast(HOSTILE)) == HOSTILE


def test_every_status_line_shows_user_strings_as_text(tmp_path):
    run_dir = tmp_path / "<img src=x>"
    progress = Progress("coarse", 3, 10, 0.5, 1.0, 2.0)
    snaps = [
        JobSnapshot("a", JobStatus.FAILED, HOSTILE, error=HOSTILE, run_dir=run_dir),
        JobSnapshot("a", JobStatus.RUNNING, HOSTILE, progress=progress, run_dir=run_dir, notes=(HOSTILE,)),
        JobSnapshot("a", JobStatus.COMPLETED, HOSTILE, progress=progress, run_dir=run_dir, notes=(HOSTILE,)),
        JobSnapshot("a", JobStatus.CANCELLED, HOSTILE, progress=progress, run_dir=run_dir),
        JobSnapshot(
            "a",
            JobStatus.RUNNING,
            HOSTILE,
            progress=Progress("coarse", 10, 10, None, 1.0, 0.0, message=HOSTILE),
            notes=(HOSTILE,),
        ),
    ]
    lines = [describe(s, export_error=HOSTILE if s.status is JobStatus.COMPLETED else None) for s in snaps]
    lines.append(describe_past_run(HOSTILE, HOSTILE, run_dir))
    for line in lines:
        rendered = _render(line)
        assert _tags(rendered) <= {"p", "strong", "code"}, rendered
        assert "http://127.0.0.1:9/x.png" not in re.sub(r">[^<]*<", "><", rendered), rendered  # not in a tag
    assert HOSTILE.replace("\n", " ") in _plain(_render(lines[0]))  # the error reads as it was written
    assert HOSTILE.replace("\n", " ") in _plain(_render(lines[-1]))  # and the past run's prompt


# ---------------------------------------------------------------------------------------------- job notes
def test_a_cut_off_prompt_is_a_note_in_the_job_and_its_status(tiny_guidance, tiny_model_dir, tmp_path):
    """Item 8: the user sees the truncation warning (not only the server log)."""
    from text3d.app.jobs import JobRunner

    cfg = _tiny_config(tiny_model_dir, tmp_path / "out", HOSTILE + " ornate" * 60)
    cfg = apply_overrides(cfg, {"coarse.steps": "2", "refine.steps": "0", "trainer.video_frames": "1"})
    runner = JobRunner(guidance=tiny_guidance)
    try:
        done = runner.wait_done(runner.submit(cfg).id, timeout=120)
    finally:
        runner.close()
    assert done.status is JobStatus.COMPLETED, done.error
    (note,) = done.notes
    assert note.startswith("the prompt is ") and "tokens" in note
    status = describe(done)
    assert "⚠ the prompt is" in _plain(_render(status)) and _tags(_render(status)) <= {"p", "strong", "code"}


# ---------------------------------------------------------------------------------------------- the browser
def _tiny_config(model_dir: Path, out_dir: Path, prompt: str = "") -> GenerateConfig:
    cfg = apply_overrides(GenerateConfig(prompt=prompt), TINY_OVERRIDES)
    return apply_overrides(cfg, {"model.model_id": str(model_dir), "out_dir": str(out_dir)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_past_run(out: Path) -> Path:
    """A run folder as a CLI or batch run (or a hand-edited one) may leave: hostile prompt, status and error."""
    from PIL import Image

    run = out / "past-hostile"
    (run / "previews").mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 80, 40)).save(run / "previews" / "latest.png")
    record = {"prompt": "PAST " + HOSTILE, "status": HOSTILE, "created": "2020-01-01T00:00:00"}
    record["export"] = {"error": HOSTILE}
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return run


FROM_IT = f"""() => [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a =>
    ['src', 'href', 'srcset', 'poster', 'action', 'formaction', 'data', 'xlink:href', 'style'].includes(a.name)
    && a.value.includes('{BAD_HOST}'))).map(e => e.outerHTML.slice(0, 200))"""
"""Elements made from the hostile markup: an attribute that loads or links (src, href, style...) holds its address.
(Text may hold it: the gallery's ``alt`` attribute carries the caption, as text.)"""


@pytest.mark.browser
def test_browser_hostile_prompt_is_text_in_live_status_gallery_past_runs_and_errors(
    tiny_guidance, tiny_model_dir, tmp_path, monkeypatch
):
    """Acceptance (a): no request leaves for the prompt's address and no element is made from it, in any view."""
    from test_app import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    import text3d.app.jobs as jobs
    from text3d.app import build_app
    from text3d.errors import Text3DError

    out = tmp_path / "outputs"
    _fake_past_run(out)
    app = build_app(_tiny_config(tiny_model_dir, out), tiny_guidance, prompts_dir=tmp_path, poll_s=0.25)
    app.launch(host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, quiet=True)
    requested: list[str] = []
    prompt = HOSTILE.replace("\n", " ") + " ornate" * 40  # long enough for the encoder to cut it: a note
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.on("request", lambda r: requested.append(r.url))
            page.goto(app.url)
            page.locator("#prompt textarea").wait_for()

            def status_has(words: str, timeout: float = 120_000) -> str:
                page.wait_for_function(
                    "(w) => document.querySelector('#status').innerText.includes(w)",
                    arg=words,
                    timeout=timeout,
                )
                assert page.evaluate(FROM_IT) == [], page.evaluate(FROM_IT)
                return page.locator("#status").inner_text()

            # live status: the job's note quotes the start of the prompt while it runs, and when it is done
            page.locator("#prompt textarea").fill(prompt)
            page.locator("#steps input").fill("3")
            page.locator("#steps input").press("Tab")
            page.locator("#generate").click()
            live = status_has("⚠ the prompt is")
            assert f'<img src="http://{BAD_HOST}/x.png">'[:40] in live, live
            status_has("Done")

            # gallery: the new run's caption and the past run's, as text
            gallery = page.locator("#gallery")
            gallery.get_by_text("PAST <img", exact=False).first.wait_for()
            gallery.get_by_text('<img src="http://', exact=False).first.wait_for()
            assert page.evaluate(FROM_IT) == []

            # past-run details: prompt, status and export error from its run.json
            page.locator("#gallery img").last.click()  # the oldest: the past run
            details = status_has("Past run")
            assert f'PAST <img src="http://{BAD_HOST}/x.png"> <a href=' in details, details

            # errors: a failed run's message, in the status and in the error toast
            def failing(cfg, **kwargs):
                raise Text3DError(f"could not make {cfg.prompt}")

            monkeypatch.setattr(jobs, "generate", failing)
            page.locator("#prompt textarea").fill(HOSTILE.replace("\n", " "))
            page.locator("#generate").click()
            failed = status_has("Failed")
            assert f'could not make <img src="http://{BAD_HOST}/x.png">' in failed, failed
            page.get_by_text("could not make <img", exact=False).last.wait_for()  # the toast, as text
            page.wait_for_timeout(1000)  # time for any late image load to start
            assert page.evaluate(FROM_IT) == []
            browser.close()
    finally:
        app.close()
    assert requested and not [u for u in requested if BAD_HOST in u], [u for u in requested if BAD_HOST in u]
    print(f"browser: {len(requested)} requests, none to {BAD_HOST}")
