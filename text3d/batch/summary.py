"""The batch summary in the output folder: ``summary.json``, ``summary.csv`` and a static ``index.html`` gallery.

All three are written atomically (a reader sees the old or the new file, never half of one) and every link in
them is relative to the output folder, so the folder can be copied, zipped or served as it is. Prompt text is
HTML-escaped: a prompt is data, never markup.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import html
import io
import json
from pathlib import Path
from urllib.parse import quote

from text3d.batch.runner import BatchResult, ItemResult
from text3d.io import write_text

CSV_COLUMNS = (
    "file",
    "line",
    "prompt",
    "status",
    "run_folder",
    "process_index",
    "made_by",
    "steps",
    "seconds",
    "thumbnail",
    "error",
)


def summary_dict(batch: BatchResult) -> dict:
    """Plain data of the summary (what ``summary.json`` holds)."""
    return {
        "final": batch.final,
        "ok": batch.ok,
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
        "invocation": batch.invocation,
        "files": batch.files,
        "num_processes": batch.num_processes,
        "counts": batch.counts,
        "items": [dataclasses.asdict(r) for r in batch.items],
        "bad_lines": [dataclasses.asdict(e) for e in batch.errors],
        "warnings": [dataclasses.asdict(w) for w in batch.warnings],
    }


def summary_csv(batch: BatchResult) -> str:
    """One row per prompt, then one ``bad-line`` row per line that could not run."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for r in batch.items:
        writer.writerow(
            [
                r.file,
                r.line,
                r.prompt,
                r.status,
                r.key,
                r.process_index,
                "" if r.made_by is None else r.made_by,
                r.steps,
                r.seconds,
                r.thumbnail or "",
                r.error or "",
            ]
        )
    for e in batch.errors:
        writer.writerow([e.file, e.line, "", "bad-line", "", "", "", "", "", "", e.message])
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.3rem} .meta{color:#666}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.6rem}
.card img{width:100%;image-rendering:pixelated;background:#eee;border-radius:4px}
.noimg{height:120px;display:flex;align-items:center;justify-content:center;background:#eee;color:#888}
.prompt{font-weight:600;margin:.4rem 0;overflow-wrap:anywhere}
.small{font-size:.8rem;color:#555;overflow-wrap:anywhere}
.st{display:inline-block;padding:0 .4rem;border-radius:4px;font-size:.8rem;color:#fff;background:#888}
.completed,.skipped{background:#2a7} .failed,.bad-line{background:#c33} .cancelled,.not-run{background:#c80}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
""".strip()


def _card(r: ItemResult) -> str:
    e = html.escape
    if r.thumbnail:
        src = quote(r.thumbnail)
        img = f'<a href="{src}"><img src="{src}" alt="{e(r.prompt)}" loading="lazy"></a>'
    else:
        img = '<div class="noimg">no preview</div>'
    links = " · ".join(f'<a href="{quote(path)}">{e(name)}</a>' for name, path in r.outputs.items())
    made = "" if r.made_by is None else f" · made by process {r.made_by}"
    error = f'<div class="small">{e(r.error)}</div>' if r.error else ""
    return (
        f'<div class="card">{img}<div class="prompt">{e(r.prompt)}</div>'
        f'<span class="st {e(r.status)}">{e(r.status)}</span> '
        f'<span class="small">{e(r.file)}:{r.line}{made}</span>'
        f'<div class="small"><a href="{quote(r.key)}/">{e(r.key)}</a>{" · " + links if links else ""}</div>'
        f"{error}</div>"
    )


def summary_html(batch: BatchResult) -> str:
    """A static gallery page: a card with the latest preview per prompt, then the bad lines and warnings."""
    e = html.escape
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in batch.counts.items() if v)
    state = "" if batch.final else " (in progress; reload for more)"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>text3d batch: {e(', '.join(Path(f).name for f in batch.files))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>text3d batch{e(state)}</h1>",
        f'<p class="meta">{e(", ".join(batch.files))} · {batch.num_processes} process(es) · {e(counts)} · '
        f"invocation {e(batch.invocation)}</p>",
        '<div class="grid">',
        *(_card(r) for r in batch.items),
        "</div>",
    ]
    for title, issues in (("Lines that were not run", batch.errors), ("Warnings", batch.warnings)):
        if issues:
            parts.append(f"<h2>{title}</h2><table><tr><th>file</th><th>line</th><th>problem</th></tr>")
            parts += [
                f"<tr><td>{e(i.file)}</td><td>{i.line}</td><td>{e(i.message)}</td></tr>" for i in issues
            ]
            parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_summary(batch: BatchResult) -> dict[str, Path]:
    """Write the three summary files into ``batch.out_dir``; returns their paths by format."""
    out = Path(batch.out_dir)
    return {
        "json": write_text(
            out / "summary.json", json.dumps(summary_dict(batch), indent=2, ensure_ascii=False) + "\n"
        ),
        "csv": write_text(out / "summary.csv", summary_csv(batch)),
        "html": write_text(out / "index.html", summary_html(batch)),
    }
