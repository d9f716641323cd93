"""Texture a given mesh: one stage whose representation is the user's frozen mesh with a trainable colour
(:class:`text3d.representations.textured_mesh.TexturedMeshRepresentation`), seen and scored in one of three ways:

- **prompt** (``prompt`` only): random orbit cameras framed on the mesh (:class:`OrbitViews`), the diffuse shader
  and SDS with view-dependent prompts, negative prompt and Perp-Neg, as in text-to-3D;
- **photos** (``images``): posed photos as whole images (:class:`PhotoViews`), the unlit shader and the
  photometric objective, as in fit's mesh stage;
- **concept** (``image`` + ``prompt``): the image as the view from ``azimuth`` / ``elevation`` under the
  photometric loss, every ``concept_every``-th step, and orbit cameras under SDS otherwise
  (:class:`ConceptViews` + :class:`ConceptObjective`).

The working frame: for a prompt (and a concept image) the mesh is centred on its bounding box and scaled so its
bounding sphere has radius ``frame_radius``, which the default orbit cameras frame; for photos it is the photo
set's normalised frame, into which the mesh is mapped by the inverse of the photos' placement. Export writes the
file's own positions, so the frame never reaches the output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from text3d.cameras import CameraSamplerConfig, make_cameras
from text3d.data.meshfile import MAX_FACES
from text3d.data.photoset import PhotoSet
from text3d.errors import ConfigError
from text3d.export.exporter import ExportConfig
from text3d.guidance.prompts import TextEmbeddings
from text3d.guidance.stable_diffusion import ModelConfig, SDSConfig, StableDiffusionGuidance
from text3d.objectives.concept import ConceptObjective
from text3d.objectives.photometric import PhotometricConfig, PhotometricObjective
from text3d.objectives.sds import SDSObjective
from text3d.recipes.text_to_3d import check_kind
from text3d.render.shading import DiffuseShader, ShadingConfig, UnlitShader
from text3d.representations.textured_mesh import COLOUR_KINDS, TexturedMeshConfig, TexturedMeshRepresentation
from text3d.training.stage import OptimConfig, Stage
from text3d.training.trainer import TrainerConfig
from text3d.views import OrbitViews
from text3d.views.concept import ConceptViews
from text3d.views.photos import PhotoViews, PhotoViewsConfig

MODES = ("prompt", "photos", "concept")


@dataclass(frozen=True)
class TextureConfig:
    """Everything that determines a texturing run. Saved, resolved, as ``config.yaml`` in the run folder."""

    mesh: str = ""
    """The mesh file to texture (GLB / glTF, OBJ, PLY)."""
    prompt: str = ""
    negative_prompt: str = ""
    images: str = ""
    """A folder of posed photos (transforms.json, COLMAP) to take the colours from."""
    image: str = ""
    """One concept image, seen from ``azimuth`` / ``elevation`` (with ``prompt`` for the other sides)."""
    azimuth: float = 0.0
    elevation: float = 0.0
    unwrap: bool = False
    """New UVs (xatlas) even when the mesh has its own; a mesh without UVs is always unwrapped."""
    max_faces: int = MAX_FACES
    seed: int = 0
    out_dir: str = "outputs"
    device: str = "auto"
    deterministic: bool = False
    steps: int = 1000
    resolution: int = 64
    """Square render size for the prompt and concept modes (photos are used at their own size)."""
    frame_radius: float = 0.5
    """Prompt / concept: the mesh's bounding-sphere radius in the working frame (what the orbit cameras frame)."""
    colour: TexturedMeshConfig = field(default_factory=TexturedMeshConfig)
    cameras: CameraSamplerConfig = field(default_factory=CameraSamplerConfig)
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    sds: SDSConfig = field(default_factory=SDSConfig)
    photometric: PhotometricConfig = field(default_factory=lambda: PhotometricConfig(lambda_mask=0.0))
    concept_every: int = 2
    """Concept mode: every N-th step is the concept view."""
    concept_sds_weight: float = 3e-4
    """Concept mode: weight of SDS against the photometric term. Measured with the tiny model (docs/benchmarks.md):
    the front view inside the silhouette reaches 23.3 dB at 1e-3 and 28.2 dB at 3e-4 in 120 steps (47.5 dB without
    SDS): SDS gradients are far larger than the photometric one, and Adam normalises both."""
    views: PhotoViewsConfig = field(default_factory=PhotoViewsConfig)
    """Photos: images per step, background, pose refinement."""
    bound: float = 1.0
    margin: float = 0.1
    holdout: int = 8
    """Photos with no test split: every N-th image is held out for evaluation."""
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    """``formats`` (glb, obj) and, for the ``field`` colour, ``texture_size`` of the bake."""


TEXTURE_PRESETS: dict[str, dict[str, str]] = {
    "quality": {},
    "fast": {"steps": "400"},
    "toy": {"model.model_id": "toy", "resolution": "32", "steps": "150", "colour.texture_size": "256"},
}
"""``text3d texture --preset`` and the web app's "Texture a mesh" tab: overrides applied on top of the defaults."""


def mode(cfg: TextureConfig) -> str:
    """``prompt``, ``photos`` or ``concept``, from which inputs are given.

    Raises:
        ConfigError: no mesh, nothing to texture from, or inputs that do not go together.
    """
    if not cfg.mesh:
        raise ConfigError(
            "no mesh given: text3d texture MESH --prompt TEXT (or --images DIR, or --image FILE)"
        )
    if cfg.images and cfg.image:
        raise ConfigError("give --images (posed photos) or --image (one concept image), not both")
    if cfg.images and cfg.prompt.strip():
        raise ConfigError(
            "--images textures from the photos alone; drop --prompt (or use --image with --prompt)"
        )
    if cfg.images:
        return "photos"
    if cfg.image:
        if not cfg.prompt.strip():
            raise ConfigError("--image needs --prompt too: the prompt paints the sides the image cannot see")
        return "concept"
    if not cfg.prompt.strip():
        raise ConfigError(
            "say what the texture should look like: --prompt TEXT, --images DIR or --image FILE"
        )
    return "prompt"


def check_texture_config(cfg: TextureConfig) -> str:
    """The mode, after one-line checks of every choice and range."""
    m = mode(cfg)
    check_kind("colour.colour", cfg.colour.colour, COLOUR_KINDS)
    for key, value, lo in (
        ("steps", cfg.steps, 1),
        ("resolution", cfg.resolution, 8),
        ("colour.texture_size", cfg.colour.texture_size, 8),
        ("colour.levels", cfg.colour.levels, 1),
        ("concept_every", cfg.concept_every, 1),
        ("max_faces", cfg.max_faces, 1),
    ):
        if value < lo:
            raise ConfigError(f"{key} must be >= {lo}; got {value}")
    if cfg.colour.texture_size >> (cfg.colour.levels - 1) < 1:
        raise ConfigError(
            f"colour.levels={cfg.colour.levels} halves colour.texture_size={cfg.colour.texture_size} below 1 texel"
        )
    if cfg.frame_radius <= 0:
        raise ConfigError(f"frame_radius must be > 0; got {cfg.frame_radius}")
    return m


# ----------------------------------------------------------------------------------------------- working frame
def orbit_frame(positions: np.ndarray, radius: float) -> np.ndarray:
    """``float64 [4, 4]`` from the file's frame to the working frame: bounding-box centre to the origin, bounding
    sphere (about that centre) to ``radius``. A similarity, so the mesh keeps its shape."""
    centre = 0.5 * (positions.min(axis=0) + positions.max(axis=0))
    extent = float(np.linalg.norm(positions - centre, axis=-1).max())
    scale = radius / extent if extent > 0 else 1.0
    m = np.eye(4)
    m[:3, :3] *= scale
    m[:3, 3] = -scale * centre
    return m


def photo_frame(photos: PhotoSet) -> np.ndarray:
    """``float64 [4, 4]`` from the file's frame (the photos' input world) to their normalised frame."""
    return np.linalg.inv(photos.placement_matrix("input"))


def apply_frame(matrix: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return positions @ matrix[:3, :3].T + matrix[:3, 3]


def concept_camera(cfg: TextureConfig):
    """The camera the concept image is taken from: ``azimuth`` / ``elevation`` at the evaluation distance and
    field of view of the orbit cameras."""
    c = cfg.cameras
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return make_cameras(t(cfg.elevation), t(cfg.azimuth), t(c.eval_distance), t(c.eval_fovy))


# ------------------------------------------------------------------------------------------------------ stages
def build_stages(
    cfg: TextureConfig,
    positions: torch.Tensor,
    faces: torch.Tensor,
    corner_uvs: torch.Tensor,
    photos: PhotoSet | None = None,
    concept_image: torch.Tensor | None = None,
    guidance: StableDiffusionGuidance | None = None,
    text: TextEmbeddings | None = None,
) -> list[Stage]:
    """The one ``texture`` stage. ``positions`` are in the working frame; ``photos`` (normalised) for the photos
    mode, ``concept_image`` ``[R, R, 3]`` for the concept mode. Without ``guidance`` the SDS modes build a stage
    with no objective (enough to load a checkpoint and export)."""
    m = check_texture_config(cfg)
    background = cfg.views.background if m == "photos" else cfg.colour.background
    rep = TexturedMeshRepresentation(
        positions,
        faces,
        corner_uvs,
        dataclasses.replace(cfg.colour, background=tuple(background)),
        bound=cfg.bound,
    )
    sds = None if guidance is None or text is None else SDSObjective(guidance, text, cfg.sds)
    if m == "photos":
        if photos is None:
            raise ConfigError("the photos mode needs the photo set")
        views = PhotoViews(photos, cfg.views, mode="images")
        return [
            Stage(
                "texture",
                cfg.steps,
                rep,
                views,
                UnlitShader(),
                PhotometricObjective(cfg.photometric),
                cfg.optim,
            )
        ]
    if m == "concept":
        if concept_image is None:
            raise ConfigError("the concept mode needs the concept image")
        views = ConceptViews(
            cfg.cameras, cfg.resolution, concept_camera(cfg), concept_image, cfg.concept_every
        )
        objective = (
            None
            if sds is None
            else ConceptObjective(PhotometricObjective(cfg.photometric), sds, cfg.concept_sds_weight)
        )
        return [Stage("texture", cfg.steps, rep, views, UnlitShader(), objective, cfg.optim)]
    views = OrbitViews(cfg.cameras, cfg.resolution)
    return [Stage("texture", cfg.steps, rep, views, DiffuseShader(cfg.shading), sds, cfg.optim)]


def start_from(stage: Stage, previous: Stage | None) -> None:
    """One stage: nothing to start from."""
    if previous is not None:
        stage.representation.init_from(previous.representation, previous.views)
