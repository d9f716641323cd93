"""Cycles render with spatially varying Principled BSDF materials. Runs INSIDE a Python with ``bpy``, like
:mod:`cycles_script` (standalone: ``bpy`` and the standard library only), and is that script with one more
material builder: scenes that use :class:`text3d.scenes.spec.MaterialSpec`'s ``base_color_b`` / ``split_axis``
render through this file, every other scene through the unchanged ``cycles_script.py`` (so their cache keys,
which hash the script, stay valid).

Material (object space, Blender's Z-up object frame; the same formulas as ``spec.pbr_ground_truth``):
base colour ``mix(base_color, base_color_b, clamp(p[ramp_axis] / size + 0.5))``, roughness and metallic uniform;
where ``p[split_axis] > split_at`` all three are ``upper`` instead.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cycles_script  # noqa: E402


def _socket(sockets, name, kind):
    return next(s for s in sockets if s.name == name and s.type == kind)


def _mix(nodes, links, kind, factor, a, b):
    """A Mix node of ``kind`` (``FLOAT`` or ``RGBA``) between constants ``a`` and ``b`` by the ``factor``
    socket; returns its output socket."""
    mix = nodes.new("ShaderNodeMix")
    mix.data_type = kind
    links.new(factor, _socket(mix.inputs, "Factor", "VALUE"))
    sock = "VALUE" if kind == "FLOAT" else "RGBA"
    _socket(mix.inputs, "A", sock).default_value = a
    _socket(mix.inputs, "B", sock).default_value = b
    return mix, _socket(mix.outputs, "Result", sock)


def build_material(obj, spec):
    import bpy

    if spec.get("kind", "principled") != "principled" or spec.get("texture"):
        raise SystemExit("spatially varying materials are principled and untextured")
    mat = bpy.data.materials.new("text3d_material")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    coord = nodes.new("ShaderNodeTexCoord")
    xyz = nodes.new("ShaderNodeSeparateXYZ")
    links.new(coord.outputs["Object"], xyz.inputs["Vector"])
    axes = ("X", "Y", "Z")
    base = list(spec["base_color"]) + [1.0]
    rough, metal = float(spec["roughness"]), float(spec["metallic"])
    colour = None
    if spec.get("base_color_b") is not None:
        size = float(spec["size"])
        ramp = nodes.new("ShaderNodeMapRange")
        ramp.clamp = True
        links.new(xyz.outputs[axes[int(spec["ramp_axis"])]], ramp.inputs["Value"])
        ramp.inputs["From Min"].default_value = -size / 2
        ramp.inputs["From Max"].default_value = size / 2
        ramp.inputs["To Min"].default_value = 0.0
        ramp.inputs["To Max"].default_value = 1.0
        _, colour = _mix(
            nodes, links, "RGBA", ramp.outputs["Result"], base, list(spec["base_color_b"]) + [1.0]
        )
    bsdf.inputs["Base Color"].default_value = base
    bsdf.inputs["Roughness"].default_value = rough
    bsdf.inputs["Metallic"].default_value = metal
    if int(spec.get("split_axis", -1)) >= 0:
        upper = [float(x) for x in spec["upper"]]
        above = nodes.new("ShaderNodeMath")
        above.operation = "GREATER_THAN"
        links.new(xyz.outputs[axes[int(spec["split_axis"])]], above.inputs[0])
        above.inputs[1].default_value = float(spec["split_at"])
        mix, res = _mix(nodes, links, "RGBA", above.outputs["Value"], base, upper[:3] + [1.0])
        if colour is not None:
            links.new(colour, _socket(mix.inputs, "A", "RGBA"))
        colour = res
        _, r = _mix(nodes, links, "FLOAT", above.outputs["Value"], rough, upper[3])
        _, m = _mix(nodes, links, "FLOAT", above.outputs["Value"], metal, upper[4])
        links.new(r, bsdf.inputs["Roughness"])
        links.new(m, bsdf.inputs["Metallic"])
    if colour is not None:
        links.new(colour, bsdf.inputs["Base Color"])
    obj.data.materials.clear()
    obj.data.materials.append(mat)


if __name__ == "__main__":
    cycles_script._build_material = build_material  # the base script, with this material builder
    cycles_script.main(sys.argv[1])
