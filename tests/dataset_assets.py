"""Small test assets for ``text3d dataset``, made in code: three shapes of distinct colours and file formats.

The ring (a torus) gives masks with holes; the cone is an OBJ with face colours; the capsule a GLB with vertex
colours. Low triangle counts keep the independent ray-cast check fast.
"""

from __future__ import annotations

from pathlib import Path

import trimesh


def write_assets(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ring = trimesh.creation.torus(major_radius=0.5, minor_radius=0.15, major_sections=24, minor_sections=10)
    ring.visual.face_colors = [220, 40, 40, 255]
    cone = trimesh.creation.cone(radius=0.4, height=1.0, sections=20)
    cone.visual.face_colors = [40, 200, 60, 255]
    capsule = trimesh.creation.capsule(radius=0.25, height=0.6, count=[12, 12])
    capsule.visual.vertex_colors = [40, 60, 220, 255]
    paths = {"ring": folder / "ring.glb", "cone": folder / "cone.obj", "capsule": folder / "capsule.glb"}
    ring.export(paths["ring"])
    cone.export(paths["cone"])
    capsule.export(paths["capsule"])
    return paths
