"""The declared layers (pyproject.toml, ``[tool.importlinter]``) hold, and the check catches a wrong import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
            "--no-cache",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_are_kept():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout and res.stdout.count("KEPT") >= 5


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        (
            "render/raster.py",
            "from text3d.training import trainer",
            "text3d.render.raster -> text3d.training",
        ),
        ("objectives/sds.py", "from text3d.render import volume", "text3d.objectives.sds -> text3d.render"),
        ("export/video.py", "from text3d.training import stage", "text3d.export.video -> text3d.training"),
        ("pipeline.py", "import gradio", "text3d.pipeline -> gradio"),
    ],
)
def test_a_wrong_import_breaks_the_contracts(tmp_path, module, line, broken):
    """A copy of the package with one import that crosses a layer: the same check now fails and names it."""
    shutil.copytree(ROOT / "text3d", tmp_path / "text3d", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "text3d" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout[-2000:]
    assert broken in res.stdout, res.stdout[-3000:]
