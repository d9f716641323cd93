"""What a dataset is made of: meshes with per-vertex colours and a class name, read from GLB / OBJ files, text3d
run folders, or batch output folders (every completed run in it).

A text3d asset is a textured mesh; colours are sampled to the vertices (``trimesh``'s ``to_color``), which is
what the detector sees at 640 pixels for meshes of thousands of triangles. Face-coloured meshes are unmerged so
each face keeps its colour. Every mesh is centred on its bounding box and scaled so its largest side is 1: scene
ranges (object sizes) then mean the same for every asset, and :attr:`MeshAsset.normalize` (a 4x4 matrix) is kept
so the per-image metadata can map the *file's* coordinates to the world, for anyone re-rendering a scene
independently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from jaxtyping import Float, Int

from text3d.errors import ConfigError

MESH_SUFFIXES = (".glb", ".gltf", ".obj")


@dataclass(frozen=True)
class MeshAsset:
    """One labelled (or distractor) mesh, normalised.

    Attributes:
        name: where it came from (file path, or ``primitive:<kind>`` for distractors).
        class_name: the label, or ``""`` for a distractor.
        verts: ``[V, 3]`` float32, centred, largest side 1.
        faces: ``[F, 3]`` int64.
        colors: ``[V, 3]`` float32 base colour in [0, 1] (sRGB).
        normalize: ``[4, 4]`` matrix taking the source file's coordinates to ``verts``.
        source: the mesh file, or ``None`` for a primitive.
    """

    name: str
    class_name: str
    verts: Float[np.ndarray, "V 3"]
    faces: Int[np.ndarray, "F 3"]
    colors: Float[np.ndarray, "V 3"]
    normalize: Float[np.ndarray, "4 4"]
    source: Path | None = None


def _from_trimesh(mesh, name: str, class_name: str, source: Path | None) -> MeshAsset:
    """Normalise a ``trimesh.Trimesh`` into a :class:`MeshAsset` (colours per vertex, face colours unmerged)."""
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if faces.shape[0] == 0 or verts.shape[0] == 0:
        raise ConfigError(f"asset {name} has no faces; give a mesh with triangles")
    kind = getattr(mesh.visual, "kind", None)
    if kind == "face":
        fc = np.asarray(mesh.visual.face_colors, dtype=np.float32)[:, :3] / 255.0
        verts = verts[faces].reshape(-1, 3)
        colors = np.repeat(fc, 3, axis=0)
        faces = np.arange(verts.shape[0], dtype=np.int64).reshape(-1, 3)
    elif kind == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    elif kind == "texture":
        colors = np.asarray(mesh.visual.to_color().vertex_colors, dtype=np.float32)[:, :3] / 255.0
    else:  # no colour at all: a neutral grey, so shading still shows the shape
        colors = np.full((verts.shape[0], 3), 0.7, dtype=np.float32)
    lo, hi = verts.min(0), verts.max(0)
    side = float((hi - lo).max())
    if not np.isfinite(side) or side <= 0:
        raise ConfigError(f"asset {name} is degenerate (all vertices at one point)")
    centre = (lo + hi) / 2
    normalize = np.eye(4)
    normalize[:3, :3] /= side
    normalize[:3, 3] = -centre / side
    return MeshAsset(
        name=name,
        class_name=class_name,
        verts=((verts - centre) / side).astype(np.float32),
        faces=faces,
        colors=np.ascontiguousarray(colors, dtype=np.float32),
        normalize=normalize,
        source=source,
    )


def read_mesh(path: Path, class_name: str) -> MeshAsset:
    """A GLB / glTF / OBJ file as one mesh (a scene's meshes are merged in their scene placement)."""
    import trimesh

    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ConfigError(
            f"asset {path} has an unknown format; give .glb, .gltf or .obj files, run or batch folders"
        )
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # trimesh raises many kinds for a broken file
        raise ConfigError(
            f"asset {path} could not be read as a mesh: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if not hasattr(mesh, "faces"):
        raise ConfigError(f"asset {path} has no faces; give a mesh with triangles")
    return _from_trimesh(mesh, str(path), class_name, path)


def _run_mesh(run_dir: Path) -> Path | None:
    """The mesh a completed run folder exported (GLB preferred), or ``None``."""
    meshes = sorted((run_dir / "mesh").glob("*.glb")) + sorted((run_dir / "mesh").glob("*.obj"))
    return meshes[0] if meshes else None


def _run_info(run_dir: Path) -> dict | None:
    try:
        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class AssetSource:
    """One mesh file to use, with the class name it gets unless a ``--classes`` file says otherwise."""

    path: Path
    default_class: str
    key: str
    """What the ``--classes`` file is matched on: the argument as given, the file name, or the run folder."""


def resolve_sources(items: list[str | Path]) -> list[AssetSource]:
    """Expand the command line's assets into mesh files: files as they are, a run folder to its exported mesh
    (class: its prompt), a batch folder to every completed run in it.

    Raises:
        ConfigError: no assets, a missing path, an unknown format, or a folder with no usable mesh.
    """
    if not items:
        raise ConfigError(
            "no assets given: text3d dataset ASSET... (GLB / OBJ files, run folders or batch folders)"
        )
    out: list[AssetSource] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            if path.suffix.lower() not in MESH_SUFFIXES:
                raise ConfigError(
                    f"asset {path} has an unknown format {path.suffix or '(no suffix)'}; "
                    "give .glb, .gltf or .obj files, run or batch folders"
                )
            out.append(AssetSource(path, path.stem, str(item)))
        elif path.is_dir() and (path / "run.json").is_file():
            info = _run_info(path) or {}
            mesh = _run_mesh(path)
            if mesh is None:
                raise ConfigError(f"run folder {path} has no exported mesh; run text3d export {path} first")
            out.append(AssetSource(mesh, str(info.get("prompt") or path.name), str(item)))
        elif path.is_dir():
            runs = sorted(p for p in path.iterdir() if (p / "run.json").is_file())
            done = [p for p in runs if (_run_info(p) or {}).get("status") == "completed" and _run_mesh(p)]
            if not done:
                raise ConfigError(
                    f"folder {path} holds no completed text3d run with a mesh (and is no run folder)"
                )
            for run in done:
                prompt = str((_run_info(run) or {}).get("prompt") or run.name)
                out.append(AssetSource(_run_mesh(run), prompt, run.name))
        else:
            raise ConfigError(f"asset {path} does not exist")
    return out


def read_class_map(path: Path) -> dict[str, str]:
    """A ``--classes`` file: a YAML / JSON mapping ``asset: class name`` (asset as given, file name, file stem or
    run folder name)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"classes file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"classes file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"classes file {path} must hold a mapping 'asset: class name'")
    return {str(k): str(v) for k, v in data.items()}


def class_for(source: AssetSource, mapping: dict[str, str] | None, mapping_path: Path | None = None) -> str:
    """The class of ``source``: the mapping's entry for it (by any of its names), else its default."""
    if mapping is None:
        return source.default_class
    for key in (
        source.key,
        str(source.path),
        source.path.name,
        source.path.stem,
        source.path.parent.parent.name,
    ):
        if key in mapping:
            return mapping[key]
    raise ConfigError(f"classes file {mapping_path} has no entry for asset {source.key}")


def load_assets(
    items: list[str | Path], classes_file: Path | None = None
) -> tuple[list[MeshAsset], tuple[str, ...]]:
    """Read every asset and name its class.

    Returns:
        The meshes, and the class names in order of first appearance (class id = index); several assets may share
        a class.
    """
    sources = resolve_sources(items)
    mapping = read_class_map(classes_file) if classes_file is not None else None
    meshes, names = [], []
    for src in sources:
        cls = class_for(src, mapping, classes_file).strip()
        if not cls:
            raise ConfigError(f"asset {src.key} has an empty class name")
        meshes.append(read_mesh(src.path, cls))
        if cls not in names:
            names.append(cls)
    return meshes, tuple(names)


DISTRACTOR_KINDS = ("box", "icosphere", "cylinder", "torus")
"""Shapes of the unlabelled distractors and occluders (``trimesh.creation`` primitives of size 1)."""


def primitive(kind: str, color: tuple[float, float, float]) -> MeshAsset:
    """A unit-size distractor mesh of one colour (see :data:`DISTRACTOR_KINDS`)."""
    import trimesh

    makers = {
        "box": lambda: trimesh.creation.box(extents=(1.0, 1.0, 1.0)),
        "icosphere": lambda: trimesh.creation.icosphere(subdivisions=2, radius=0.5),
        "cylinder": lambda: trimesh.creation.cylinder(radius=0.5, height=1.0, sections=24),
        "torus": lambda: trimesh.creation.torus(
            major_radius=0.35, minor_radius=0.15, major_sections=24, minor_sections=12
        ),
    }
    mesh = makers[kind]()
    mesh.visual.face_colors = np.append(np.round(np.asarray(color) * 255), 255).astype(np.uint8)
    return _from_trimesh(mesh, f"primitive:{kind}", "", None)  # face colours: unmerged, flat-shaded
