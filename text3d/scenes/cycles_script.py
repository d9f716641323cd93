"""Render a scene description with Blender Cycles. Runs INSIDE a Python that has ``bpy``, never imported by text3d.

Usage: ``python cycles_script.py JOB.json``, where JOB.json is written by :mod:`text3d.scenes.render`. It must stay
standalone (only ``bpy``, ``mathutils`` and the standard library), because the Python that runs it may be a
separate environment (issue 12: Blender out of the main environment) with no text3d installed.

Everything in JOB.json is already resolved by the host: file paths are absolute, procedural textures and HDRs are
written as files, and cameras are explicit camera-to-world matrices in Blender's world (Z up), OpenGL camera axes
(Blender cameras look down their local -Z with +Y up, which is the NeRF-synthetic convention). The script writes, in
``out_dir``:

- ``{split}/r_{i}.png``: RGBA 8-bit, straight alpha, sRGB ("Standard" view transform, no tone mapping);
- ``transforms_{split}.json``: ``camera_angle_x`` and frames with extensionless ``file_path`` and the camera-to-world
  ``transform_matrix`` read back from Blender;
- ``mesh.obj``: the rendered mesh (modifiers applied), triangulated, in the same world frame;
- ``blender.json``: Blender's version and the render time.
"""

import json
import math
import os
import sys
import time


def _build_mesh(spec):
    import bpy

    src = spec["source"]
    size = float(spec.get("size", 1.0))
    prims = {
        "cube": lambda: bpy.ops.mesh.primitive_cube_add(size=size),
        "uv_sphere": lambda: bpy.ops.mesh.primitive_uv_sphere_add(
            radius=size / 2, segments=64, ring_count=32
        ),
        "ico_sphere": lambda: bpy.ops.mesh.primitive_ico_sphere_add(radius=size / 2, subdivisions=4),
        "suzanne": lambda: bpy.ops.mesh.primitive_monkey_add(size=size),
        "cylinder": lambda: bpy.ops.mesh.primitive_cylinder_add(radius=size / 2, depth=size, vertices=64),
        "cone": lambda: bpy.ops.mesh.primitive_cone_add(radius1=size / 2, depth=size, vertices=64),
        "torus": lambda: bpy.ops.mesh.primitive_torus_add(major_radius=size * 0.35, minor_radius=size * 0.15),
    }
    if src in prims:
        prims[src]()
        obj = bpy.context.active_object
    else:
        before = set(bpy.context.scene.objects)
        ext = os.path.splitext(src)[1].lower()
        if ext == ".obj":
            bpy.ops.wm.obj_import(filepath=src)
        elif ext == ".ply":
            bpy.ops.wm.ply_import(filepath=src)
        elif ext == ".stl":
            bpy.ops.wm.stl_import(filepath=src)
        elif ext in (".glb", ".gltf"):
            bpy.ops.import_scene.gltf(filepath=src)
        else:
            raise SystemExit(f"unsupported mesh file type {ext!r}")
        meshes = [o for o in bpy.context.scene.objects if o not in before and o.type == "MESH"]
        if not meshes:
            raise SystemExit(f"{src}: no mesh objects imported")
        bpy.ops.object.select_all(action="DESELECT")
        for o in meshes:
            o.select_set(True)
        bpy.context.view_layer.objects.active = meshes[0]
        if len(meshes) > 1:
            bpy.ops.object.join()
        obj = bpy.context.view_layer.objects.active
        bpy.ops.object.transform_apply(location=True, rotation=True, scale=True)
        if size > 0 and spec.get(
            "fit_size", True
        ):  # centre the bounding box and scale its longest side to `size`
            co = [v.co.copy() for v in obj.data.vertices]
            lo = [min(c[i] for c in co) for i in range(3)]
            hi = [max(c[i] for c in co) for i in range(3)]
            extent = max(hi[i] - lo[i] for i in range(3)) or 1.0
            centre = [(hi[i] + lo[i]) / 2 for i in range(3)]
            for v in obj.data.vertices:
                v.co = [(v.co[i] - centre[i]) * size / extent for i in range(3)]
    if spec.get("subdivision", 0) > 0:
        mod = obj.modifiers.new("subsurf", "SUBSURF")
        mod.levels = mod.render_levels = int(spec["subdivision"])
    if spec.get("smooth", False):
        for poly in obj.data.polygons:
            poly.use_smooth = True
    obj.location = spec.get("location", (0.0, 0.0, 0.0))
    obj.rotation_euler = [math.radians(a) for a in spec.get("rotation_deg", (0.0, 0.0, 0.0))]
    obj.scale = spec.get("scale", (1.0, 1.0, 1.0))
    if not obj.data.uv_layers:  # files without UVs: project so a texture still lands somewhere sensible
        bpy.ops.object.mode_set(mode="EDIT")
        bpy.ops.mesh.select_all(action="SELECT")
        bpy.ops.uv.smart_project()
        bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def _build_material(obj, spec):
    import bpy

    mat = bpy.data.materials.new("text3d_material")
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    colour_socket_source = None
    if spec.get("texture"):
        tex = nodes.new("ShaderNodeTexImage")
        tex.image = bpy.data.images.load(spec["texture"])
        tex.image.colorspace_settings.name = "sRGB"
        tex.interpolation = spec.get("interpolation", "Linear")
        uv = nodes.new("ShaderNodeUVMap")
        links.new(uv.outputs["UV"], tex.inputs["Vector"])
        colour_socket_source = tex.outputs["Color"]
    base = list(spec.get("base_color", (0.8, 0.8, 0.8))) + [1.0]
    if spec.get("kind", "principled") == "emission":
        shader = nodes.new("ShaderNodeEmission")
        shader.inputs["Strength"].default_value = 1.0
        colour_input = shader.inputs["Color"]
        links.new(shader.outputs["Emission"], out.inputs["Surface"])
    else:
        shader = nodes.new("ShaderNodeBsdfPrincipled")
        shader.inputs["Roughness"].default_value = float(spec.get("roughness", 0.5))
        shader.inputs["Metallic"].default_value = float(spec.get("metallic", 0.0))
        colour_input = shader.inputs["Base Color"]
        links.new(shader.outputs["BSDF"], out.inputs["Surface"])
    colour_input.default_value = base
    if colour_socket_source is not None:
        links.new(colour_socket_source, colour_input)
    obj.data.materials.clear()
    obj.data.materials.append(mat)


def _build_world(spec):
    import bpy

    world = bpy.data.worlds.new("text3d_world")
    bpy.context.scene.world = world
    nodes, links = world.node_tree.nodes, world.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputWorld")
    bg = nodes.new("ShaderNodeBackground")
    bg.inputs["Strength"].default_value = float(spec.get("strength", 1.0))
    links.new(bg.outputs["Background"], out.inputs["Surface"])
    if spec.get("hdr"):
        env = nodes.new("ShaderNodeTexEnvironment")
        env.image = bpy.data.images.load(spec["hdr"])
        coord = nodes.new("ShaderNodeTexCoord")
        mapping = nodes.new("ShaderNodeMapping")
        mapping.inputs["Rotation"].default_value = (
            0.0,
            0.0,
            math.radians(float(spec.get("rotation_z_deg", 0.0))),
        )
        links.new(coord.outputs["Generated"], mapping.inputs["Vector"])
        links.new(mapping.outputs["Vector"], env.inputs["Vector"])
        links.new(env.outputs["Color"], bg.inputs["Color"])
    else:
        bg.inputs["Color"].default_value = list(spec.get("color", (1.0, 1.0, 1.0))) + [1.0]


def _setup_render(spec):
    import bpy

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = int(spec["samples"])
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = bool(spec.get("denoise", False))
    scene.cycles.seed = int(spec.get("seed", 0))
    scene.cycles.max_bounces = int(spec.get("max_bounces", 4))
    scene.cycles.pixel_filter_type = spec.get("pixel_filter", "BLACKMAN_HARRIS")
    scene.render.resolution_x = int(spec["width"])
    scene.render.resolution_y = int(spec["height"])
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = bool(spec.get("transparent", True))
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    if spec.get("threads"):
        scene.render.threads_mode = "FIXED"
        scene.render.threads = int(spec["threads"])


def _write_obj(obj, path):
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    mesh.calc_loop_triangles()
    mw = ev.matrix_world
    lines = ["# text3d render-dataset: the rendered mesh in the dataset's world frame (Blender, Z up)"]
    for v in mesh.vertices:
        p = mw @ v.co
        lines.append(f"v {p[0]:.9g} {p[1]:.9g} {p[2]:.9g}")
    for tri in mesh.loop_triangles:
        a, b, c = tri.vertices
        lines.append(f"f {a + 1} {b + 1} {c + 1}")
    ev.to_mesh_clear()
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(job_path):
    import bpy
    from mathutils import Matrix

    with open(job_path) as fh:
        job = json.load(fh)
    out_dir = job["out_dir"]
    t0 = time.time()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    _setup_render(job["render"])
    obj = _build_mesh(job["mesh"])
    _build_material(obj, job["material"])
    _build_world(job["world"])
    cam_data = bpy.data.cameras.new("text3d_camera")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.angle = float(job["camera_angle_x"])
    cam_data.clip_start, cam_data.clip_end = 0.01, 1000.0
    cam = bpy.data.objects.new("text3d_camera", cam_data)
    bpy.context.scene.collection.objects.link(cam)
    scene = bpy.context.scene
    scene.camera = cam
    n_rendered = 0
    for split, mats in job["cameras"].items():
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        frames = []
        for i, c2w in enumerate(mats):
            cam.matrix_world = Matrix(c2w)
            bpy.context.view_layer.update()
            scene.render.filepath = os.path.join(out_dir, split, f"r_{i}.png")
            bpy.ops.render.render(write_still=True)
            n_rendered += 1
            frames.append(
                {
                    "file_path": f"./{split}/r_{i}",
                    "rotation": 0.0,
                    "transform_matrix": [list(row) for row in cam.matrix_world],
                }
            )
        with open(os.path.join(out_dir, f"transforms_{split}.json"), "w") as fh:
            json.dump({"camera_angle_x": cam_data.angle, "frames": frames}, fh, indent=2)
    _write_obj(obj, os.path.join(out_dir, "mesh.obj"))
    with open(os.path.join(out_dir, "blender.json"), "w") as fh:
        json.dump(
            {"blender": bpy.app.version_string, "seconds": time.time() - t0, "images": n_rendered},
            fh,
            indent=2,
        )


if __name__ == "__main__":
    main(sys.argv[1])
