"""The exported GLB and OBJ open in Blender (``bpy``, headless) with their texture and the right orientation.

Blender imports glTF and OBJ as Y-up and converts to its Z-up frame, so the asset's front (+Z in the file) must
end up facing Blender's front view, -Y. Runs Blender in a subprocess so its import stays out of the test process.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import torch
import trimesh
from conftest import BLENDER, needs_blender

from text3d.export.exporter import ExportConfig, export_mesh

pytestmark = needs_blender

BLENDER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import bpy
    from mathutils import Vector

    out = {}
    for path in sys.argv[1:]:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        if path.endswith(".glb"):
            bpy.ops.import_scene.gltf(filepath=path)
        else:
            bpy.ops.wm.obj_import(filepath=path)
        meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
        obj = meshes[0]
        world = [obj.matrix_world @ v.co for v in obj.data.vertices]
        centre = sum(world, Vector()) / len(world)
        tip = max(world, key=lambda p: (p - centre).length) - centre
        images = []
        for mat in obj.data.materials:
            for node in mat.node_tree.nodes if mat and mat.use_nodes else []:
                if node.type == "TEX_IMAGE" and node.image is not None:
                    images.append([node.image.size[0], node.image.size[1]])
        out[path] = {
            "objects": len(meshes),
            "faces": len(obj.data.polygons),
            "uv_layers": len(obj.data.uv_layers),
            "tip": list(tip.normalized()),
            "images": images,
        }
    print("BLENDER_RESULT" + json.dumps(out))
    """
)


def test_glb_and_obj_open_in_blender_textured_and_facing_front(tmp_path):
    nose = trimesh.creation.cone(radius=0.25, height=0.8, sections=24)  # apex at +Z: the marked front
    verts = np.asarray(nose.vertices, np.float32)
    faces = np.asarray(nose.faces, np.int64)

    def albedo(x: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [0.5 + 0.5 * torch.sin(6 * x[:, 0]), 0.5 + 0.4 * x[:, 1], 0.3 + 0.0 * x[:, 2]], dim=-1
        )

    cfg = ExportConfig(formats=("glb", "obj"), texture_size=128, target_faces=0)
    result = export_mesh(verts, faces, albedo, tmp_path, "nose", cfg)
    glb, obj = tmp_path / "nose.glb", tmp_path / "nose.obj"
    assert glb in result.files and obj in result.files
    proc = subprocess.run(
        [BLENDER, "-c", BLENDER_SCRIPT, str(glb), str(obj)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BLENDER_RESULT"))
    seen = json.loads(line[len("BLENDER_RESULT") :])
    reloaded = trimesh.load(glb, force="mesh", process=False)
    for path in (str(glb), str(obj)):
        info = seen[path]
        assert info["objects"] == 1
        assert info["faces"] == len(reloaded.faces)
        assert info["uv_layers"] >= 1
        assert info["images"] == [[128, 128]], info["images"]  # the texture was found
        tip = np.array(info["tip"])
        assert tip @ np.array([0.0, -1.0, 0.0]) > 0.9, f"{path}: front points to {tip} in Blender, not -Y"
