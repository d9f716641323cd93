"""Text to 3D: a NeRF under SDS from random orbit cameras (the ``coarse`` stage), then a DMTet mesh initialised
from it and refined under SDS at a higher resolution (the ``refine`` stage), as in Magic3D.

Each stage's parts are chosen by ``kind`` fields of its config (``representation``, ``views``, ``shader``,
``objective``); their settings are the config's sections (``nerf``, ``cameras``, ``shading``, ``sds``, ...). An
unknown kind is a one-line :class:`ConfigError` that lists the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from text3d.cameras import CameraSamplerConfig
from text3d.errors import ConfigError
from text3d.fields.dmtet import DMTetConfig
from text3d.fields.nerf import NORMAL_KINDS, BackgroundConfig, NeRFFieldConfig
from text3d.fields.occupancy import OccupancyGridConfig
from text3d.fields.sdf import SDFFieldConfig
from text3d.guidance.prompts import TextEmbeddings
from text3d.guidance.stable_diffusion import SDSConfig, StableDiffusionGuidance
from text3d.objectives.sds import SDSObjective
from text3d.render.shading import DiffuseShader, ShadingConfig
from text3d.render.volume import VolumeRendererConfig
from text3d.representations.base import Ramp
from text3d.representations.dmtet import DMTetRepresentation, DMTetRepresentationConfig
from text3d.representations.nerf import NeRFConfig, NeRFRepresentation
from text3d.representations.sdf import SDFConfig, SDFRepresentation
from text3d.training.stage import OptimConfig, Stage
from text3d.views import OrbitViews

COARSE_REPRESENTATIONS = ("nerf", "sdf")
REFINE_REPRESENTATIONS = ("dmtet",)
VIEW_KINDS = ("orbit",)
SHADER_KINDS = ("diffuse",)
OBJECTIVE_KINDS = ("sds",)


@dataclass(frozen=True)
class StageConfig:
    """Settings every text-to-3D stage has."""

    steps: int = 10000
    resolution: int = 64
    """Square render size during training (pixels)."""
    views: str = "orbit"
    """Kind of view source: ``orbit`` (random cameras around the object, set by ``cameras``)."""
    cameras: CameraSamplerConfig = field(default_factory=CameraSamplerConfig)
    objective: str = "sds"
    """Kind of objective: ``sds`` (Score Distillation Sampling, set by ``sds``)."""
    sds: SDSConfig = field(default_factory=SDSConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    shader: str = "diffuse"
    """Kind of shader: ``diffuse`` (albedo / Lambertian point light / textureless, set by ``shading``)."""
    shading: ShadingConfig = field(default_factory=ShadingConfig)


@dataclass(frozen=True)
class CoarseStageConfig(StageConfig):
    """The first stage: a NeRF volume-rendered at 64² (DreamFusion / Magic3D)."""

    steps: int = 10000
    resolution: int = 64
    representation: str = "nerf"
    """Kind of representation: ``nerf`` (set by ``nerf``, ``background``, ``renderer``, ``occupancy``) or ``sdf``
    (a sphere-traced signed distance field, set by ``sdf`` and ``background``). The refine stage starts from
    either."""
    nerf: NeRFFieldConfig = field(default_factory=NeRFFieldConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    renderer: VolumeRendererConfig = field(default_factory=VolumeRendererConfig)
    occupancy: OccupancyGridConfig = field(default_factory=OccupancyGridConfig)
    lambda_orient: Ramp = Ramp(10.0, 1000.0, 0, 5000)
    """Orientation penalty weight (threestudio: 10 -> 1000 over 5k steps); active on shaded steps."""
    lambda_sparsity: float = 1.0
    """Weight of ``mean(sqrt(opacity^2 + 0.01))``: keeps empty space empty."""
    sdf: SDFConfig = field(default_factory=SDFConfig)
    """The ``sdf`` representation: field, sphere tracer (``sdf.tracer.silhouette``), eikonal weight, mesh grid."""


@dataclass(frozen=True)
class RefineStageConfig(StageConfig):
    """The refine stage: a DMTet mesh rasterized at 512², SDS with t in [0.02, 0.5] (Magic3D's second stage)."""

    steps: int = 5000
    resolution: int = 512
    cameras: CameraSamplerConfig = field(default_factory=lambda: CameraSamplerConfig(fovy_range=(30.0, 45.0)))
    sds: SDSConfig = field(default_factory=lambda: SDSConfig(t_range=(0.02, 0.5)))
    shading: ShadingConfig = field(default_factory=lambda: ShadingConfig(albedo_only_steps=0))
    """Lit and textureless renders from the first step: the colour already settled in the coarse stage."""
    representation: str = "dmtet"
    """Kind of representation: ``dmtet`` (set by ``dmtet`` and the settings below; starts from the coarse stage)."""
    dmtet: DMTetConfig = field(default_factory=DMTetConfig)
    """The tet grid (``dmtet.resolution``, 128 by default, in nvdiffrec's naming) and the deformation bound."""
    raster_backend: str = "auto"
    """``auto`` (nvdiffrast on CUDA when installed, else the PyTorch twin), ``torch`` or ``nvdiffrast``."""
    raster_fallback: bool = False
    """With ``raster_backend=nvdiffrast``: use the twin (with a warning) instead of failing when it cannot run."""
    sdf_lr: float = 0.002
    """Adam step for the SDF, which lives in ``[-1, 1]`` (normalised by the density level)."""
    deform_lr: float = 0.005
    """Adam step for the raw deformation (before ``tanh``)."""
    init_threshold: float = 0.0
    """Density level of the initial surface; 0 = automatic (matches the coarse renders' silhouettes)."""
    init_views: int = 8
    init_resolution: int = 64
    lambda_normal_consistency: float = 10000.0
    """Weight of the mean ``1 - cos`` between adjacent face normals (threestudio magic3d-refine)."""
    lambda_laplacian: float = 10000.0
    """Weight of the mean squared uniform Laplacian of the mesh vertices."""


def check_kind(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def check_kinds(coarse: CoarseStageConfig, refine: RefineStageConfig) -> None:
    """One-line :class:`ConfigError` for an unknown kind in either stage, before anything is built."""
    for name, cfg, representations in (
        ("coarse", coarse, COARSE_REPRESENTATIONS),
        ("refine", refine, REFINE_REPRESENTATIONS),
    ):
        check_kind(f"{name}.representation", cfg.representation, representations)
        check_kind(f"{name}.views", cfg.views, VIEW_KINDS)
        check_kind(f"{name}.shader", cfg.shader, SHADER_KINDS)
        check_kind(f"{name}.objective", cfg.objective, OBJECTIVE_KINDS)
    check_kind("coarse.nerf.normals", coarse.nerf.normals, NORMAL_KINDS)


def nerf_config(cfg: CoarseStageConfig) -> NeRFConfig:
    return NeRFConfig(
        field=cfg.nerf,
        background=cfg.background,
        renderer=cfg.renderer,
        occupancy=cfg.occupancy,
        lambda_orient=cfg.lambda_orient,
        lambda_sparsity=cfg.lambda_sparsity,
        lr=cfg.optim.lr,
        network_lr_scale=cfg.optim.network_lr_scale,
    )


def coarse_representation(cfg: CoarseStageConfig) -> NeRFRepresentation | SDFRepresentation:
    if cfg.representation == "sdf":
        return SDFRepresentation(cfg.sdf, cfg.background, cfg.optim.lr, cfg.optim.network_lr_scale)
    return NeRFRepresentation(nerf_config(cfg))


def dmtet_config(
    cfg, colour_field: NeRFFieldConfig | SDFFieldConfig, background: BackgroundConfig
) -> DMTetRepresentationConfig:
    """The DMTet representation's settings from a refine-stage section (text-to-3D's or fit's: both carry the
    same fields) and the NeRF or SDF it starts from (its field config and background)."""
    return DMTetRepresentationConfig(
        dmtet=cfg.dmtet,
        colour_field=colour_field,
        background=background,
        raster_backend=cfg.raster_backend,
        raster_fallback=cfg.raster_fallback,
        sdf_lr=cfg.sdf_lr,
        deform_lr=cfg.deform_lr,
        lr=cfg.optim.lr,
        network_lr_scale=cfg.optim.network_lr_scale,
        init_threshold=cfg.init_threshold,
        init_views=cfg.init_views,
        init_resolution=cfg.init_resolution,
        lambda_normal_consistency=cfg.lambda_normal_consistency,
        lambda_laplacian=cfg.lambda_laplacian,
    )


def build_stages(
    coarse: CoarseStageConfig,
    refine: RefineStageConfig,
    guidance: StableDiffusionGuidance | None = None,
    text: TextEmbeddings | None = None,
) -> list[Stage]:
    """The stages the configs ask for, in order, skipping stages with 0 steps. Without ``guidance`` (and
    ``text``) the stages have no objective: enough to load a checkpoint, render and export.

    Construction draws initial weights from the torch RNG: seed it first for a reproducible run.
    """
    check_kinds(coarse, refine)

    def objective(cfg: StageConfig) -> SDSObjective | None:
        return None if guidance is None or text is None else SDSObjective(guidance, text, cfg.sds)

    stages: list[Stage] = []
    if coarse.steps > 0:
        stages.append(
            Stage(
                "coarse",
                coarse.steps,
                coarse_representation(coarse),
                OrbitViews(coarse.cameras, coarse.resolution),
                DiffuseShader(coarse.shading),
                objective(coarse),
                coarse.optim,
            )
        )
    if refine.steps > 0:
        if coarse.steps <= 0:
            raise ConfigError(
                "the refine stage starts from the coarse stage; set coarse.steps > 0 or refine.steps = 0"
            )
        stages.append(
            Stage(
                "refine",
                refine.steps,
                DMTetRepresentation(
                    dmtet_config(
                        refine,
                        coarse.sdf.field if coarse.representation == "sdf" else coarse.nerf,
                        coarse.background,
                    )
                ),
                OrbitViews(refine.cameras, refine.resolution),
                DiffuseShader(refine.shading),
                objective(refine),
                refine.optim,
            )
        )
    return stages


def start_from(stage: Stage, previous: Stage | None) -> None:
    """Initialise ``stage`` from the stage before it (the refine DMTet from the coarse NeRF's density)."""
    if previous is not None:
        stage.representation.init_from(previous.representation, previous.views)
