"""Fit: photos to a textured mesh. A field fitted to random rays of the training photos under a photometric loss
(the ``coarse`` stage), then a DMTet mesh initialised from it and fitted to whole photos (the ``refine`` stage),
with the same fields, renderers, trainer and export as text-to-3D.

The coarse field is a NeRF or a sphere-traced signed distance field (``coarse.representation``; its mask term
needs the silhouette gradient of :mod:`text3d.render.sphere_trace`, its eikonal term keeps it a distance). An SDF's
zero level is a mesh already (``refine.steps=0`` exports it); with refine steps the DMTet stage starts from that
level exactly (a distance, not a density) and fits the photos with its sharp rasterized outlines. ``auto`` (the
default) takes the SDF where it was measured to win (masked photos, poses held fixed: issue 13 (b)'s scene gives
0.22 % Chamfer and 32.0 dB in 638 s, against the NeRF's 1.28 % and 31.5 dB in 2381 s; docs/benchmarks.md) and the
NeRF elsewhere: without masks the background is learned behind a semi-transparent field, and pose refinement
(BARF's coarse-to-fine window opens either field's grid) has been measured with the NeRF only
(``bench/pose_bench.py``).

The colour is what the cameras saw (an unlit shader: radiance, lighting included). Photos with masks are fitted
over a solid background of ``views.background`` with a mask term on the opacity; photos without masks get a
learned background.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from text3d.data.photoset import PhotoSet
from text3d.errors import ConfigError
from text3d.export.exporter import ExportConfig
from text3d.fields.dmtet import DMTetConfig
from text3d.fields.encoding import HashGridConfig
from text3d.fields.nerf import NORMAL_KINDS, BackgroundConfig, NeRFFieldConfig
from text3d.fields.occupancy import OccupancyGridConfig
from text3d.fields.sdf import SDFFieldConfig
from text3d.hdr import read_environment
from text3d.objectives.photometric import PhotometricConfig, PhotometricObjective
from text3d.recipes.text_to_3d import check_kind, dmtet_config
from text3d.render.pbr import EnvironmentLight, PBRShader, PBRShaderConfig
from text3d.render.shading import UnlitShader
from text3d.render.volume import VolumeRendererConfig
from text3d.representations.base import Ramp
from text3d.representations.dmtet import DMTetRepresentation
from text3d.representations.mesh import MeshRepresentation, MeshRepresentationConfig
from text3d.representations.nerf import NeRFConfig, NeRFRepresentation
from text3d.representations.sdf import SDFConfig, SDFRepresentation
from text3d.training.stage import OptimConfig, Stage
from text3d.training.trainer import TrainerConfig
from text3d.views import RenderOutput
from text3d.views.photos import PhotoViews, PhotoViewsConfig

COARSE_REPRESENTATIONS = ("auto", "nerf", "sdf")
REFINE_REPRESENTATIONS = ("dmtet",)
VIEW_KINDS = ("photos",)
SHADER_KINDS = ("unlit",)
OBJECTIVE_KINDS = ("photometric",)
PLACEMENTS = ("input", "normalized")
MATERIALS = ("none", "pbr")
BACKGROUNDS = ("auto", "solid", "learned")


@dataclass(frozen=True)
class FitStageConfig:
    steps: int = 2000
    views: str = "photos"
    """Kind of view source: ``photos`` (the training photos, set by the run's ``views`` section)."""
    shader: str = "unlit"
    """Kind of shader: ``unlit`` (the photos' colours as seen)."""
    objective: str = "photometric"
    """Kind of objective: ``photometric`` (set by ``photometric``)."""
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass(frozen=True)
class FitCoarseConfig(FitStageConfig):
    """The NeRF (or the SDF), fitted to random rays."""

    steps: int = 2000
    representation: str = "auto"
    """``nerf`` (set by ``nerf``, ``renderer``, ``occupancy``), ``sdf`` (a sphere-traced signed distance field,
    set by ``sdf``, ``sdf_network_lr_scale``; its zero level is the mesh), or ``auto``: ``sdf`` for photos with
    masks whose poses are held fixed, else ``nerf`` (see the module docstring); ``config.yaml`` records the
    choice. The refine stage, if any, starts from either."""
    rays_per_step: int = 4096
    nerf: NeRFFieldConfig = field(
        default_factory=lambda: NeRFFieldConfig(
            encoding=HashGridConfig(log2_hashmap_size=17, max_resolution=1024)
        )
    )
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    """Used as it is when the run's ``background`` is ``learned``; ``solid`` takes ``views.background``."""
    renderer: VolumeRendererConfig = field(default_factory=lambda: VolumeRendererConfig(n_samples=96))
    occupancy: OccupancyGridConfig = field(
        default_factory=lambda: OccupancyGridConfig(density_threshold=0.01)
    )
    lambda_sparsity: float = 0.0
    coarse_to_fine: tuple[float, float] = (0.0, 0.4)
    """With ``views.refine_poses``: the fractions of ``steps`` between which the hash grid's levels open, coarsest
    first (BARF's schedule; ``bench/pose_bench.py``), for the NeRF's grid or the SDF's. Ignored when the poses are
    held fixed."""
    sdf: SDFConfig = field(
        default_factory=lambda: SDFConfig(
            field=SDFFieldConfig(
                encoding=HashGridConfig(n_levels=8, log2_hashmap_size=14, max_resolution=128), hidden_dim=32
            ),
            lambda_eikonal=0.5,
            eikonal_points=512,
        )
    )
    """The ``sdf`` representation: field (its ``bound`` is the run's), sphere tracer (``sdf.tracer.silhouette``),
    eikonal weight, mesh grid. A small grid (8 levels, 2^14, finest 128; MLP 32): the fit's mesh detail comes from
    the DMTet stage, and larger grids fitted worse in the same steps (``bench/sdf_fit_bench.py``)."""
    sdf_network_lr_scale: float = 1.0
    """The SDF's MLP trains at ``optim.lr`` times this (the NeRF's at ``optim.network_lr_scale``): its geometry
    lives in the MLP as much as in the grid."""


@dataclass(frozen=True)
class FitRefineConfig(FitStageConfig):
    """The DMTet mesh, fitted to whole photos (0 steps: export the NeRF's isosurface)."""

    steps: int = 300
    representation: str = "dmtet"
    images_per_step: int = 2
    dmtet: DMTetConfig = field(default_factory=DMTetConfig)
    raster_backend: str = "auto"
    raster_fallback: bool = False
    sdf_lr: float = 0.002
    deform_lr: float = 0.002
    init_threshold: float = 0.0
    init_views: int = 8
    init_resolution: int = 64
    lambda_normal_consistency: float = 0.01
    lambda_laplacian: float = 0.0
    """Smoothness weights; far below text-to-3D's (1e4 there): photos constrain the surface themselves."""
    photometric: PhotometricConfig = field(default_factory=lambda: PhotometricConfig(lambda_mask=1.0))


@dataclass(frozen=True)
class FitMaterialsConfig(FitStageConfig):
    """The materials stage (``materials: pbr``): the refine stage's mesh held fixed, a PBR shader's material
    field and environment map fitted to whole photos. See :mod:`text3d.render.pbr` for the shading model and
    the regularisers (material smoothness against light baked into the albedo; a white-light prior so the
    light's tint and the albedo's colour do not trade off freely). The overall scale between light and albedo
    is left to the photos: specular highlights (whose strength does not scale with the albedo) pin it down
    partly, and :mod:`bench.pbr_bench` measures base colour after one global scale, as is standard."""

    steps: int = 500
    shader: str = "pbr"
    images_per_step: int = 2
    pbr: PBRShaderConfig = field(default_factory=PBRShaderConfig)


@dataclass(frozen=True)
class FitConfig:
    """Everything that determines a fit. Saved, resolved, as ``config.yaml`` in the run folder."""

    data: str = ""
    """A folder with transforms.json (Blender / nerfstudio / instant-ngp), a COLMAP model, or plain photos."""
    holdout: int = 8
    """Sets with no test split: every N-th image is held out for evaluation (never trained on)."""
    seed: int = 0
    out_dir: str = "outputs"
    device: str = "auto"
    deterministic: bool = False
    bound: float = 1.0
    """The field's box ``[-bound, bound]^3``; the scene is normalised into it."""
    margin: float = 0.1
    background: str = "auto"
    """``auto`` (solid ``views.background`` when the photos have masks, else learned), ``solid`` or ``learned``."""
    placement: str = "input"
    """Exports in the input's world frame and units (``input``), or text3d's centred +Y-up asset (``normalized``)."""
    views: PhotoViewsConfig = field(default_factory=PhotoViewsConfig)
    refine_sfm_poses: bool = True
    """Poses solved here by structure-from-motion (plain photos) are refined as if ``views.refine_poses`` were on:
    SfM poses are a fraction of a degree off, which a fit notices. ``false`` keeps them as solved."""
    coarse: FitCoarseConfig = field(default_factory=FitCoarseConfig)
    refine: FitRefineConfig = field(default_factory=FitRefineConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval_images: int = 4
    """Held-out views drawn as ground truth | render | error in ``eval/``."""
    eval_pose_steps: int = 400
    """With ``views.refine_poses``: steps that align the held-out views' poses to the fitted scene before they are
    scored (the scene frozen, BARF's test-time alignment); 0 scores them at their input poses."""
    materials: str = "none"
    """``pbr``: after the mesh, recover base colour / roughness / metallic and the environment light (a third,
    ``materials`` stage); the export is then relightable. ``none``: the colour is what the cameras saw."""
    env: str = ""
    """With ``materials: pbr``: a known environment (equirectangular Radiance ``.hdr``, Blender's world
    orientation), held fixed, so only the materials are solved for."""
    material: FitMaterialsConfig = field(default_factory=FitMaterialsConfig)


FIT_PRESETS: dict[str, dict[str, str]] = {
    "quality": {},
    "fast": {"coarse.steps": "1000", "refine.steps": "150"},
}
"""``text3d fit --preset`` and the web app's "From photos" tab: overrides applied on top of the defaults."""


def check_fit_config(cfg: FitConfig) -> None:
    """One-line :class:`ConfigError` for an unknown kind or choice, before anything is loaded."""
    for name, stage, representations in (
        ("coarse", cfg.coarse, COARSE_REPRESENTATIONS),
        ("refine", cfg.refine, REFINE_REPRESENTATIONS),
    ):
        check_kind(f"{name}.representation", stage.representation, representations)
        check_kind(f"{name}.views", stage.views, VIEW_KINDS)
        check_kind(f"{name}.shader", stage.shader, SHADER_KINDS)
        check_kind(f"{name}.objective", stage.objective, OBJECTIVE_KINDS)
    check_kind("coarse.nerf.normals", cfg.coarse.nerf.normals, NORMAL_KINDS)
    check_kind("placement", cfg.placement, PLACEMENTS)
    check_kind("materials", cfg.materials, MATERIALS)
    if cfg.materials == "pbr" and cfg.refine.steps <= 0 and cfg.coarse.representation != "sdf":
        raise ConfigError(
            "--materials pbr needs a mesh: the DMTet stage (refine.steps > 0) or an SDF (--representation sdf)"
        )
    if cfg.env and cfg.materials != "pbr":
        raise ConfigError("--env sets the light of the materials stage: give it with --materials pbr")
    if cfg.env:
        read_environment(cfg.env)  # one line for a missing or bad map, before anything is trained
    check_kind("background", cfg.background, BACKGROUNDS)
    lo, hi = cfg.coarse.coarse_to_fine
    if not 0 <= lo <= hi <= 1:
        raise ConfigError(
            f"coarse.coarse_to_fine must be two fractions 0 <= start <= end <= 1 of the coarse steps, got {lo}, {hi}"
        )
    if cfg.coarse.steps <= 0:
        raise ConfigError(
            "coarse.steps must be > 0: the fit starts with the NeRF or SDF (the mesh starts from it)"
        )


def background_config(cfg: FitConfig, photos: PhotoSet) -> BackgroundConfig:
    kind = cfg.background
    if kind == "auto":
        kind = "solid" if photos.masks is not None else "learned"
    if kind == "solid":
        return dataclasses.replace(cfg.coarse.background, kind="solid", color=cfg.views.background)
    return dataclasses.replace(cfg.coarse.background, kind="learned")


def target_background(cfg: FitConfig, photos: PhotoSet) -> torch.Tensor | None:
    """The colour masked photos are composited over (what a solid background renders), or ``None`` (learned)."""
    bg = background_config(cfg, photos)
    return torch.tensor(bg.color, dtype=photos.images.dtype) if bg.kind == "solid" else None


def with_representation(cfg: FitConfig, photos: PhotoSet) -> FitConfig:
    """``cfg`` with ``coarse.representation: auto`` resolved for these photos (after :func:`with_pose_refinement`):
    ``sdf`` when they have masks and their poses are held fixed, else ``nerf``. Otherwise ``cfg`` itself."""
    if cfg.coarse.representation != "auto":
        return cfg
    kind = "sdf" if photos.masks is not None and not cfg.views.refine_poses else "nerf"
    return dataclasses.replace(cfg, coarse=dataclasses.replace(cfg.coarse, representation=kind))


def with_pose_refinement(cfg: FitConfig, photos: PhotoSet) -> FitConfig:
    """``cfg`` with ``views.refine_poses`` on when the poses were solved by structure-from-motion (and
    ``refine_sfm_poses`` allows it); otherwise ``cfg`` itself."""
    if "sfm" in photos.meta and cfg.refine_sfm_poses and not cfg.views.refine_poses:
        return dataclasses.replace(cfg, views=dataclasses.replace(cfg.views, refine_poses=True))
    return cfg


def build_stages(cfg: FitConfig, photos: PhotoSet) -> list[Stage]:
    """The fit's stages for a loaded (normalised) photo set. Construction draws initial weights: seed first."""
    check_fit_config(cfg)
    cfg = with_representation(cfg, photos)
    c, r = cfg.coarse, cfg.refine
    background = background_config(cfg, photos)
    nerf = NeRFConfig(
        field=dataclasses.replace(c.nerf, bound=cfg.bound),
        background=background,
        renderer=c.renderer,
        occupancy=c.occupancy,
        lambda_orient=Ramp(0.0, 0.0),
        lambda_sparsity=c.lambda_sparsity,
        lr=c.optim.lr,
        network_lr_scale=c.optim.network_lr_scale,
        coarse_to_fine=(
            (round(c.coarse_to_fine[0] * c.steps), round(c.coarse_to_fine[1] * c.steps))
            if cfg.views.refine_poses
            else (0, 0)
        ),
    )
    views = dataclasses.replace(cfg.views, rays_per_step=c.rays_per_step, images_per_step=r.images_per_step)
    sdf = dataclasses.replace(c.sdf, field=dataclasses.replace(c.sdf.field, bound=cfg.bound))
    if c.representation == "sdf":
        coarse = SDFRepresentation(sdf, background, c.optim.lr, c.sdf_network_lr_scale, nerf.coarse_to_fine)
    else:
        coarse = NeRFRepresentation(nerf)
    stages = [
        Stage(
            "coarse",
            c.steps,
            coarse,
            PhotoViews(photos, views, mode="rays"),
            UnlitShader(),
            PhotometricObjective(c.photometric),
            c.optim,
        )
    ]
    if r.steps > 0:
        stages.append(
            Stage(
                "refine",
                r.steps,
                DMTetRepresentation(
                    dmtet_config(r, sdf.field if c.representation == "sdf" else nerf.field, background)
                ),
                PhotoViews(photos, views, mode="images"),
                UnlitShader(),
                PhotometricObjective(r.photometric),
                r.optim,
            )
        )
    if cfg.materials == "pbr":
        m = cfg.material
        stages.append(
            Stage(
                "materials",
                m.steps,
                MeshRepresentation(MeshRepresentationConfig(background, r.raster_backend)),
                PhotoViews(
                    photos, dataclasses.replace(views, images_per_step=m.images_per_step), mode="images"
                ),
                pbr_shader(m.pbr, cfg.env, cfg.bound),
                PhotometricObjective(m.photometric),
                m.optim,
            )
        )
    return stages


def pbr_shader(cfg: PBRShaderConfig, env: str = "", bound: float = 1.0) -> PBRShader:
    """A PBR shader whose material field covers the fit's box; its light learned, or ``env`` held fixed."""
    cfg = dataclasses.replace(cfg, material=dataclasses.replace(cfg.material, bound=bound))
    if not env:
        return PBRShader(cfg)
    image = read_environment(env)
    light = EnvironmentLight(
        dataclasses.replace(cfg.environment, height=image.shape[0]), image, trainable=False
    )
    return PBRShader(cfg, environment=light)


def start_from(stage: Stage, previous: Stage | None) -> None:
    """The mesh starts from the coarse stage (a NeRF's density at the level matched to its silhouettes in the
    training views, or an SDF's zero level); pose corrections continue from the previous stage's."""
    if previous is None:
        return
    stage.representation.init_from(previous.representation, previous.views)
    with torch.no_grad():
        stage.views.pose_delta.copy_(previous.views.pose_delta)


@torch.no_grad()
def render_photo(stage: Stage, photos: PhotoSet, index: int, chunk_rows: int = 64) -> RenderOutput:
    """The stage's render of photo ``index`` of ``photos`` (any split) at its own size: by its rays for a
    ray-marched representation (any intrinsics), by its camera for a rasterized one (centred pinholes)."""
    from text3d.cameras import RayBundle

    device = next(stage.parameters()).device
    rep, shader = stage.representation, stage.shader
    h, w = photos.height, photos.width
    if stage.views.mode == "images":
        cams = photos.subset([index]).cameras().to(device)
        return rep.render(cams, h, w, shader, shader.view_state(cams))
    rows = []
    for top in range(0, h, chunk_rows):
        rr = torch.arange(top, min(h, top + chunk_rows), dtype=photos.c2w.dtype)
        v, u = torch.meshgrid(rr + 0.5, torch.arange(w, dtype=photos.c2w.dtype) + 0.5, indexing="ij")
        idx = torch.full((v.numel(),), index, dtype=torch.long)
        o, d = photos.rays(idx, u.reshape(-1), v.reshape(-1))
        bundle = RayBundle(o.reshape(1, -1, w, 3).to(device), d.reshape(1, -1, w, 3).to(device))
        rows.append(rep.render(bundle, rr.numel(), w, shader, shader.preview()))
    return RenderOutput(
        rgb=torch.cat([r.rgb for r in rows], dim=1),
        opacity=torch.cat([r.opacity for r in rows], dim=1),
        depth=torch.cat([r.depth for r in rows], dim=1),
    )
