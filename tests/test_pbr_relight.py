"""Relighting at test size (issue 15 (a)): materials and light fitted to Cycles photos of a two-material sphere
under a sky, rendered under a second environment never seen in training, against Cycles' render under it. The
bench (``bench/pbr_bench.py``, docs/benchmarks.md) runs the same at 128 px with the albedo-only and known-light
comparisons."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "pbr_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("pbr_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_relit_render_matches_cycles_under_an_unseen_light(tmp_path):
    result = load_bench().run(size=64, views=12, spp=16, steps=250, out=str(tmp_path), full=False)
    print(result)
    assert result["relit_psnr"] >= 24.0, result
    learned = result["learned_light"]
    assert learned["metallic_correct"] >= 0.9, learned
    assert learned["roughness_err_dielectric"] <= 0.15 and learned["roughness_err_metal"] <= 0.15, learned
