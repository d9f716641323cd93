"""A PBR export opens in real tools: the Khronos glTF validator (0 errors, 0 warnings) and Blender's glTF importer,
whose Principled BSDF must get Roughness from the metallic-roughness texture's G channel and Metallic from B (the
node links are checked); the OBJ's MTL names map_Pr / map_Pm; the environment .hdr reads back."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import trimesh

from tests.test_export_validator import validate
from text3d.export.exporter import ExportConfig, export_mesh
from text3d.hdr import read_environment
from text3d.scenes.spec import studio_hdr


def two_material(x: torch.Tensor) -> torch.Tensor:
    """(roughness, metallic): a smooth metal top (y > 0), a rough dielectric bottom."""
    top = (x[:, 1:2] > 0).float()
    return torch.cat([0.8 - 0.6 * top, top], dim=-1)


def export(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    cfg = ExportConfig(formats=("glb", "obj"), texture_size=128, target_faces=0)
    return export_mesh(
        np.asarray(mesh.vertices, np.float32),
        mesh.faces,
        lambda x: (x + 0.5).clamp(0, 1),
        tmp_path,
        "ball",
        cfg,
        roughness_metallic_fn=two_material,
        environment=studio_hdr(64, 32),
    )


def test_pbr_glb_validates(tmp_path):
    result = export(tmp_path)
    names = sorted(p.name for p in result.files)
    assert "ball_environment.hdr" in names and "ball_roughness.png" in names and "ball_metallic.png" in names
    assert read_environment(tmp_path / "ball_environment.hdr").shape == (32, 64, 3)
    report = validate(tmp_path / "ball.glb")
    issues = report["issues"]
    msgs = [f"{m['code']}: {m['message']}" for m in issues["messages"]]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, msgs
    images = [r for r in report["info"]["resources"] if "image" in r]
    assert len(images) == 2
    print(f"gltf-validator {report.get('validatorVersion')}: 0 errors, 0 warnings; images {images}")
    mtl = (tmp_path / "ball.mtl").read_text()
    assert "map_Pr ball_roughness.png" in mtl and "map_Pm ball_metallic.png" in mtl


BLENDER = textwrap.dedent(
    """
    import json, sys
    import bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=sys.argv[1])
    obj = [o for o in bpy.context.scene.objects if o.type == "MESH"][0]
    mat = obj.data.materials[0]
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    def source(socket, depth=0):
        # follow links back to an image node; report the channel path (e.g. Separate Color's Green output)
        if not socket.is_linked:
            return None
        link = socket.links[0]
        node, out = link.from_node, link.from_socket.name
        if node.type == "TEX_IMAGE":
            return {"image": node.image.name, "colorspace": node.image.colorspace_settings.name, "via": []}
        for inp in node.inputs:
            s = source(inp, depth + 1)
            if s is not None:
                s["via"].append(node.type + ":" + out)
                return s
        return None
    print("BLENDER_RESULT" + json.dumps({k: source(bsdf.inputs[k]) for k in ("Base Color", "Roughness", "Metallic")}))
    """
)


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy not installed")
def test_blender_links_metallic_roughness(tmp_path):
    export(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", BLENDER, str(tmp_path / "ball.glb")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BLENDER_RESULT"))
    links = json.loads(line[len("BLENDER_RESULT") :])
    print(links)
    assert (
        links["Base Color"]["image"].endswith("ball_albedo") and links["Base Color"]["colorspace"] == "sRGB"
    )
    for socket, channel in (("Roughness", "Green"), ("Metallic", "Blue")):
        src = links[socket]
        assert src is not None and src["image"].endswith("metallic_roughness"), (socket, src)
        assert src["colorspace"] == "Non-Color", src
        assert any(v.endswith(":" + channel) for v in src["via"]), (socket, src)
