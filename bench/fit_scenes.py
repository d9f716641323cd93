"""The Cycles scenes the fit benchmarks share (rendered once, cached by scene hash in ``~/.cache/text3d/scenes``).

- :func:`test_scene`: the fit tests' Suzanne (``tests/conftest.py``'s ``suzanne``): subdivided once, smooth, 6x6
  checker, HDR sky, RGBA, 40 training and 8 held-out views at 64², 16 samples.
- :func:`benchmark_scene`: issue 13 (b)'s: Suzanne subdivided twice with a 512² noise texture (fine detail),
  roughness 0.6, 100 training and 20 held-out views at 200², 64 samples, denoised (about 20 minutes of Cycles on
  2 cores the first time).
"""

from __future__ import annotations


def test_scene():
    from text3d.scenes import (
        CameraRigSpec,
        MaterialSpec,
        MeshSpec,
        RenderSpec,
        SceneSpec,
        TextureSpec,
        WorldSpec,
        render_dataset,
    )

    spec = SceneSpec(
        mesh=MeshSpec(source="suzanne", size=1.6, subdivision=1, smooth=True),
        material=MaterialSpec(texture=TextureSpec(kind="checker", squares=6)),
        world=WorldSpec(kind="sky"),
        cameras=CameraRigSpec(n_train=40, n_test=8, distance=3.0, fov_deg=40.0),
        render=RenderSpec(width=64, height=64, samples=16),
    )
    return render_dataset(spec)


def benchmark_scene(views: int = 100, test_views: int = 20, resolution: int = 200, samples: int = 64):
    from text3d.scenes import (
        CameraRigSpec,
        MaterialSpec,
        MeshSpec,
        RenderSpec,
        SceneSpec,
        TextureSpec,
        WorldSpec,
        render_dataset,
    )

    spec = SceneSpec(
        mesh=MeshSpec(source="suzanne", size=1.6, subdivision=2, smooth=True),
        material=MaterialSpec(texture=TextureSpec(kind="noise", size=512, seed=3), roughness=0.6),
        world=WorldSpec(kind="sky"),
        cameras=CameraRigSpec(n_train=views, n_test=test_views, distance=3.0, fov_deg=40.0),
        render=RenderSpec(width=resolution, height=resolution, samples=samples, denoise=True),
    )
    return render_dataset(spec)
