"""Export benchmark: a 200k-face mesh with a 1024² texture, baked from a full-size NeRF albedo field, to GLB + OBJ.

Acceptance (issue 4): under 60 s on CPU. Run it as ``python bench/export_bench.py [--faces 200000] [--size 1024]
[--device cpu]``; it prints the wall time of each step and the total, and writes nothing outside a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def bumpy_sphere(n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed, bumpy sphere of radius ~0.6 with exactly ``n_faces`` triangles (subdivided, then decimated)."""
    import fast_simplification
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=max(2, int(np.ceil(np.log(n_faces / 20) / np.log(4)))))
    v = sphere.vertices
    bumps = 1.0 + 0.08 * np.sin(7 * v[:, :1]) * np.cos(5 * v[:, 1:2]) * np.sin(3 * v[:, 2:3] + 1.0)
    v = (v * bumps * 0.6).astype(np.float32)
    f = sphere.faces.astype(np.int64)
    if f.shape[0] > n_faces:
        v, f = fast_simplification.simplify(v, f, target_count=n_faces)
    return np.asarray(v, np.float32), np.asarray(f, np.int64)


def main() -> None:
    from text3d.export.exporter import ExportConfig, export_mesh
    from text3d.fields.nerf import NeRFField, NeRFFieldConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=200_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--formats", default="glb,obj")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    verts, faces = bumpy_sphere(args.faces)
    field = NeRFField(NeRFFieldConfig()).to(device).eval()  # the real coarse-stage field size
    cfg = ExportConfig(
        formats=tuple(args.formats.split(",")),
        texture_size=args.size,
        target_faces=0,
        min_component_fraction=0.0,
    )
    print(f"mesh: {verts.shape[0]} vertices, {faces.shape[0]} faces; texture {args.size}²; device {device}")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = export_mesh(verts, faces, field.albedo, out, "bench", cfg, device)
        total = time.perf_counter() - t0
    for step, sec in result.seconds.items():
        print(f"  {step:<8} {sec:6.2f} s")
    print(f"exported {result.n_faces} faces / {result.n_vertices} vertices ({', '.join(cfg.formats)})")
    print(f"total {total:.2f} s (limit 60 s on CPU)")


if __name__ == "__main__":
    main()
