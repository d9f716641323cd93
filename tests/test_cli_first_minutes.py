"""A new user's first minutes with the CLI (issue 12, item 9): a bad ``--out`` and ``--resume`` misuse are one
clear line, before any model is loaded. (``--coarse-res 0`` / ``7`` are in ``tests/test_validation.py``.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from text3d.cli import main
from text3d.errors import Cancelled
from text3d.pipeline import generate


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if anything tries to load the diffusion model."""
    import text3d.batch.runner
    import text3d.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(text3d.pipeline, "load_guidance", refuse)
    monkeypatch.setattr(text3d.batch.runner, "load_guidance", refuse)


def _bad_outs(tmp_path: Path) -> list[tuple[Path, str]]:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    cases = [(a_file, "is a file"), (a_file / "runs", "is a file")]
    if os.geteuid() == 0:  # root writes anywhere a mode allows; /proc refuses even root
        cases.append((Path("/proc/text3d-out"), "cannot write"))
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((locked / "runs", "cannot write"))
    return cases


def test_a_bad_out_is_one_line_and_exit_2_before_the_model_loads(tmp_path, capsys, no_model_load):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    for out, what in _bad_outs(tmp_path):
        for argv in (["generate", "a mug"], ["batch", str(prompts)]):
            assert main([*argv, "--model", "nobody/never-loaded", "--out", str(out)]) == 2, (argv, out)
            err = capsys.readouterr().err
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert str(out) in err and what in err, err
    assert not (tmp_path / "notes.txt" / "runs").exists()


@pytest.fixture
def cancelled_run(make_config, tiny_guidance) -> Path:
    cfg = make_config("a red apple", refine__steps="0")

    def cancel_at_3(progress):
        if progress.step == 3 and not progress.message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        generate(cfg, guidance=tiny_guidance, callback=cancel_at_3)
    (run,) = list(Path(cfg.out_dir).iterdir())
    return run


def test_resume_says_which_prompt_and_flags_it_ignores(cancelled_run, capsys):
    argv = [
        "generate",
        "a blue vase",
        "--coarse-steps",
        "5",
        "--set",
        "seed=3",
        "--resume",
        str(cancelled_run),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "--resume" in line)
    assert line.startswith("warning: ") and "config.yaml" in line, line
    assert "'a blue vase'" in line and "--coarse-steps" in line and "--set" in line, line
    assert "a red apple" in (cancelled_run / "run.json").read_text(), "the run's own prompt was used"


def test_resuming_a_finished_run_says_there_is_nothing_to_resume(cancelled_run, capsys, monkeypatch):
    assert main(["generate", "--resume", str(cancelled_run)]) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in cancelled_run.rglob("*")}
    import text3d.pipeline

    monkeypatch.setattr(text3d.pipeline, "load_guidance", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["generate", "--resume", str(cancelled_run)]) == 0
    captured = capsys.readouterr()
    assert "nothing to resume" in captured.err and f"text3d export {cancelled_run}" in captured.err
    assert captured.err.count("\n") == 1, captured.err
    assert {p: p.stat().st_mtime_ns for p in cancelled_run.rglob("*")} == before, "no video or export redone"
