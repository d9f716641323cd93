"""What the web app reads back from disk: finished run folders, their downloadable files, and example prompts.

The gallery of past runs is rebuilt from the ``run.json`` files in the output folder, never from memory, so it
survives an app restart and also shows runs made by the CLI or batch mode. Everything here tolerates folders
that are half written, from older versions, or not runs at all: such a folder is skipped, never an error.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from text3d.io import atomic_path

MESH_SUFFIXES = (".glb", ".obj")


@dataclass(frozen=True)
class RunView:
    """The files of one run folder that the app shows or offers for download (``None`` when absent)."""

    run_dir: Path
    prompt: str
    status: str
    created: str
    preview: Path | None = None
    video: Path | None = None
    glb: Path | None = None
    obj: Path | None = None
    export_error: str | None = None
    """Why the mesh export failed, when it did (the run itself still completed)."""

    @property
    def caption(self) -> str:
        text = self.prompt if len(self.prompt) <= 60 else self.prompt[:57] + "…"
        return text if self.status == "completed" else f"{text} ({self.status})"


def _mesh_candidates(run_dir: Path, data: dict, listed: list[Path]) -> list[Path]:
    """Mesh files named by the caller (``RunResult.meshes``), in ``run.json`` outputs, or under ``mesh/``."""
    found: list[Path] = list(listed)

    def walk(value) -> None:
        if isinstance(value, str) and value.lower().endswith(MESH_SUFFIXES):
            found.append(run_dir / value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(data.get("outputs", {}))
    mesh_dir = run_dir / "mesh"
    if mesh_dir.is_dir():
        found += sorted(p for p in mesh_dir.rglob("*") if p.suffix.lower() in MESH_SUFFIXES)
    return [p for p in found if p.is_file()]


def _first(paths: list[Path], suffix: str) -> Path | None:
    return next((p for p in paths if p.suffix.lower() == suffix), None)


def read_run(run_dir: str | Path, meshes: list[Path] | None = None) -> RunView | None:
    """A :class:`RunView` of ``run_dir``, or ``None`` when it has no readable ``run.json``."""
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    outputs = data.get("outputs") if isinstance(data.get("outputs"), dict) else {}
    video = run_dir / outputs["video"] if isinstance(outputs.get("video"), str) else None
    if video is None or not video.is_file():
        videos = sorted((run_dir / "video").glob("*.mp4")) + sorted((run_dir / "video").glob("*.gif"))
        video = max(videos, key=lambda p: p.stat().st_mtime, default=None)
    preview = run_dir / "previews" / "latest.png"
    found = _mesh_candidates(run_dir, data, list(meshes or []))
    export = data.get("export") if isinstance(data.get("export"), dict) else {}
    return RunView(
        run_dir=run_dir,
        prompt=str(data.get("prompt", "")),
        status=str(data.get("status", "unknown")),
        created=str(data.get("created", "")),
        preview=preview if preview.is_file() else None,
        video=video,
        glb=_first(found, ".glb"),
        obj=_first(found, ".obj"),
        export_error=str(export["error"]) if export.get("error") else None,
    )


def scan_runs(out_dir: str | Path, limit: int = 60) -> list[RunView]:
    """The newest ``limit`` runs under ``out_dir`` that have a preview image to show, newest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    views = [read_run(p) for p in out_dir.iterdir() if (p / "run.json").is_file()]
    shown = [v for v in views if v is not None and v.preview is not None]
    shown.sort(key=lambda v: (v.created, v.run_dir.name), reverse=True)
    return shown[:limit]


_MTLLIB = re.compile(r"^\s*mtllib\s+(.+?)\s*$")
_MAP = re.compile(r"^\s*(map_\w+|bump|disp|decal|norm)\s+(.+?)\s*$", re.IGNORECASE)


def obj_companions(obj: Path) -> list[Path]:
    """The ``.mtl`` files an OBJ names and the textures those name, that exist inside the OBJ's folder.

    Files outside the folder (``../x.png``, absolute paths) are left out: the zip must unpack into one folder.
    """
    root = obj.parent.resolve()
    files: list[Path] = []

    def add(name: str) -> Path | None:
        path = (obj.parent / name).resolve()
        if path.is_file() and path.is_relative_to(root) and path not in files:
            files.append(path)
            return path
        return None

    for line in obj.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _MTLLIB.match(line)
        if not m:
            continue
        mtl = add(m.group(1))
        if mtl is None:
            continue
        for mline in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            mm = _MAP.match(mline)
            if mm:
                add(mm.group(2).split()[-1])  # options such as "-s 1 1 1" come before the file name
    return files


def obj_zip(obj: Path, dest_dir: Path, name: str) -> Path:
    """``dest_dir/<name>-obj.zip`` holding the OBJ, its materials and textures; rebuilt only when older."""
    dest = Path(dest_dir) / f"{name}-obj.zip"
    members = [obj.resolve(), *obj_companions(obj)]
    newest = max(p.stat().st_mtime for p in members)
    if dest.is_file() and dest.stat().st_mtime >= newest:
        return dest
    root = obj.parent.resolve()
    with atomic_path(dest) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in members:
                zf.write(path, arcname=str(path.relative_to(root)))
    return dest


def example_prompts(folder: str | Path) -> dict[str, list[str]]:
    """``{file stem: [prompt, ...]}`` from the ``*.txt`` prompt files in ``folder`` (empty if there are none).

    Batch mode's rules: blank lines and ``#`` lines are skipped, and the per-line overrides after batch mode's
    separator are dropped (an example only fills in the prompt box). Unlike :func:`parse_prompt_file`, a line
    whose overrides this config would reject still yields its prompt.
    """
    from text3d.batch.promptfile import OVERRIDE_SEPARATOR, as_utf8
    from text3d.errors import PromptFileError

    folder = Path(folder)
    out: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        try:  # batch mode's decoding: UTF-8, or UTF-16 with a byte-order mark
            lines = as_utf8(path.read_bytes(), str(path)).decode("utf-8", errors="replace").splitlines()
        except (OSError, PromptFileError):
            continue
        prompts: list[str] = []
        for line in lines:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            prompt = text.partition(OVERRIDE_SEPARATOR)[0].strip().removesuffix(" |").strip()
            if prompt and prompt not in prompts:
                prompts.append(prompt)
        if prompts:
            out[path.stem] = prompts
    return out
