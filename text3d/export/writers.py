"""File writers for textured meshes: GLB (glTF 2.0 binary), OBJ + MTL + PNG, and a vertex-coloured PLY.

Conventions of every file written here (see :mod:`text3d.export.exporter` for how the mesh gets there):

- **Axes**: glTF's: right-handed, **+Y up**, the asset's front (the side the azimuth-0 training view saw) faces
  **+Z**. OBJ and PLY use the same numbers (Blender's OBJ and glTF importers both turn +Y-up into its +Z-up).
- **Units**: metres.
- **Winding**: triangles are counter-clockwise seen from outside.
- **UVs**: :class:`TexturedMesh` holds OpenGL/OBJ UVs (``v`` up: ``v = 1`` is the top row of the image); the GLB
  writer stores ``(u, 1 - v)`` because glTF's ``v`` runs down the image.
- **Texture**: 8-bit sRGB PNG (the albedo the diffusion model saw is display-referred, which is exactly what glTF
  expects of ``baseColorTexture``), identical bytes in the GLB and beside the OBJ.

Every file is written to a temporary name next to its target and renamed into place only when *all* files of one
export were written (:class:`StagedFiles`), so a failed export leaves neither partial nor empty files behind, and
an OBJ never points at a PNG that is not there.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jaxtyping import Float, Int, UInt8

from text3d.io import plain_file_mode

# glTF enums
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
_GLB_MAGIC, _GLB_JSON, _GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942


@dataclass
class TexturedMesh:
    """A UV-mapped mesh ready to write, in its final frame (metres, Y up, front +Z).

    Attributes:
        positions: ``[V, 3]`` float32 vertex positions (vertices on UV seams are duplicated).
        normals: ``[V, 3]`` float32 unit vertex normals.
        uvs: ``[V, 2]`` float32 texture coordinates in ``[0, 1]``, OpenGL convention (``v`` up).
        faces: ``[F, 3]`` vertex indices, counter-clockwise seen from outside.
        texture_png: the base-colour texture, PNG bytes (see :func:`text3d.export.texture.encode_png`).
        name: the asset's name; file, material and node names derive from it.
        extras: JSON-safe metadata stored in the GLB's ``asset.extras`` (prompt, seed, units, ...).
    """

    positions: Float[np.ndarray, "V 3"]
    normals: Float[np.ndarray, "V 3"]
    uvs: Float[np.ndarray, "V 2"]
    faces: Int[np.ndarray, "F 3"]
    texture_png: bytes
    name: str
    extras: dict = field(default_factory=dict)
    metallic_roughness_png: bytes | None = None
    """PBR: glTF's ``metallicRoughnessTexture`` (linear; roughness in G, metallic in B), PNG bytes."""
    roughness_png: bytes | None = None
    metallic_png: bytes | None = None
    """PBR, for OBJ's ``map_Pr`` / ``map_Pm``: greyscale PNGs."""
    environment_hdr: bytes | None = None
    """PBR: the learned light as Radiance ``.hdr`` bytes, written beside the mesh as ``<name>_environment.hdr``."""


class StagedFiles:
    """Temporary files next to their targets, renamed into place together by :meth:`commit`.

    Use through :func:`staged_files`. Parent folders that did not exist are created on demand and removed again
    (if still empty) when the export is discarded.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._made_dirs: list[Path] = []

    def path(self, target: str | os.PathLike) -> Path:
        """A fresh temporary path that will become ``target`` on commit."""
        target = Path(target)
        missing = []
        parent = target.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        target.parent.mkdir(parents=True, exist_ok=True)
        self._made_dirs.extend(reversed(missing))
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
        )
        os.close(fd)
        self._pending.append((Path(tmp), target))
        return Path(tmp)

    def commit(self) -> list[Path]:
        """fsync every temporary file, then rename each onto its target. Returns the targets."""
        for tmp, target in self._pending:
            if tmp.stat().st_size == 0:
                raise OSError(f"refusing to write an empty file {target.name}")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, plain_file_mode(target))  # mkstemp makes 0600; a plain open() would not
        done: list[Path] = []
        try:
            for tmp, target in self._pending:
                os.replace(tmp, target)
                done.append(target)
        except BaseException:
            for target in done:  # all or nothing: never an OBJ without its MTL or PNG
                target.unlink(missing_ok=True)
            raise
        self._pending = []
        return done

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending = []
        for d in reversed(self._made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()  # only succeeds when empty
        self._made_dirs = []


@contextlib.contextmanager
def staged_files() -> Iterator[StagedFiles]:
    """``with staged_files() as st: write to st.path(target) ...; st.commit()``; anything uncommitted is removed."""
    st = StagedFiles()
    try:
        yield st
    finally:
        st.discard()


# ---------------------------------------------------------------------------------------------------------- GLB
def _pad4(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def glb_bytes(mesh: TexturedMesh, generator: str = "text3d") -> bytes:
    """A complete GLB: one mesh, one node, a metallic-roughness material with an embedded PNG base colour.

    Metallic 0 and roughness 1: the albedo-only field knows nothing of specularity, so the material is a plain
    diffuse surface. ``doubleSided`` is set because isosurfaces clipped by the scene box can be open.
    """
    pos = np.ascontiguousarray(mesh.positions, dtype="<f4")
    nrm = np.ascontiguousarray(mesh.normals, dtype="<f4")
    uv = np.ascontiguousarray(mesh.uvs, dtype="<f4").copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # glTF: v runs down the image
    idx = np.ascontiguousarray(mesh.faces, dtype="<u4").reshape(-1)
    blobs: list[bytes] = []
    views: list[dict] = []
    offset = 0
    for data, target in (
        (pos.tobytes(), _ARRAY_BUFFER),
        (nrm.tobytes(), _ARRAY_BUFFER),
        (uv.tobytes(), _ARRAY_BUFFER),
        (idx.tobytes(), _ELEMENT_ARRAY_BUFFER),
        (mesh.texture_png, None),
        *([(mesh.metallic_roughness_png, None)] if mesh.metallic_roughness_png else []),
    ):
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        views.append(view)
        padded = _pad4(data, b"\x00")
        blobs.append(padded)
        offset += len(padded)
    n_verts = int(pos.shape[0])
    accessors = [
        {
            "bufferView": 0,
            "componentType": _FLOAT,
            "count": n_verts,
            "type": "VEC3",
            "min": pos.min(axis=0).tolist(),
            "max": pos.max(axis=0).tolist(),
        },
        {"bufferView": 1, "componentType": _FLOAT, "count": n_verts, "type": "VEC3"},
        {"bufferView": 2, "componentType": _FLOAT, "count": n_verts, "type": "VEC2"},
        {"bufferView": 3, "componentType": _UINT32, "count": int(idx.shape[0]), "type": "SCALAR"},
    ]
    doc = {
        "asset": {"version": "2.0", "generator": generator, "extras": mesh.extras},
        "scene": 0,
        "scenes": [{"name": mesh.name, "nodes": [0]}],
        "nodes": [{"name": mesh.name, "mesh": 0}],
        "meshes": [
            {
                "name": mesh.name,
                "primitives": [
                    {
                        "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2},
                        "indices": 3,
                        "material": 0,
                        "mode": 4,
                    }
                ],
            }
        ],
        "materials": [
            {
                "name": mesh.name,
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0, "texCoord": 0},
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
                "doubleSided": True,
            }
        ],
        "textures": [{"sampler": 0, "source": 0}],
        "samplers": [
            {
                "magFilter": _LINEAR,
                "minFilter": _LINEAR_MIPMAP_LINEAR,
                "wrapS": _CLAMP_TO_EDGE,
                "wrapT": _CLAMP_TO_EDGE,
            }
        ],
        "images": [{"name": f"{mesh.name}_albedo", "bufferView": 4, "mimeType": "image/png"}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    }
    if mesh.metallic_roughness_png:
        pbr = doc["materials"][0]["pbrMetallicRoughness"]
        pbr.update(
            metallicRoughnessTexture={"index": 1, "texCoord": 0}, metallicFactor=1.0, roughnessFactor=1.0
        )
        doc["textures"].append({"sampler": 0, "source": 1})
        doc["images"].append(
            {"name": f"{mesh.name}_metallic_roughness", "bufferView": 5, "mimeType": "image/png"}
        )
    json_chunk = _pad4(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    bin_chunk = b"".join(blobs)
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return b"".join(
        [
            struct.pack("<III", _GLB_MAGIC, 2, total),
            struct.pack("<II", len(json_chunk), _GLB_JSON),
            json_chunk,
            struct.pack("<II", len(bin_chunk), _GLB_BIN),
            bin_chunk,
        ]
    )


def write_glb(st: StagedFiles, path: str | os.PathLike, mesh: TexturedMesh) -> Path:
    """Stage ``path`` (a ``.glb``) holding ``mesh`` with its texture embedded."""
    from text3d import __version__

    st.path(path).write_bytes(glb_bytes(mesh, generator=f"text3d {__version__}"))
    return Path(path)


def environment_file_name(name: str) -> str:
    return f"{name}_environment.hdr"


def write_environment_file(st: StagedFiles, folder: str | os.PathLike, mesh: TexturedMesh) -> list[Path]:
    """Stage the learned light beside the mesh (``<name>_environment.hdr``), when the asset has one."""
    if mesh.environment_hdr is None:
        return []
    path = Path(folder) / environment_file_name(mesh.name)
    st.path(path).write_bytes(mesh.environment_hdr)
    return [path]


# ---------------------------------------------------------------------------------------------------------- OBJ
def _rows(fmt: str, arr: np.ndarray) -> str:
    """``fmt`` applied to every row of ``arr`` (one vectorised string formatting, much faster than savetxt)."""
    if arr.shape[0] == 0:
        return ""
    return (fmt * arr.shape[0]) % tuple(arr.reshape(-1).tolist())


def obj_file_names(name: str) -> tuple[str, str, str]:
    """``(obj, mtl, png)`` file names for asset ``name``: all three carry the name, so exports never collide."""
    return f"{name}.obj", f"{name}.mtl", f"{name}_albedo.png"


def write_obj(st: StagedFiles, folder: str | os.PathLike, mesh: TexturedMesh) -> list[Path]:
    """Stage ``<name>.obj``, ``<name>.mtl`` and ``<name>_albedo.png`` in ``folder``.

    The MTL names the texture with a relative path (``map_Kd``) plus the PBR extension lines (``Pr``, ``Pm``) that
    Blender's importer reads. Vertex, UV and normal indices are identical (``f i/i/i``), so reloading keeps the
    vertex count.
    """
    folder = Path(folder)
    obj_name, mtl_name, png_name = obj_file_names(mesh.name)
    pbr = mesh.roughness_png is not None and mesh.metallic_png is not None
    mtl = mtl_text(mesh.name, png_name, pbr=pbr)
    f1 = np.asarray(mesh.faces, dtype=np.int64) + 1
    header = (
        "# text3d mesh: metres, +Y up, front faces +Z\n"
        f"# {mesh.positions.shape[0]} vertices, {f1.shape[0]} faces\n"
        f"mtllib {mtl_name}\no {mesh.name}\n"
    )
    body = "".join(
        [
            _rows("v %.6f %.6f %.6f\n", np.asarray(mesh.positions, dtype=np.float64)),
            _rows("vt %.6f %.6f\n", np.asarray(mesh.uvs, dtype=np.float64)),
            _rows("vn %.5f %.5f %.5f\n", np.asarray(mesh.normals, dtype=np.float64)),
            f"usemtl {mesh.name}\ns 1\n",
            _rows("f %d/%d/%d %d/%d/%d %d/%d/%d\n", np.repeat(f1, 3, axis=1)),
        ]
    )
    st.path(folder / obj_name).write_text(header + body, encoding="utf-8")
    st.path(folder / mtl_name).write_text(mtl, encoding="utf-8")
    st.path(folder / png_name).write_bytes(mesh.texture_png)
    files = [folder / obj_name, folder / mtl_name, folder / png_name]
    if mesh.roughness_png is not None and mesh.metallic_png is not None:
        for kind, data in (("roughness", mesh.roughness_png), ("metallic", mesh.metallic_png)):
            st.path(folder / f"{mesh.name}_{kind}.png").write_bytes(data)
            files.append(folder / f"{mesh.name}_{kind}.png")
    return files


def mtl_text(name: str, png_name: str, pbr: bool = False) -> str:
    """The MTL of the material: ``map_Kd`` names the base-colour texture with a relative path, plus the PBR
    extension lines Blender's importer reads: ``Pr`` / ``Pm`` (an albedo-only material is fully rough and
    non-metallic) and, with ``pbr``, the roughness and metallic maps ``<name>_roughness.png`` / ``_metallic.png``
    (``map_Pr`` / ``map_Pm``, linear greyscale)."""
    maps = [f"map_Pr {name}_roughness.png", f"map_Pm {name}_metallic.png"] if pbr else []
    return "\n".join(
        [
            "# text3d: PBR material (sRGB base colour; roughness and metallic maps, linear)"
            if pbr
            else "# text3d: albedo-only material (sRGB base colour texture, non-metallic, fully rough)",
            f"newmtl {name}",
            "Ka 1.000000 1.000000 1.000000",
            "Kd 1.000000 1.000000 1.000000",
            "Ks 0.000000 0.000000 0.000000",
            "Ns 0.000000",
            "d 1.000000",
            "illum 1",
            "Pr 1.000000",
            f"Pm {1.0 if pbr else 0.0:.6f}",
            f"map_Kd {png_name}",
            *maps,
            "",
        ]
    )


# ---------------------------------------------------------------------------------------------------------- PLY
def write_ply(
    st: StagedFiles,
    path: str | os.PathLike,
    positions: Float[np.ndarray, "V 3"],
    faces: Int[np.ndarray, "F 3"],
    colors: UInt8[np.ndarray, "V 3"],
    normals: Float[np.ndarray, "V 3"] | None = None,
) -> Path:
    """Stage a binary little-endian PLY with per-vertex sRGB colours (no texture, no UV seams: welded vertices)."""
    n_v, n_f = int(positions.shape[0]), int(faces.shape[0])
    props = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if normals is not None:
        props += [("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
    props += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(n_v, dtype=[(n, "<" + t) for n, t in props])
    for i, axis in enumerate("xyz"):
        vert[axis] = positions[:, i]
        if normals is not None:
            vert["n" + axis] = normals[:, i]
    for i, ch in enumerate(("red", "green", "blue")):
        vert[ch] = colors[:, i]
    face = np.empty(n_f, dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face["n"] = 3
    face["idx"] = faces
    ply_types = {"f4": "float", "u1": "uchar"}
    header = "\n".join(
        ["ply", "format binary_little_endian 1.0", "comment text3d: metres, +Y up, front faces +Z"]
        + [f"element vertex {n_v}"]
        + [f"property {ply_types[t]} {n}" for n, t in props]
        + [f"element face {n_f}", "property list uchar int vertex_indices", "end_header", ""]
    )
    st.path(path).write_bytes(header.encode("ascii") + vert.tobytes() + face.tobytes())
    return Path(path)
