"""Atomic writes (issue 12, item 6): files end with the mode a plain ``open()`` gives, not mkstemp's 0600.

The expected mode is computed here from ``os.umask`` (not from ``text3d.io``), so the check does not trust the
code it checks.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from text3d.io import atomic_path, write_json, write_text


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes(folder: Path) -> dict[str, str]:
    """``{relative path: octal mode}`` of every file under ``folder`` whose mode is not the plain-open one."""
    want = 0o666 & ~_umask()
    return {
        str(p.relative_to(folder)): oct(_mode(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file() and _mode(p) != want
    }


@pytest.fixture
def umask():
    """Set a umask for the test and put the old one back."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_umask_mode_of_a_plain_open(tmp_path, umask, mask):
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what the user's own tools would make
    write_text(tmp_path / "a.txt", "x")
    write_json(tmp_path / "sub" / "b.json", {"a": 1})
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"x")
    for name in ("a.txt", "sub/b.json", "c.bin"):
        assert _mode(tmp_path / name) == _mode(plain) == 0o666 & ~mask, name


def test_rewriting_a_file_keeps_its_mode_like_open_does(tmp_path, umask):
    umask(0o022)
    path = write_text(tmp_path / "run.json", "1")
    os.chmod(path, 0o640)  # the user narrowed it on purpose
    write_text(path, "2")
    assert _mode(path) == 0o640 and path.read_text() == "2"


def test_finished_run_and_batch_folders_are_readable_by_others(make_config, tiny_guidance, tmp_path):
    """Acceptance (f): every file of a finished run folder and of a batch folder has the plain-open mode."""
    from text3d.batch.runner import run_batch
    from text3d.pipeline import generate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fast = {"coarse__steps": "2", "refine__steps": "1", "trainer__checkpoint_every": "1"}
        result = generate(make_config("a red apple", **fast), guidance=tiny_guidance)
        assert result.run_dir.is_dir() and any(result.run_dir.rglob("*.safetensors"))
        assert _modes(result.run_dir) == {}

        pfile = tmp_path / "two.txt"
        pfile.write_text("a blue vase\na mug | seed=3\n", encoding="utf-8")
        batch = run_batch(
            [pfile],
            make_config("", coarse__steps="2", refine__steps="0"),
            tmp_path / "batch",
            guidance=tiny_guidance,
        )
        assert batch.ok, [r.error for r in batch.items]
        assert (tmp_path / "batch" / "summary.json").is_file()
        assert _modes(tmp_path / "batch") == {}
    finally:
        torch.set_num_threads(threads)
