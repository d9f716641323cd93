"""Edge-case search: occlusion and brightness goals met by gradient descent on the scene, checked independently
(occlusion from a ray-cast id render, brightness from the written JPEG); the full 50-image figures are in
``bench/dataset_edge_bench.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from dataset_assets import write_assets  # noqa: E402
from dataset_raycast import id_render  # noqa: E402

from text3d.dataset.build import build_dataset  # noqa: E402
from text3d.dataset.config import DatasetConfig, EffectsConfig, SearchConfig  # noqa: E402
from text3d.dataset.edge_cases import TARGETS, BrightnessTarget, parse_targets  # noqa: E402
from text3d.errors import ConfigError  # noqa: E402

CLEAN = EffectsConfig(noise=(0.0, 0.0), blur_probability=0.0, jpeg_quality=(100, 100))


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    return write_assets(tmp_path_factory.mktemp("assets"))


def _metas(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "meta").rglob("*.json"))]


def test_occlusion_and_brightness_goals_are_met(assets, tmp_path):
    n, tol = 5, 0.05
    cfg = DatasetConfig(
        images=n, size=80, val=0.0, seed=11, effects=CLEAN, search=SearchConfig(targets=("occlusion=0.6",))
    )
    occ = build_dataset(list(assets.values()), tmp_path / "occ", cfg)
    hits = 0
    for meta in _metas(occ.out):
        s = meta["search"]
        ref = id_render(meta)  # independent: ray cast with the occluder the search placed
        k = s["subject"]
        truth = 1.0 - (ref.object_id == k).sum() / ref.alone[k].sum()
        assert abs(truth - s["achieved"]["occlusion"]) <= 0.02, (truth, s)
        hits += abs(truth - 0.6) <= tol
        assert s["steps"] <= cfg.search.steps * (cfg.search.restarts + 1)
    assert hits >= n - 1, hits

    cfg = DatasetConfig(
        images=n, size=80, val=0.0, seed=12, effects=CLEAN, search=SearchConfig(targets=("brightness=0.08",))
    )
    dark = build_dataset(list(assets.values()), tmp_path / "dark", cfg)
    hits = 0
    for meta in _metas(dark.out):
        s = meta["search"]
        ref = id_render(meta)
        mask = ref.object_id == s["subject"]
        inner = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
        rgb = np.asarray(Image.open(dark.out / meta["image"]), dtype=np.float64) / 255.0
        lum = float((rgb[inner] @ np.array([0.2126, 0.7152, 0.0722])).mean())  # from the written picture
        assert abs(lum - s["achieved"]["brightness"]) <= 0.02, (lum, s)
        hits += abs(lum - 0.08) <= tol
    assert hits >= n - 1, hits


def test_targets_are_parsed_and_extensible():
    assert [type(t) for t in parse_targets(["occlusion=0.6", "brightness=0.1"])] == [
        TARGETS["occlusion"],
        BrightnessTarget,
    ]
    for bad in (
        "occlusion",
        "glare=0.3",
        "brightness=dark",
        "brightness=-0.1",
        "occlusion=0.2,occlusion=0.3",
    ):
        with pytest.raises(ConfigError):
            parse_targets(bad.split(","))
