"""Shared fixtures: a tiny random Stable Diffusion saved in diffusers layout, and small run configs.

Everything runs on CPU with no network: the model is built in code (``text3d.guidance.random_models``) and loaded
back through the same ``from_pretrained`` path a hub id takes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# Blender lives in its own environment (.ci/run makes .venv-blender; bpy pins numpy 1.26, which text3d's
# environment must not get): scene renders and import checks run it as a subprocess.
_BLENDER_VENV = Path(__file__).resolve().parents[1] / ".venv-blender" / "bin" / "python"
if _BLENDER_VENV.is_file():
    os.environ.setdefault("TEXT3D_BLENDER_PYTHON", str(_BLENDER_VENV))

from text3d.scenes.render import BLENDER_SETUP, blender_python  # noqa: E402

BLENDER = blender_python()
"""The Python with ``bpy`` (``None``: not installed; tests that need Blender skip and say how to install it)."""
needs_blender = pytest.mark.skipif(BLENDER is None, reason=f"Blender (bpy) is not installed: {BLENDER_SETUP}")

# Small but real: every field below is an ordinary config value a user could set.
TINY_OVERRIDES = {
    "coarse.nerf.encoding.n_levels": "8",
    "coarse.nerf.encoding.log2_hashmap_size": "14",
    "coarse.nerf.encoding.max_resolution": "128",
    "coarse.nerf.hidden_dim": "32",
    "coarse.renderer.n_samples": "32",
    "coarse.steps": "8",
    "coarse.resolution": "32",
    "coarse.shading.albedo_only_steps": "4",
    "refine.steps": "2",
    "refine.resolution": "32",
    "refine.dmtet.resolution": "32",
    "refine.init_views": "4",
    "refine.init_resolution": "16",
    "trainer.log_every": "2",
    "trainer.preview_every": "4",
    "trainer.checkpoint_every": "4",
    "trainer.video_frames": "4",
    "trainer.progress_bar": "false",
    "export.grid_resolution": "32",
    "export.texture_size": "64",
    "export.threshold_views": "4",
    "export.threshold_resolution": "16",
    "device": "cpu",
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from text3d.guidance.random_models import save_random_sd

    return save_random_sd(tmp_path_factory.mktemp("models") / "tiny-sd", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_guidance(tiny_model_dir):
    from text3d.guidance.stable_diffusion import StableDiffusionGuidance

    return StableDiffusionGuidance.from_pretrained(str(tiny_model_dir), device="cpu", local_files_only=True)


@pytest.fixture
def make_config(tiny_model_dir, tmp_path):
    """``make_config(prompt, **overrides)``: a GenerateConfig with the tiny model and tiny settings."""
    from text3d.config import GenerateConfig, apply_overrides

    def _make(prompt: str = "a red apple", **overrides):
        cfg = apply_overrides(GenerateConfig(prompt=prompt), TINY_OVERRIDES)
        cfg = apply_overrides(
            cfg, {"model.model_id": str(tiny_model_dir), "out_dir": str(tmp_path / "outputs")}
        )
        return apply_overrides(cfg, {k.replace("__", "."): v for k, v in overrides.items()})

    return _make


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def suzanne():
    """Suzanne with a checker texture under a sky, by Cycles: 40 training and 8 held-out views at 64² (cached)."""
    from text3d.scenes import render_dataset, suzanne_spec

    return render_dataset(suzanne_spec())
