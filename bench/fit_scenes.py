"""The Cycles scenes the fit benchmarks share (rendered once, cached by scene hash in ``~/.cache/text3d/scenes``).

- :func:`test_scene`: the fit tests' Suzanne (``tests/conftest.py``'s ``suzanne``): subdivided once, smooth, 6x6
  checker, HDR sky, RGBA, 40 training and 8 held-out views at 64², 16 samples.
- :func:`benchmark_scene`: issue 13 (b)'s: Suzanne subdivided twice with a 512² noise texture (fine detail),
  roughness 0.6, 100 training and 20 held-out views at 200², 64 samples, denoised (about 20 minutes of Cycles on
  2 cores the first time).
"""

from __future__ import annotations

from pathlib import Path


def test_scene():
    from text3d.scenes import render_dataset, suzanne_spec

    return render_dataset(suzanne_spec())


def benchmark_scene(views: int = 100, test_views: int = 20, resolution: int = 200, samples: int = 64):
    from text3d.scenes import TextureSpec, render_dataset, suzanne_spec

    spec = suzanne_spec(
        TextureSpec(kind="noise", size=512, seed=3),
        subdivision=2,
        roughness=0.6,
        views=views,
        test_views=test_views,
        resolution=resolution,
        samples=samples,
        denoise=True,
    )
    return render_dataset(spec)


def append_record(kind: str, record: dict) -> Path:
    """Print ``record`` and append it to ``bench/results/<kind>-<record's date>.json`` (a JSON list)."""
    import json

    print(json.dumps(record, indent=1))
    out = Path("bench/results") / f"{kind}-{record['date']}.json"
    earlier = json.loads(out.read_text()) if out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([*earlier, record], indent=1) + "\n")
    return out
