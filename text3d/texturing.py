"""The library call behind ``text3d texture``: a mesh file in, the same mesh with a new base-colour texture out.

A texture run folder is laid out like a generate one (``config.yaml`` with the resolved :class:`TextureConfig`,
``run.json``, ``metrics.jsonl``, ``checkpoints/texture.safetensors``, ``previews/``, ``video/``, ``mesh/``) plus
``input_mesh.npz``: the mesh as read, with the UVs the run uses (the file's, or xatlas' when it had none or
``unwrap`` was asked for), so a resumed run trains exactly the same texture layout. With photos it also has
``metrics.json`` and ``eval/`` (held-out views, as ``text3d fit``); with a concept image, ``concept.json`` (PSNR of
the concept view inside the mesh's silhouette).

``mesh/`` holds ``<run>.glb`` and ``<run>.obj`` + ``.mtl`` + ``_albedo.png``: the input's vertices, faces and face
order, in its frame and units (:mod:`text3d.export.kept_mesh`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from text3d.config import save_config
from text3d.data.load import load_photo_set
from text3d.data.meshfile import InputMesh, MeshInputError, read_mesh
from text3d.errors import Cancelled, ConfigError
from text3d.export.kept_mesh import KeptMesh, fill_outside_charts, split_seams, uv_coverage, write_kept_mesh
from text3d.export.texture import bake_texture, encode_png, to_uint8, unwrap
from text3d.fitting import evaluate
from text3d.io import atomic_path, remove_stale_temporaries, write_json
from text3d.metrics import psnr
from text3d.pipeline import (
    MESH_DIR,
    RunRecord,
    RunResult,
    check_out_dir,
    deterministic_algorithms,
    load_guidance,
    new_run_dir,
    resolve_device,
    train_stages,
)
from text3d.recipes import texture as recipe
from text3d.recipes.texture import TextureConfig
from text3d.training.stage import Stage
from text3d.training.trainer import Callback

INPUT_MESH = "input_mesh.npz"


def texture(
    cfg: TextureConfig,
    guidance=None,
    callback: Callback | None = None,
    run_dir: str | Path | None = None,
) -> RunResult:
    """Texture ``cfg.mesh`` from a prompt, posed photos or a concept image (see :mod:`text3d.recipes.texture`).

    Args:
        guidance: a loaded diffusion model to reuse; loaded from ``cfg.model`` when needed and ``None``.
        run_dir: an existing run folder to continue (resume after a kill).

    Raises:
        MeshInputError, DataError, ConfigError: one-line user errors, before any run folder is made.
        Cancelled: the callback cancelled; the run folder is consistent and resumable.
    """
    mode = recipe.check_texture_config(cfg)
    if run_dir is None:
        check_out_dir(cfg.out_dir)
    device = resolve_device(cfg.device)
    saved = Path(run_dir) / INPUT_MESH if run_dir is not None else None
    if saved is not None and saved.is_file():
        kept = load_kept(saved)
    else:
        kept = prepare_mesh(read_mesh(cfg.mesh, cfg.max_faces), cfg)
    photos = concept = None
    if mode == "photos":
        photos = load_photo_set(cfg.images, bound=cfg.bound, margin=cfg.margin, holdout=cfg.holdout)
        frame = recipe.photo_frame(photos)
    else:
        frame = recipe.orbit_frame(kept.positions, cfg.frame_radius)
    if mode == "concept":
        concept = read_concept_image(cfg.image, cfg.resolution, cfg.colour.background)
    text = None
    if mode != "photos":
        if guidance is None:
            guidance = load_guidance(cfg, device)
        text = guidance.prepare_text(cfg.prompt, cfg.negative_prompt)
    name = Path(cfg.mesh).stem or "mesh"
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg.out_dir, f"texture {name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    save_config(cfg, run_dir / "config.yaml")
    if not (run_dir / INPUT_MESH).is_file():
        save_kept(run_dir / INPUT_MESH, kept)
    record = RunRecord(
        run_dir,
        {
            "kind": "texture",
            "mode": mode,
            "prompt": cfg.prompt or f"photos: {cfg.images}",
            "mesh": cfg.mesh,
            "seed": cfg.seed,
            "model": cfg.model.model_id if mode != "photos" else None,
        },
        device,
    )
    record.update(status="running")
    result = RunResult(run_dir=run_dir, status="running")
    positions = torch.as_tensor(recipe.apply_frame(frame, kept.positions), dtype=torch.float32)
    with deterministic_algorithms(device.type == "cpu" or cfg.deterministic):
        try:
            torch.manual_seed(cfg.seed)
            stages = recipe.build_stages(
                cfg,
                positions,
                torch.as_tensor(kept.faces),
                torch.as_tensor(kept.corner_uvs(), dtype=torch.float32),
                photos=photos,
                concept_image=concept,
                guidance=guidance,
                text=text,
            )
            last, finishing = train_stages(
                stages, recipe.start_from, cfg.seed, cfg.trainer, device, run_dir, record, result, callback
            )
            if mode == "photos":
                finishing("evaluating the held-out views")
                bg = torch.tensor(cfg.views.background, dtype=photos.images.dtype)
                metrics = evaluate(last, photos, bg, run_dir, 4)
                record.update(metrics={k: metrics[k] for k in ("views", "psnr", "ssim")})
            if mode == "concept":
                record.update(concept=concept_match(last, run_dir))
            if cfg.export.enabled:
                finishing("exporting the mesh: texture")
                files = export_textured(last, kept, cfg, run_dir / MESH_DIR, run_dir.name, device, record)
                result.meshes = [p for p in files if p.suffix in (".glb", ".obj")]
                record.data["outputs"]["meshes"] = [str(p.relative_to(run_dir)) for p in result.meshes]
                record.update()
        except Cancelled:
            record.update(status="cancelled")
            raise
        except BaseException as err:
            record.update(status="failed", error=f"{type(err).__name__}: {err}")
            raise
    result.status = "completed"
    record.update(status="completed")
    return result


# ---------------------------------------------------------------------------------------------------- the mesh
def prepare_mesh(mesh: InputMesh, cfg: TextureConfig) -> KeptMesh:
    """The mesh with the UVs the run will use: its own, or new ones from xatlas (none, or ``cfg.unwrap``)."""
    if mesh.has_uvs and not cfg.unwrap:
        return KeptMesh(mesh.positions, mesh.faces, mesh.uvs, mesh.face_uvs, mesh.normals)
    uvs, face_uvs = new_uvs(mesh.positions, mesh.faces, cfg.colour.texture_size)
    return KeptMesh(mesh.positions, mesh.faces, uvs, face_uvs, mesh.normals)


def new_uvs(positions: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """xatlas UVs for the mesh *as it is*: ``(uvs [T, 2], face_uvs [F, 3])`` with face ``i``'s corners in face
    ``i``'s own vertex order (xatlas works on pieces and may reorder faces; each of its faces is matched back to
    the input face with the same vertices). Faces xatlas drops (degenerate) get UV (0, 0)."""
    uvm = unwrap(positions.astype(np.float32), faces, size)
    out = uvm.vmap[uvm.faces]  # [F', 3] input vertex indices of each xatlas face

    def canonical(tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shift = tri.argmin(axis=1)  # rotate so the smallest index comes first (keeps the winding)
        order = (shift[:, None] + np.arange(3)) % 3
        return np.take_along_axis(tri, order, axis=1), shift

    key_in, shift_in = canonical(faces.astype(np.int64))
    key_out, shift_out = canonical(out)
    n = int(max(faces.max(), out.max())) + 1
    scalar = lambda k: (k[:, 0] * n + k[:, 1]) * n + k[:, 2]  # noqa: E731
    s_in, s_out = scalar(key_in), scalar(key_out)
    order_out = np.argsort(s_out, kind="stable")
    pos = np.searchsorted(s_out[order_out], s_in)
    pos = np.clip(pos, 0, len(order_out) - 1)
    match = order_out[pos]
    found = s_out[match] == s_in
    uvs = np.concatenate([uvm.uvs.astype(np.float64), np.zeros((1, 2))])
    face_uvs = np.full(faces.shape, uvs.shape[0] - 1, dtype=np.int64)
    # corner k of an input face is its canonical corner (k - shift_in) % 3, which is xatlas' corner
    # (that + shift_out) % 3
    k = np.arange(3)
    corner = (k[None, :] - shift_in[:, None] + shift_out[match][:, None]) % 3
    picked = np.take_along_axis(uvm.faces[match], corner, axis=1)
    face_uvs[found] = picked[found]
    return uvs, face_uvs


def save_kept(path: Path, mesh: KeptMesh) -> None:
    arrays = {"positions": mesh.positions, "faces": mesh.faces, "uvs": mesh.uvs, "face_uvs": mesh.face_uvs}
    if mesh.normals is not None:
        arrays["normals"] = mesh.normals
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_kept(path: Path) -> KeptMesh:
    with np.load(path) as z:
        return KeptMesh(
            z["positions"], z["faces"], z["uvs"], z["face_uvs"], z["normals"] if "normals" in z else None
        )


def read_concept_image(path: str, resolution: int, background: tuple[float, float, float]) -> torch.Tensor:
    """``[R, R, 3]`` in [0, 1]: the image (alpha composited over ``background``) resized to the render size.

    Raises:
        MeshInputError: the file is missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA").resize((resolution, resolution), Image.LANCZOS), np.float32)
    except (OSError, UnidentifiedImageError):
        raise MeshInputError(f"{path}: not an image text3d can read (PNG, JPEG, ...)") from None
    rgba /= 255.0
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return torch.from_numpy(rgb * alpha + np.asarray(background, np.float32) * (1.0 - alpha))


# -------------------------------------------------------------------------------------------------- results
@torch.no_grad()
def concept_match(stage: Stage, run_dir: Path) -> dict:
    """PSNR of the concept view's render against the concept image inside the mesh's silhouette (pixels fully
    covered: opacity 1 after antialiasing), written to ``concept.json``."""
    device = next(iter(stage.buffers())).device
    cams, image = stage.views.concept(device)
    r = stage.views.resolution
    out = stage.representation.render(cams, r, r, stage.shader, stage.shader.preview())
    inside = out.opacity[0, ..., 0] >= 0.999
    pred = out.rgb[0][inside].float().clamp(0, 1).cpu()
    gt = image[0][inside].float().cpu()
    value = {"psnr_in_silhouette": round(psnr(pred, gt), 3), "pixels": int(inside.sum())}
    write_json(run_dir / "concept.json", value)
    return value


def texture_image(stage: Stage, kept: KeptMesh, size: int, device: torch.device) -> np.ndarray:
    """``[S, S, 3]`` the base-colour texture on ``kept``'s UVs (row 0 = ``v = 1``), seams filled: the trained
    texture itself, or the colour field baked through the UVs."""
    rep = stage.representation
    image = rep.texture_image()
    if image is not None:
        return fill_outside_charts(image, uv_coverage(kept.corner_uvs(), image.shape[0], device))
    split = split_seams(kept)
    working = rep.verts.detach().cpu().numpy()[split.vmap]
    split.positions = working.astype(np.float32)
    return bake_texture(split, rep.asset().albedo, size, device).image


def export_textured(
    stage: Stage, kept: KeptMesh, cfg: TextureConfig, out_dir: Path, name: str, device, record: RunRecord
) -> list[Path]:
    t0 = time.perf_counter()
    image = texture_image(stage, kept, cfg.export.texture_size, device)
    png = encode_png(to_uint8(image))
    formats = tuple(f for f in cfg.export.formats if f in ("glb", "obj"))
    if not formats:
        raise ConfigError("text3d texture writes glb and / or obj; set export.formats to one of them")
    extras = {"source": "text3d texture", "mesh": cfg.mesh, "prompt": cfg.prompt, "seed": cfg.seed}
    files = write_kept_mesh(out_dir, name, kept, png, formats, extras)
    record.update(
        export={
            "error": None,
            "vertices": int(kept.positions.shape[0]),
            "faces": int(kept.faces.shape[0]),
            "texture_size": int(image.shape[0]),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return files


def load_texture_config(run_dir: str | Path) -> TextureConfig:
    """The config a texture run folder was made with (for ``--resume``)."""
    from text3d.config import load_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a text3d texture run folder (no config.yaml)")
    try:
        kind = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError):
        kind = None
    if kind not in (None, "texture"):
        raise ConfigError(f"{run_dir} is a {kind} run, not a texture run")
    return load_config(path, TextureConfig)
