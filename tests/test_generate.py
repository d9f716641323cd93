"""End to end on CPU with the tiny random SD: the CLI run, its folder, errors, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from text3d.cli import main
from text3d.config import apply_overrides, save_config
from text3d.training.checkpoint import read_checkpoint_meta

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}


def _cli(*args: str, cwd: Path | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "text3d", *args],
        env=ENV,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _run_dir(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_cli_tiny_run_writes_a_self_describing_folder(tiny_model_dir, tmp_path):
    """(d) the issue's command, default field and renderer, 30 steps at 64^2."""
    out = tmp_path / "out"
    t0 = time.perf_counter()
    proc = _cli(
        "generate",
        "a red apple",
        "--model",
        str(tiny_model_dir),
        "--coarse-steps",
        "30",
        "--coarse-res",
        "64",
        "--out",
        str(out),
        *_extra_cli_flags(),
    )
    stdout, stderr = proc.communicate(timeout=300)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, stderr[-2000:]
    print(f"tiny CLI run: {elapsed:.1f} s")
    run = _run_dir(out)
    assert run.name.startswith("a-red-apple-")
    assert (run / "config.yaml").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["prompt"] == "a red apple"
    assert read_checkpoint_meta(run / "checkpoints" / "coarse.safetensors")["step"] == 30
    assert (run / "previews" / "latest.png").stat().st_size > 0
    videos = list((run / "video").glob("coarse-turntable.*"))
    assert videos and videos[0].stat().st_size > 1000
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 30
    assert f"done: {run}" in stdout


def _extra_cli_flags() -> list[str]:
    """Stages added after the foundation default to on; the foundation test runs the coarse stage alone."""
    from text3d.config import ALIASES

    return ["--refine-steps", "0"] if "refine-steps" in ALIASES else []


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["generate", "   "]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the prompt is empty") and err.count("\n") == 1
    code = main(["generate", "a mug", "--model", "nobody/missing-model", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "--model /path/to/model" in err and "HF_HUB_OFFLINE" in err
    assert main(["generate", "a mug", "--set", "coarse.nope=1"]) == 2
    assert "unknown setting" in capsys.readouterr().err
    assert main(["generate", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a text3d run folder" in capsys.readouterr().err
    assert main(["generate", "a mug", "--device", "cuda:x", "--out", str(tmp_path)]) == 2
    assert "not a torch device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["generate", "a mug", "--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "sees no CUDA GPU" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no run folder was made for any of them


def _final_params(run: Path, stage: str = "coarse") -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in load_file(str(run / "checkpoints" / f"{stage}.safetensors")).items()
        if k.startswith(("model.", "optim."))
    }


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(make_config, tmp_path):
    """(d) kill -9 after the first checkpoint, --resume: final parameters identical to an uninterrupted run."""
    cfg = make_config(
        "a red apple", **{"coarse.steps": "16", "trainer.checkpoint_every": "4", "trainer.preview_every": "8"}
    )
    cfg = apply_overrides(cfg, {"refine.steps": "0"})  # the coarse stage only: its checkpoints are compared
    cfg_path = save_config(cfg, tmp_path / "tiny.yaml")

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    full = _cli("generate", "a red apple", "--config", str(cfg_path), "--out", str(out_a))
    assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:]

    victim = _cli("generate", "a red apple", "--config", str(cfg_path), "--out", str(out_b))
    deadline = time.time() + 240
    ckpt = None
    while time.time() < deadline and victim.poll() is None:
        runs = list(out_b.glob("*/checkpoints/coarse.safetensors")) if out_b.exists() else []
        if runs:
            ckpt = runs[0]
            break
        time.sleep(0.02)
    assert ckpt is not None and victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    run_b = ckpt.parent.parent
    killed_at = read_checkpoint_meta(ckpt)["step"]
    assert 4 <= killed_at < 16
    assert json.loads((run_b / "run.json").read_text())["status"] == "running"  # died without saying so

    resumed = _cli("generate", "--resume", str(run_b))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    assert json.loads((run_b / "run.json").read_text())["status"] == "completed"
    a, b = _final_params(_run_dir(out_a)), _final_params(run_b)
    assert a.keys() == b.keys() and len(a) > 5
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_nan_stops_the_run_before_it_reaches_a_checkpoint(make_config, tiny_guidance):
    """Losses are read on the host only every log_every steps, but always before a checkpoint is written."""
    from text3d.pipeline import generate

    cfg = make_config(
        "a red apple",
        **{
            "coarse.optim.lr": "1e38",  # a real overflow (lr=nan is refused before the run)
            "trainer.log_every": "1000",
            "trainer.checkpoint_every": "2",
            "refine.steps": "0",
        },
    )
    with pytest.raises(FloatingPointError, match="loss became nan at step 2"):
        generate(cfg, guidance=tiny_guidance)
    run = _run_dir(Path(cfg.out_dir))
    assert not (run / "checkpoints" / "coarse.safetensors").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
