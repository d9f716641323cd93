"""Nothing stale after a kill (issue 12, item 7): a SIGKILL during export leaves a half-written temporary mesh,
which the next resume removes (acceptance g); SIGTERM of the CLI cancels like the web app's Cancel button."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES

from text3d.cli import main
from text3d.pipeline import stage_progress

REPO = Path(__file__).resolve().parents[1]

KILL_DURING_EXPORT = """
import os, signal, sys
import text3d.export.exporter as exporter

def killed(*args, **kwargs):  # the GLB is staged (a hidden temporary file), the OBJ is next: die here
    os.kill(os.getpid(), signal.SIGKILL)

exporter.write_obj = killed
from text3d.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _generate_argv(model: Path, out: Path, **extra: str) -> list[str]:
    sets = {**TINY_OVERRIDES, "refine.steps": "0", **extra}
    argv = ["generate", "a red apple", "--model", str(model), "--out", str(out)]
    return argv + [f"--set={k}={v}" for k, v in sets.items()]


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp*"))


def test_a_kill_during_export_then_resume_leaves_no_temporary_files(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    argv = _generate_argv(tiny_model_dir, out)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_EXPORT, *argv], env=_env(), capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    (run,) = list(out.iterdir())
    stale = _temporaries(run)
    assert stale and all(name.startswith("mesh/.") for name in stale), stale  # what the kill left

    assert main(["generate", "--resume", str(run)]) == 0
    assert _temporaries(run) == [], "the resume removed the killed export's temporary files"
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert list((run / "mesh").glob("*.glb")), "and exported the mesh"


@pytest.mark.slow
def test_sigterm_cancels_checkpoints_and_marks_the_run_cancelled(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    argv = _generate_argv(tiny_model_dir, out, **{"coarse.steps": "2000", "trainer.checkpoint_every": "1000"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "text3d", *argv], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    metrics = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list(out.iterdir()) if out.is_dir() else []
        if runs and (runs[0] / "metrics.jsonl").is_file() and (runs[0] / "metrics.jsonl").stat().st_size:
            metrics = runs[0] / "metrics.jsonl"
            break
        time.sleep(0.05)
    assert metrics is not None and proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "cancelled" in err.decode() and "--resume" in err.decode()
    run = metrics.parent
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    assert 0 < stage_progress(run, "coarse") < 2000, "checkpointed where it stopped"
    assert _temporaries(run) == []
