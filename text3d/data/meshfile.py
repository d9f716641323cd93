"""Reading a user's mesh to texture: GLB / glTF, OBJ (+ MTL) and PLY, with its UVs, checked for what texturing
needs, and never changed.

The geometry is the user's: :class:`InputMesh` keeps the file's vertex list, its faces and their order exactly.

- **OBJ** is read here, not through trimesh: an OBJ indexes positions (``v``) and UVs (``vt``) separately, and
  trimesh splits vertices at UV seams, which would renumber them. Here ``positions`` are the ``v`` lines in order,
  ``faces`` the ``f`` lines' position indices and ``face_uvs`` their UV indices (polygons with more than three
  corners are fanned into triangles in order; triangles stay as they are). Every ``o``/``g`` is part of the one
  mesh, as OBJ indices are global anyway.
- **GLB / glTF / PLY** are read with trimesh (``process=False``: no merging, no reordering). A scene with several
  meshes is merged in the file's mesh order with each node's world transform applied, so the result is in the scene's world
  frame. glTF has one index list for all attributes, so ``face_uvs`` equals ``faces``.

Every check is one line (:class:`MeshInputError`, exit code 2 in the CLI) raised before anything is written.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float, Int

from text3d.data.errors import DataError

FORMATS = (".glb", ".gltf", ".obj", ".ply")
MAX_FACES = 2_000_000
"""Default face limit: texturing rasterizes every face in every step; 2M faces is ~1 GB of raster buffers."""


class MeshInputError(DataError):
    """The mesh file cannot be textured (not a mesh, a point cloud, no faces, NaN vertices, bad UVs, too big)."""


@dataclass
class InputMesh:
    """A triangle mesh as the file has it.

    Attributes:
        positions: ``[V, 3]`` float64 vertex positions in the file's frame and units (scene transforms applied).
        faces: ``[F, 3]`` int64 position indices, the file's order.
        uvs: ``[T, 2]`` float64 texture coordinates (OpenGL / OBJ convention: ``v = 1`` is the image's top row),
            or ``None`` when the file has none.
        face_uvs: ``[F, 3]`` int64 indices into ``uvs`` per face corner (``faces`` itself for glTF / PLY), or
            ``None``.
        normals: ``[V, 3]`` vertex normals to write, or ``None`` (area-weighted normals are computed from the
            faces; the file's own normals are not read).
        source: the file it came from; ``kind``: ``"obj"``, ``"glb"``, ``"gltf"`` or ``"ply"``.
    """

    positions: Float[np.ndarray, "V 3"]
    faces: Int[np.ndarray, "F 3"]
    uvs: Float[np.ndarray, "T 2"] | None
    face_uvs: Int[np.ndarray, "F 3"] | None
    normals: Float[np.ndarray, "V 3"] | None = None
    source: str = ""
    kind: str = ""

    @property
    def has_uvs(self) -> bool:
        return self.uvs is not None and self.face_uvs is not None

    def describe(self) -> dict:
        lo, hi = self.positions.min(axis=0), self.positions.max(axis=0)
        return {
            "source": self.source,
            "format": self.kind,
            "vertices": int(self.positions.shape[0]),
            "faces": int(self.faces.shape[0]),
            "uvs": self.has_uvs,
            "bounds": [lo.tolist(), hi.tolist()],
        }


# --------------------------------------------------------------------------------------------------- reading
def read_mesh(path: str | Path, max_faces: int = MAX_FACES) -> InputMesh:
    """Read and check a mesh file (see the module docstring).

    Raises:
        MeshInputError: missing or unsupported file, not a mesh, a point cloud, no faces, non-finite vertices,
            faces pointing past the vertex list, more than ``max_faces`` faces (named), or UVs that leave [0, 1]
            and overlap.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshInputError(f"{path}: no such file; give a mesh file ({', '.join(FORMATS)})")
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise MeshInputError(
            f"{path}: {ext or 'no extension'} is not a mesh format text3d reads ({', '.join(FORMATS)})"
        )
    declared = _declared_faces(path, ext)
    if declared is not None and declared > max_faces:
        raise MeshInputError(
            f"{path}: {declared:,} faces is over the limit of {max_faces:,} faces; decimate the mesh first "
            "(or raise the limit with --max-faces)"
        )
    mesh = _read_obj(path) if ext == ".obj" else _read_trimesh(path, ext)
    check_mesh(mesh, max_faces)
    return mesh


def _declared_faces(path: Path, ext: str) -> int | None:
    """The face count a file declares, read cheaply before loading it (so a huge file is refused at once)."""
    try:
        if ext == ".ply":
            with open(path, "rb") as fh:
                head = fh.read(4096)
            for line in head.split(b"\n"):
                parts = line.split()
                if len(parts) == 3 and parts[0] == b"element" and parts[1] == b"face":
                    return int(parts[2])
                if line.strip() == b"end_header":
                    break
        elif ext == ".glb":
            with open(path, "rb") as fh:
                header = fh.read(20)
                if len(header) < 20 or header[:4] != b"glTF":
                    return None
                length, _ = struct.unpack("<II", header[12:20])
                doc = json.loads(fh.read(length))
            return _gltf_faces(doc)
        elif ext == ".gltf":
            return _gltf_faces(json.loads(path.read_text(encoding="utf-8")))
        elif ext == ".obj":
            n = 0
            with open(path, "rb") as fh:
                for line in fh:
                    if line.startswith(b"f "):
                        n += 1
            return n
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # the loader below says what is wrong
    return None


def _gltf_faces(doc: dict) -> int:
    acc = doc.get("accessors", [])
    total = 0
    for mesh in doc.get("meshes", []):
        for prim in mesh.get("primitives", []):
            idx = prim.get("indices")
            if idx is not None and idx < len(acc):
                total += int(acc[idx].get("count", 0)) // 3
    return total


def _read_obj(path: Path) -> InputMesh:
    positions: list[list[float]] = []
    uvs: list[list[float]] = []
    faces: list[list[int]] = []
    face_uvs: list[list[int]] = []
    all_have_uv = True
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MeshInputError(f"{path}: not a mesh (not a text OBJ file)") from None
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            if parts[0] == "v":
                positions.append([float(x) for x in parts[1:4]])
            elif parts[0] == "vt":
                uvs.append([float(x) for x in parts[1:3]])
            elif parts[0] == "f":
                corners = [c.split("/") for c in parts[1:]]
                vi = [_obj_index(c[0], len(positions)) for c in corners]
                ti = [_obj_index(c[1], len(uvs)) if len(c) > 1 and c[1] else -1 for c in corners]
                all_have_uv &= min(ti) >= 0
                for k in range(1, len(vi) - 1):  # fan: a triangle stays as it is
                    faces.append([vi[0], vi[k], vi[k + 1]])
                    face_uvs.append([ti[0], ti[k], ti[k + 1]])
        except (ValueError, IndexError):
            raise MeshInputError(f"{path}:{number}: not a valid OBJ line: {line.strip()[:60]!r}") from None
    if not positions:
        raise MeshInputError(f"{path}: not a mesh (no vertices)")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape[1] != 3:
        raise MeshInputError(f"{path}: vertices need three coordinates")
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    has_uv = bool(uvs) and all_have_uv and len(faces) > 0
    return InputMesh(
        positions=pos,
        faces=f,
        uvs=np.asarray(uvs, dtype=np.float64).reshape(-1, 2) if has_uv else None,
        face_uvs=np.asarray(face_uvs, dtype=np.int64).reshape(-1, 3) if has_uv else None,
        source=str(path),
        kind="obj",
    )


def _obj_index(token: str, count: int) -> int:
    i = int(token)
    return i - 1 if i > 0 else count + i  # OBJ: 1-based, negative counts back from the last one read


def _read_trimesh(path: Path, ext: str) -> InputMesh:
    import trimesh

    try:
        scene = trimesh.load(str(path), force="scene", process=False)
    except Exception as err:  # trimesh raises many kinds for a broken file
        raise MeshInputError(
            f"{path}: not a mesh trimesh can read ({type(err).__name__}: {err})"[:300]
        ) from None
    parts = []
    clouds = 0
    # The file's mesh order (trimesh keeps scene.geometry in it), then the node name for instances: the graph's
    # own node list comes in no fixed order.
    mesh_order = {name: k for k, name in enumerate(scene.geometry)}
    nodes = sorted(scene.graph.nodes_geometry, key=lambda n: (mesh_order[scene.graph[n][1]], str(n)))
    for node in nodes:
        transform, name = scene.graph[node]
        geom = scene.geometry[name]
        if isinstance(geom, trimesh.PointCloud):
            clouds += 1
            continue
        if not isinstance(geom, trimesh.Trimesh):
            continue
        parts.append((np.asarray(transform, dtype=np.float64), geom))
    if not parts:
        if clouds:
            raise MeshInputError(
                f"{path}: a point cloud (vertices without faces); texturing needs a triangle mesh"
            )
        raise MeshInputError(f"{path}: not a mesh (no triangle geometry in the file)")
    positions, faces, uvs = [], [], []
    base = 0
    any_uv = all(_uv_of(g) is not None for _, g in parts)
    for transform, geom in parts:
        v = np.asarray(geom.vertices, dtype=np.float64)
        v = v @ transform[:3, :3].T + transform[:3, 3]
        positions.append(v)
        faces.append(np.asarray(geom.faces, dtype=np.int64).reshape(-1, 3) + base)
        if any_uv:
            uvs.append(np.asarray(_uv_of(geom), dtype=np.float64))
        base += v.shape[0]
    pos = np.concatenate(positions)
    f = np.concatenate(faces)
    return InputMesh(
        positions=pos,
        faces=f,
        uvs=np.concatenate(uvs) if any_uv else None,
        face_uvs=f.copy() if any_uv else None,
        source=str(path),
        kind=ext.lstrip("."),
    )


def _uv_of(geom) -> np.ndarray | None:
    uv = getattr(geom.visual, "uv", None)
    if uv is None or len(uv) != len(geom.vertices):
        return None
    return np.asarray(uv)


# -------------------------------------------------------------------------------------------------- checking
def check_mesh(mesh: InputMesh, max_faces: int = MAX_FACES) -> None:
    """The checks of :func:`read_mesh` on an already-built mesh (also used for meshes built in code).

    Raises:
        MeshInputError: see :func:`read_mesh`.
    """
    where = mesh.source or "the mesh"
    n_faces = int(mesh.faces.shape[0])
    if n_faces == 0:
        if mesh.positions.shape[0]:
            raise MeshInputError(
                f"{where}: {mesh.positions.shape[0]} vertices but no faces (a point cloud); texturing needs a "
                "triangle mesh"
            )
        raise MeshInputError(f"{where}: the mesh is empty (no vertices, no faces)")
    if n_faces > max_faces:
        raise MeshInputError(
            f"{where}: {n_faces:,} faces is over the limit of {max_faces:,} faces; decimate the mesh first "
            "(or raise the limit with --max-faces)"
        )
    if not np.isfinite(mesh.positions).all():
        bad = int((~np.isfinite(mesh.positions)).any(axis=1).sum())
        raise MeshInputError(f"{where}: {bad} vertices have NaN or infinite coordinates; fix the mesh first")
    if mesh.faces.min() < 0 or mesh.faces.max() >= mesh.positions.shape[0]:
        raise MeshInputError(f"{where}: faces refer to vertices that do not exist")
    if mesh.has_uvs:
        uv = mesh.uvs
        if not np.isfinite(uv).all():
            raise MeshInputError(f"{where}: UVs have NaN or infinite values; pass --unwrap for new UVs")
        if mesh.face_uvs.min() < 0 or mesh.face_uvs.max() >= uv.shape[0]:
            raise MeshInputError(f"{where}: faces refer to UVs that do not exist")
        if (uv < -1e-6).any() or (uv > 1 + 1e-6).any():
            overlap = uv_overlap(uv[mesh.face_uvs])
            if overlap > 0.01:
                raise MeshInputError(
                    f"{where}: UVs leave [0, 1] and overlap ({overlap:.0%} of the UV area is shared), so one "
                    "texture cannot hold their colours; pass --unwrap for new UVs"
                )
            raise MeshInputError(
                f"{where}: UVs leave [0, 1] (a tiled texture); one baked texture needs UVs in [0, 1]; pass "
                "--unwrap for new UVs"
            )


def uv_overlap(corners: Float[np.ndarray, "F 3 2"], size: int = 256) -> float:
    """Share of the UV area (wrapped into [0, 1]) that more than one triangle covers, on a ``size`` grid."""
    wrapped = np.mod(corners, 1.0)
    count = np.zeros((size, size), dtype=np.int32)
    pts = (np.arange(size) + 0.5) / size
    for tri in wrapped[:200_000]:
        lo = np.floor(tri.min(axis=0) * size).astype(int)
        hi = np.ceil(tri.max(axis=0) * size).astype(int)
        if (hi - lo).prod() == 0:
            continue
        xs, ys = np.meshgrid(pts[lo[0] : hi[0]], pts[lo[1] : hi[1]], indexing="xy")
        a, b, c = tri
        d = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        if abs(d) < 1e-18:
            continue
        w0 = ((b[1] - c[1]) * (xs - c[0]) + (c[0] - b[0]) * (ys - c[1])) / d
        w1 = ((c[1] - a[1]) * (xs - c[0]) + (a[0] - c[0]) * (ys - c[1])) / d
        inside = (w0 >= 0) & (w1 >= 0) & (w0 + w1 <= 1)
        count[lo[1] : hi[1], lo[0] : hi[0]] += inside
    covered = (count > 0).sum()
    return float((count > 1).sum() / covered) if covered else 0.0
