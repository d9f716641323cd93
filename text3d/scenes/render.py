"""Render a :class:`SceneSpec` with Blender Cycles into the Blender/NeRF-synthetic layout, cached on disk.

Blender runs in a subprocess: ``python cycles_script.py job.json`` with a Python that has ``bpy`` (by default the
current interpreter; ``TEXT3D_BLENDER_PYTHON`` or ``python=`` points elsewhere), so Blender never loads into the
caller's process and can live in its own environment. The host resolves everything first: procedural textures and
skies are written as files, mesh files are copied, cameras are explicit matrices. The job therefore has no hidden
inputs, and its sha256 (with files hashed by content and the script's own hash) names the cache folder
``$TEXT3D_SCENE_CACHE`` or ``~/.cache/text3d/scenes/<hash>/``. A render goes to a temporary sibling folder that is
renamed into place only when complete, so a killed render leaves nothing that looks finished and a second call
returns at once.

Output folder: ``transforms_{train,val,test}.json``, ``{split}/r_{i}.png`` (RGBA, sRGB), ``mesh.obj`` (the true
mesh, Blender's Z-up world, same frame as the cameras), ``scene.json`` (the description), ``texture.png`` and
``world.hdr`` when used, ``blender.json`` (version, seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from text3d.errors import Text3DError
from text3d.hdr import write_hdr
from text3d.io import write_json
from text3d.scenes.spec import (
    MATERIAL_EXTRAS_DEFAULTS,
    PRIMITIVES,
    CameraRigSpec,
    MaterialSpec,
    MeshSpec,
    RenderSpec,
    SceneSpec,
    TextureSpec,
    WorldSpec,
    checker_texture,
    gradient_texture,
    noise_texture,
    rig_cameras,
    sky_hdr,
)

SCRIPT = Path(__file__).with_name("cycles_script.py")
PBR_SCRIPT = Path(__file__).with_name("cycles_pbr.py")
"""The same script with spatially varying Principled materials (runs ``cycles_script.py`` inside it)."""
CACHE_ENV = "TEXT3D_SCENE_CACHE"
PYTHON_ENV = "TEXT3D_BLENDER_PYTHON"
FORMAT_VERSION = 1


BLENDER_SETUP = (
    "python3.11 -m venv .venv-blender && .venv-blender/bin/pip install bpy==5.0.1, "
    f"then export {PYTHON_ENV}=$PWD/.venv-blender/bin/python"
)
"""How to give Blender its own environment: ``bpy`` pins its own numpy, so it does not share text3d's."""


class SceneRenderError(Text3DError):
    """A synthetic scene could not be rendered (bad description, missing file, Blender failed)."""


def blender_python() -> str | None:
    """The Python interpreter that has Blender's ``bpy`` module: ``$TEXT3D_BLENDER_PYTHON``, else this interpreter
    if ``bpy`` imports here, else ``None``.

    Blender runs only in subprocesses (scene renders, import checks), so it can live in its own virtual environment
    and text3d's environment keeps the numpy a plain install gets (``bpy==5.0.1`` pins numpy 1.26).
    """
    exe = os.environ.get(PYTHON_ENV)
    if exe:
        return exe
    import importlib.util

    return sys.executable if importlib.util.find_spec("bpy") is not None else None


@dataclass(frozen=True)
class RenderedDataset:
    """Where a rendered scene is, and whether it came from the cache."""

    path: Path
    key: str
    cached: bool
    seconds: float

    @property
    def mesh_path(self) -> Path:
        """The true mesh (OBJ, Blender's Z-up world, same frame as the cameras)."""
        return self.path / "mesh.obj"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "text3d" / "scenes"


def _sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(spec: SceneSpec) -> None:
    """One-line errors for descriptions Blender would choke on later (and slower)."""
    src = spec.mesh.source
    if src not in PRIMITIVES and not Path(src).is_file():
        raise SceneRenderError(f"mesh {src!r} is neither a file nor a primitive ({', '.join(PRIMITIVES)})")
    tex = spec.material.texture
    if tex is not None:
        if tex.kind not in ("file", "checker", "gradient", "noise"):
            raise SceneRenderError(f"texture kind {tex.kind!r} is not one of file, checker, gradient, noise")
        if tex.kind == "file" and not (tex.path and Path(tex.path).is_file()):
            raise SceneRenderError(f"texture file {tex.path!r} not found")
    if spec.material.kind not in ("principled", "emission"):
        raise SceneRenderError(f"material kind {spec.material.kind!r} is not principled or emission")
    if _varying_material(spec) and (tex is not None or spec.material.kind != "principled"):
        raise SceneRenderError("a spatially varying material is principled with texture=None")
    w = spec.world
    if w.kind not in ("sky", "color", "hdr"):
        raise SceneRenderError(f"world kind {w.kind!r} is not one of sky, color, hdr")
    if w.kind == "hdr" and not (w.hdr_path and Path(w.hdr_path).is_file()):
        raise SceneRenderError(f"world HDR file {w.hdr_path!r} not found")
    r = spec.render
    if min(r.width, r.height) < 1 or r.samples < 1:
        raise SceneRenderError(f"render size {r.width}x{r.height} and samples {r.samples} must be positive")
    cams = spec.cameras
    if cams.explicit is None and cams.n_train + cams.n_val + cams.n_test < 1:
        raise SceneRenderError("the camera rig has no views")


def _varying_material(spec: SceneSpec) -> bool:
    return spec.material.base_color_b is not None or spec.material.split_axis >= 0


def scene_key(spec: SceneSpec) -> str:
    """sha256 of the description, with files replaced by their content hashes and the render script's hash."""
    d = spec.to_dict()
    d["render"].pop("threads", None)
    for key, default in MATERIAL_EXTRAS_DEFAULTS.items():
        if json.dumps(d["material"][key]) == json.dumps(default):
            d["material"].pop(key)
    if spec.mesh.source not in PRIMITIVES:
        d["mesh"]["source"] = (
            "sha256:" + _sha256_file(spec.mesh.source) + Path(spec.mesh.source).suffix.lower()
        )
    tex = d["material"].get("texture")
    if tex and tex.get("kind") == "file":
        tex["path"] = "sha256:" + _sha256_file(spec.material.texture.path)
    if spec.world.kind == "hdr":
        d["world"]["hdr_path"] = "sha256:" + _sha256_file(spec.world.hdr_path)
    d["_format"] = FORMAT_VERSION
    d["_script"] = _sha256_file(SCRIPT)
    if _varying_material(spec):
        d["_script"] += _sha256_file(PBR_SCRIPT)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _write_png(path: Path, img: np.ndarray) -> Path:
    from PIL import Image

    from text3d.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return path


def _job(spec: SceneSpec, out_dir: Path) -> dict:
    """Resolve the description into the self-contained job the Blender script reads."""
    mesh = dataclasses.asdict(spec.mesh)
    if spec.mesh.source not in PRIMITIVES:
        dst = out_dir / ("source_mesh" + Path(spec.mesh.source).suffix.lower())
        shutil.copyfile(spec.mesh.source, dst)
        mesh["source"] = str(dst)
        mesh["fit_size"] = spec.mesh.size > 0
    material = dataclasses.asdict(spec.material)
    material["size"] = spec.mesh.size
    tex = spec.material.texture
    if tex is None:
        material["texture"] = None
    else:
        if tex.kind == "file":
            dst = out_dir / ("texture" + Path(tex.path).suffix.lower())
            shutil.copyfile(tex.path, dst)
        else:
            make = {"checker": checker_texture, "gradient": gradient_texture, "noise": noise_texture}[
                tex.kind
            ]
            img = make(tex)
            dst = _write_png(out_dir / "texture.png", img)
        material["texture"] = str(dst)
    world = {"strength": spec.world.strength, "rotation_z_deg": spec.world.rotation_z_deg}
    if spec.world.kind == "color":
        world["color"] = list(spec.world.color)
    elif spec.world.kind == "hdr":
        dst = out_dir / "world.hdr"
        shutil.copyfile(spec.world.hdr_path, dst)
        world["hdr"] = str(dst)
    else:
        world["hdr"] = str(write_hdr(out_dir / "world.hdr", sky_hdr(spec.world)))
    fov_x = float(np.deg2rad(spec.cameras.fov_deg))
    cams = {k: v.tolist() for k, v in rig_cameras(spec.cameras).items()}
    return {
        "out_dir": str(out_dir),
        "mesh": mesh,
        "material": material,
        "world": world,
        "render": dataclasses.asdict(spec.render),
        "camera_angle_x": fov_x,
        "cameras": cams,
    }


def render_dataset(
    spec: SceneSpec,
    *,
    cache_dir: str | os.PathLike | None = None,
    python: str | None = None,
    timeout_s: float = 3600.0,
    force: bool = False,
) -> RenderedDataset:
    """Render ``spec`` with Cycles (or return the cached render) in the Blender/NeRF-synthetic layout.

    Args:
        spec: the scene; see :class:`SceneSpec`.
        cache_dir: where renders are kept (default :func:`default_cache_dir`).
        python: a Python with ``bpy`` (default :func:`blender_python`).
        timeout_s: give up on Blender after this long.
        force: render again even when cached (the new render replaces the old one).

    Returns:
        :class:`RenderedDataset`; load it with :func:`text3d.data.load_photo_set`.

    Raises:
        SceneRenderError: a bad description or a failed Blender run, with one line saying which.
    """
    _check(spec)
    key = scene_key(spec)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / key
    if final.is_dir() and not force:
        return RenderedDataset(final, key, True, 0.0)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=root))
    t0 = time.perf_counter()
    try:
        job = _job(spec, tmp)
        write_json(tmp / "scene.json", spec.to_dict())
        job_path = write_json(tmp / "job.json", job)
        exe = python or blender_python()
        if exe is None:
            raise SceneRenderError(
                f"Blender (bpy) is not installed; give it its own environment: {BLENDER_SETUP}"
            )
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            proc = subprocess.run(
                [exe, str(PBR_SCRIPT if _varying_material(spec) else SCRIPT), str(job_path)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
            )
        except subprocess.TimeoutExpired as err:
            raise SceneRenderError(f"Blender did not finish rendering within {timeout_s:.0f} s") from err
        except OSError as err:
            raise SceneRenderError(f"cannot run the Blender Python {exe!r}: {err}") from err
        if proc.returncode != 0 or not (tmp / "blender.json").is_file():
            tail = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
            last = tail[-1] if tail else f"exit code {proc.returncode}"
            raise SceneRenderError(f"Blender failed to render the scene: {last}")
        (tmp / "job.json").unlink()
        if force and final.is_dir():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same scene first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
        return RenderedDataset(final, key, False, time.perf_counter() - t0)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------- CLI
def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != n:
        raise SceneRenderError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="text3d render-dataset",
        description="Render a mesh with Blender Cycles into a Blender/NeRF-synthetic multi-view dataset.",
    )
    p.add_argument(
        "mesh", help=f"a mesh file (OBJ, PLY, STL, GLB, glTF) or a primitive: {', '.join(PRIMITIVES)}"
    )
    p.add_argument("--out", help="copy the dataset to this folder (default: print the cache folder)")
    p.add_argument("--views", type=int, default=100, help="training views")
    p.add_argument("--val-views", type=int, default=0)
    p.add_argument("--test-views", type=int, default=20)
    p.add_argument("--resolution", default="200", help="N or WxH pixels")
    p.add_argument("--samples", type=int, default=64, help="Cycles samples per pixel")
    p.add_argument("--distance", type=float, default=3.0, help="camera distance from the target")
    p.add_argument("--fov", type=float, default=40.0, help="horizontal field of view, degrees")
    p.add_argument("--elevation", default="-20,70", help="training elevation band LO,HI in degrees")
    p.add_argument("--size", type=float, default=1.0, help="object size (files: longest side; 0 keeps it)")
    p.add_argument("--subdivision", type=int, default=0)
    p.add_argument("--smooth", action="store_true")
    p.add_argument("--texture", default="checker", help="an image file, checker, gradient, noise or none")
    p.add_argument("--unlit", action="store_true", help="emission shader: pixels equal the texture")
    p.add_argument("--roughness", type=float, default=0.5)
    p.add_argument("--metallic", type=float, default=0.0)
    p.add_argument(
        "--world", default="sky", help="sky (procedural HDR), an .hdr file, or a linear colour R,G,B"
    )
    p.add_argument("--strength", type=float, default=1.0, help="world light strength")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opaque", action="store_true", help="render the world behind the object (no alpha)")
    p.add_argument("--python", help=f"a Python with bpy (default: ${PYTHON_ENV}, or this one if it has bpy)")
    p.add_argument("--cache-dir", help=f"render cache (default ${CACHE_ENV} or ~/.cache/text3d/scenes)")
    p.add_argument("--force", action="store_true", help="render again even if cached")
    return p


def spec_from_args(args: argparse.Namespace) -> SceneSpec:
    """The :class:`SceneSpec` that ``text3d render-dataset`` flags describe."""
    res = args.resolution.lower().split("x")
    try:
        width, height = (int(res[0]), int(res[0])) if len(res) == 1 else (int(res[0]), int(res[1]))
    except ValueError as err:
        raise SceneRenderError(f"--resolution must be N or WxH, got {args.resolution!r}") from err
    tex_arg = args.texture
    if tex_arg == "none":
        texture = None
    elif tex_arg in ("checker", "gradient", "noise"):
        texture = TextureSpec(kind=tex_arg)
    else:
        texture = TextureSpec(kind="file", path=str(Path(tex_arg).resolve()))
    if args.world == "sky":
        world = WorldSpec(kind="sky", strength=args.strength)
    elif args.world.lower().endswith(".hdr"):
        world = WorldSpec(kind="hdr", hdr_path=str(Path(args.world).resolve()), strength=args.strength)
    else:
        world = WorldSpec(kind="color", color=_floats(args.world, 3, "--world"), strength=args.strength)
    mesh_src = args.mesh if args.mesh in PRIMITIVES else str(Path(args.mesh).resolve())
    return SceneSpec(
        mesh=MeshSpec(source=mesh_src, size=args.size, subdivision=args.subdivision, smooth=args.smooth),
        material=MaterialSpec(
            kind="emission" if args.unlit else "principled",
            texture=texture,
            roughness=args.roughness,
            metallic=args.metallic,
        ),
        world=world,
        cameras=CameraRigSpec(
            n_train=args.views,
            n_val=args.val_views,
            n_test=args.test_views,
            distance=args.distance,
            fov_deg=args.fov,
            elevation_range_deg=_floats(args.elevation, 2, "--elevation"),
        ),
        render=RenderSpec(
            width=width, height=height, samples=args.samples, seed=args.seed, transparent=not args.opaque
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """``text3d render-dataset MESH [flags]``: parse ``argv``, render (or reuse the cache), print where it is.

    Returns the exit code: 0 on success, 2 with one line on stderr for a user error. Never calls ``sys.exit``.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already printed
        return int(stop.code or 0)
    try:
        spec = spec_from_args(args)
        result = render_dataset(spec, cache_dir=args.cache_dir, python=args.python, force=args.force)
        where = result.path
        if args.out:
            out = Path(args.out)
            if out.exists() and any(out.iterdir()):
                raise SceneRenderError(f"--out {out} exists and is not empty")
            out.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
            try:
                shutil.copytree(result.path, staging, dirs_exist_ok=True)
                if out.exists():
                    out.rmdir()
                os.rename(staging, out)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            where = out
    except Text3DError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    how = "cached" if result.cached else f"rendered in {result.seconds:.1f} s"
    print(f"{where} ({how}; true mesh: {where / 'mesh.obj'})")
    return 0
