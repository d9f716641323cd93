"""Export a trained asset as textured meshes: GLB, OBJ + MTL + PNG, and optionally a vertex-coloured PLY.

The steps (each in its own module):

1. **Mesh** (:mod:`text3d.export.mesh`): the refine stage's DMTet surface as it is, or, for a coarse-only run, an
   isosurface of the NeRF density by marching tets at a level chosen so the surface matches the rendered opacity
   (:func:`text3d.export.mesh.auto_threshold`; ``threshold`` overrides it). Then small floating pieces are
   dropped and the mesh is decimated to ``target_faces``.
2. **Texture** (:mod:`text3d.export.texture`): xatlas unwrap, bake of the albedo field in UV space with the shared
   rasterizer, seam dilation, 8-bit sRGB PNG.
3. **Files** (:mod:`text3d.export.writers`): all written to temporary names and renamed together, so a failure
   leaves nothing behind.

**Conventions of the exported files**: glTF's axes (right-handed, **+Y up**), the side the asset showed at
azimuth 0 during training faces **+Z** (text3d's world frame is glTF's, so no rotation is ever applied), units are
**metres**, the asset is **centred** on its bounding box (``center="ground"`` puts it on the Y = 0 floor instead)
and **scaled** so its largest side is ``size`` metres (default 1 m). Triangles are counter-clockwise seen from
outside; the material is glTF metallic-roughness with metallic 0, roughness 1 and the albedo as
``baseColorTexture``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from text3d.cameras import Cameras, CameraSamplerConfig, threshold_cameras
from text3d.errors import ExportError
from text3d.export.mesh import Placement, clean_mesh, decimate, orient_outward, placement, vertex_normals
from text3d.export.texture import AlbedoFn, bake_texture, encode_png, to_uint8, unwrap, vertex_colors
from text3d.export.writers import (
    TexturedMesh,
    staged_files,
    write_environment_file,
    write_glb,
    write_obj,
    write_ply,
)
from text3d.geometry.asset import Asset, DensityFn
from text3d.geometry.isosurface import auto_threshold, extract_isosurface

log = logging.getLogger(__name__)

FORMATS = ("glb", "obj", "ply")

PhaseHook = Callable[[str], None]
"""Called with an export phase's name before the phase starts; raising from it stops the export."""


def _no_hook(phase: str) -> None:
    pass


@dataclass(frozen=True)
class ExportConfig:
    """How meshes are exported (``text3d export`` and the end of ``text3d generate``)."""

    enabled: bool = True
    """Export automatically at the end of ``generate``."""
    formats: tuple[str, ...] = ("glb", "obj")
    """Any of ``glb`` (one file, embedded texture), ``obj`` (+ ``.mtl`` + ``_albedo.png``), ``ply`` (vertex
    colours)."""
    texture_size: int = 1024
    """Side of the square base-colour texture, in pixels."""
    target_faces: int = 100_000
    """Decimate to about this many triangles when the mesh has more; 0 keeps every face."""
    threshold: float | str = "auto"
    """Coarse-only runs: density level of the isosurface, or ``auto`` (the level whose silhouettes match the
    rendered opacity)."""
    opacity_level: float = 0.5
    """``auto`` threshold: rendered opacity above which a pixel counts as covered."""
    threshold_views: int = 8
    """``auto`` threshold: views rendered to compare silhouettes."""
    threshold_resolution: int = 64
    """``auto`` threshold: pixels per side of those views."""
    grid_resolution: int = 256
    """Coarse-only runs: marching-tets grid, in DMTet's naming (``grid_resolution / 2`` cells per axis)."""
    size: float = 1.0
    """Largest side of the exported bounding box, in metres; 0 keeps the field's units."""
    center: str = "center"
    """``center`` (bounding-box centre at the origin), ``ground`` (centred in X/Z, lowest point at Y = 0) or
    ``none``."""
    min_component_fraction: float = 0.05
    """Disconnected pieces with less than this fraction of the total surface area are dropped."""
    uv_padding: int = 4
    """Texels between UV charts."""


@dataclass
class ExportResult:
    """Attributes:
    files: every file written (GLB first, then OBJ, MTL, PNG, PLY, as asked for).
    n_vertices, n_faces: of the exported (UV-split) mesh.
    threshold: the isosurface level used (coarse-only exports), and ``threshold_iou`` its silhouette agreement.
    placement: the map from the field's frame to the exported one.
    seconds: wall time of each step.
    """

    files: list[Path]
    n_vertices: int
    n_faces: int
    placement: Placement
    threshold: float | None = None
    threshold_iou: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def parse_formats(formats: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"glb,obj"`` or ``("glb", "obj")`` to a validated tuple without duplicates."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for item in items:
        fmt = item.strip().lower().lstrip(".")
        if not fmt:
            continue
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise ExportError(f"no export format given; choose from {', '.join(FORMATS)}")
    return tuple(out)


def asset_name(name: str) -> str:
    """A file-name-safe asset name (letters, digits, ``-``, ``_``, ``.``)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return clean or "asset"


def validate_config(cfg: ExportConfig) -> None:
    """Raise :class:`ExportError` for a setting that cannot work, before any expensive step."""
    if cfg.texture_size < 16 or cfg.texture_size > 16384:
        raise ExportError(f"export.texture_size must be between 16 and 16384, got {cfg.texture_size}")
    if isinstance(cfg.threshold, str) and cfg.threshold != "auto":
        raise ExportError(f"export.threshold must be 'auto' or a density level, got {cfg.threshold!r}")
    parse_formats(cfg.formats)


# -------------------------------------------------------------------------------------------------- the core
def _as_rgb(fn: AlbedoFn) -> AlbedoFn:
    """``[N, 2]`` (roughness, metallic) -> glTF's ``[N, 3]`` (unused R = 1, G roughness, B metallic)."""
    return lambda x: torch.cat([torch.ones_like(x[:, :1]), fn(x)], dim=-1)


def _linear_png(image: np.ndarray) -> bytes:
    """PNG bytes with no colour-space tag: the values are data (roughness, metallic), not sRGB colours."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def export_mesh(
    verts: np.ndarray,
    faces: np.ndarray,
    albedo_fn: AlbedoFn,
    out_dir: str | Path,
    name: str,
    cfg: ExportConfig = ExportConfig(),
    device: torch.device | str = "cpu",
    extras: dict | None = None,
    on_phase: PhaseHook | None = None,
    place: Placement | None = None,
    roughness_metallic_fn: AlbedoFn | None = None,
    environment: np.ndarray | None = None,
) -> ExportResult:
    """Clean, decimate, unwrap, bake and write a mesh given in the field's frame.

    Args:
        verts: ``[V, 3]`` positions in the field's frame (where ``albedo_fn`` is defined).
        faces: ``[F, 3]`` vertex indices, counter-clockwise seen from outside (flipped if the mesh is inside out).
        albedo_fn: colour of the surface, ``[N, 3] -> [N, 3]`` in [0, 1], queried on ``device``.
        out_dir: folder for the files (created if needed, removed again if the export fails and it is empty).
        name: asset name; the files are ``<name>.glb``, ``<name>.obj``, ``<name>.mtl``, ``<name>_albedo.png``,
            ``<name>.ply``.
        extras: JSON-safe metadata for the GLB (``asset.extras``).
        on_phase: called with each phase's name (``clean``, ``unwrap``, ``bake``, ``write``) before it starts; it
            may raise to stop the export (the web app's cancel), which leaves no file behind.
        place: the map from the field's frame to the file's (a photo set's own frame); default: centred and scaled
            by ``cfg.size`` and ``cfg.center``.
        roughness_metallic_fn: PBR assets (``[N, 3] -> [N, 2]``): baked into the GLB's linear
            ``metallicRoughnessTexture`` (G roughness, B metallic, factors 1) and OBJ's ``map_Pr`` / ``map_Pm``.
        environment: PBR assets: the learned light (``[H, 2H, 3]``), written as ``<name>_environment.hdr``.

    Raises:
        ExportError: empty or degenerate geometry, a bad setting. No file is left behind.
    """
    validate_config(cfg)
    formats = parse_formats(cfg.formats)
    name = asset_name(name)
    phase = on_phase or _no_hook
    seconds: dict[str, float] = {}
    phase("clean")
    t0 = time.perf_counter()
    verts, faces = clean_mesh(np.asarray(verts), np.asarray(faces), cfg.min_component_fraction)
    verts, faces = decimate(verts, faces, cfg.target_faces)
    faces = orient_outward(verts, faces)
    normals = vertex_normals(verts, faces)
    seconds["clean"] = time.perf_counter() - t0

    phase("unwrap")
    t0 = time.perf_counter()
    uvmesh = unwrap(verts, faces, cfg.texture_size, cfg.uv_padding)
    seconds["unwrap"] = time.perf_counter() - t0
    phase("bake")
    t0 = time.perf_counter()
    baked = bake_texture(uvmesh, albedo_fn, cfg.texture_size, device)
    png = encode_png(to_uint8(baked.image))
    pbr_maps = {}
    if roughness_metallic_fn is not None:
        rm = to_uint8(bake_texture(uvmesh, _as_rgb(roughness_metallic_fn), cfg.texture_size, device).image)
        pbr_maps = {
            "metallic_roughness_png": _linear_png(rm),
            "roughness_png": _linear_png(rm[..., 1:2].repeat(3, -1)),
            "metallic_png": _linear_png(rm[..., 2:3].repeat(3, -1)),
        }
    if environment is not None:
        from text3d.hdr import check_environment, hdr_bytes

        pbr_maps["environment_hdr"] = hdr_bytes(check_environment(environment, "the learned environment"))
    seconds["bake"] = time.perf_counter() - t0

    place = place or placement(verts, cfg.size, cfg.center)
    textured = TexturedMesh(
        positions=place.apply(uvmesh.positions),
        normals=place.apply_normals(normals[uvmesh.vmap]),
        uvs=uvmesh.uvs,
        faces=uvmesh.faces,
        texture_png=png,
        name=name,
        extras={"units": "metres", "up": "+Y", "front": "+Z", **(extras or {})},
        **pbr_maps,
    )
    phase("write")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    files: list[Path] = []
    with staged_files() as st:
        if "glb" in formats:
            files.append(write_glb(st, out_dir / f"{name}.glb", textured))
        if "obj" in formats:
            files += write_obj(st, out_dir, textured)
        files += write_environment_file(st, out_dir, textured)
        if "ply" in formats:
            colors = vertex_colors(verts, albedo_fn, device)
            files.append(
                write_ply(
                    st,
                    out_dir / f"{name}.ply",
                    place.apply(verts),
                    faces,
                    colors,
                    place.apply_normals(normals),
                )
            )
        st.commit()
    seconds["write"] = time.perf_counter() - t0
    return ExportResult(
        files=files,
        n_vertices=int(textured.positions.shape[0]),
        n_faces=int(textured.faces.shape[0]),
        placement=place,
        seconds=seconds,
    )


def export_density(
    density_fn: DensityFn,
    albedo_fn: AlbedoFn,
    bound: float,
    out_dir: str | Path,
    name: str,
    cfg: ExportConfig = ExportConfig(),
    cameras: Cameras | None = None,
    n_samples: int = 64,
    device: torch.device | str = "cpu",
    extras: dict | None = None,
    on_phase: PhaseHook | None = None,
    place: Placement | None = None,
) -> ExportResult:
    """Export the isosurface of a density field (a coarse-only run).

    Args:
        bound: the field lives in ``[-bound, bound]^3``.
        cameras: views for the ``auto`` threshold (default: :func:`threshold_cameras` of the default sampler).
        n_samples: samples per ray of the volume renderer whose opacity the ``auto`` threshold reproduces.
        on_phase: as in :func:`export_mesh`, with the phases ``threshold`` and ``isosurface`` first.

    Raises:
        ExportError: the renders or the isosurface are empty (no files are written).
    """
    validate_config(cfg)
    phase = on_phase or _no_hook
    phase("threshold")
    t0 = time.perf_counter()
    iou = None
    if cfg.threshold == "auto":
        if cameras is None:
            cameras = threshold_cameras(CameraSamplerConfig(), cfg.threshold_views, device)
        est = auto_threshold(
            density_fn, bound, cameras, cfg.threshold_resolution, n_samples, cfg.opacity_level
        )
        level, iou = est.threshold, est.iou
        log.info("isosurface at density %.4g (silhouette IoU with the renders %.3f)", level, iou)
    else:
        level = float(cfg.threshold)
    t_thr = time.perf_counter() - t0
    phase("isosurface")
    t0 = time.perf_counter()
    verts, faces = extract_isosurface(density_fn, bound, cfg.grid_resolution, level, device)
    t_iso = time.perf_counter() - t0
    if faces.shape[0] == 0:
        raise ExportError(
            f"the isosurface at density {level:.4g} is empty (the field never crosses it on a "
            f"{cfg.grid_resolution} grid); train longer or set export.threshold lower"
        )
    result = export_mesh(
        verts,
        faces,
        albedo_fn,
        out_dir,
        name,
        cfg,
        device,
        {"density_threshold": level, **(extras or {})},
        on_phase,
        place,
    )
    result.threshold, result.threshold_iou = level, iou
    result.seconds = {"threshold": t_thr, "isosurface": t_iso, **result.seconds}
    return result


def export_asset(
    asset: Asset,
    out_dir: str | Path,
    name: str,
    cfg: ExportConfig = ExportConfig(),
    cameras: Cameras | None = None,
    device: torch.device | str = "cpu",
    extras: dict | None = None,
    on_phase: PhaseHook | None = None,
    place: Placement | None = None,
) -> ExportResult:
    """Export an asset: its mesh as it is, or the isosurface of its density (:func:`export_density`, with
    ``cameras`` as the views whose silhouettes the ``auto`` level reproduces). Colour comes from its albedo.
    ``on_phase`` is passed on (``surface`` first, for a mesh asset)."""
    if asset.mesh is not None:
        (on_phase or _no_hook)("surface")
        verts = asset.mesh.verts.detach().float().cpu().numpy()
        faces = asset.mesh.faces.detach().long().cpu().numpy()
        if faces.shape[0] == 0:
            raise ExportError(
                f"the {asset.source or 'asset'} surface is empty; nothing to export (its SDF has no zero "
                "crossing: train longer or check the stage it started from)"
            )
        return export_mesh(
            verts,
            faces,
            asset.albedo,
            out_dir,
            name,
            cfg,
            device,
            extras,
            on_phase,
            place,
            roughness_metallic_fn=asset.roughness_metallic,
            environment=asset.environment,
        )
    if cameras is None:
        cameras = threshold_cameras(CameraSamplerConfig(), cfg.threshold_views, device)
    return export_density(
        asset.density,
        asset.albedo,
        asset.bound,
        out_dir,
        name,
        cfg,
        cameras=cameras,
        n_samples=asset.n_samples,
        device=device,
        extras=extras,
        on_phase=on_phase,
        place=place,
    )
