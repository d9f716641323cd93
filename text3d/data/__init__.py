"""Photo sets for fitting: transforms.json (Blender/NeRF-synthetic, nerfstudio, instant-ngp) and COLMAP models,
loaded into one :class:`PhotoSet` with text3d's conventions, plus scene normalisation and world frames.

The synthetic scene generator (Blender Cycles) is :mod:`text3d.scenes`, a layer above.
"""

from text3d.data.colmap import load_colmap, read_model
from text3d.data.errors import DataError
from text3d.data.frames import Y_UP, Z_UP, Z_UP_TO_Y_UP, WorldFrame
from text3d.data.load import detect_format, load_photo_set
from text3d.data.normalize import SceneNormalization, compute_normalization
from text3d.data.photoset import SPLITS, Intrinsics, PhotoSet
from text3d.data.transforms import load_transforms, write_transforms

__all__ = [
    "SPLITS",
    "Y_UP",
    "Z_UP",
    "Z_UP_TO_Y_UP",
    "DataError",
    "Intrinsics",
    "PhotoSet",
    "SceneNormalization",
    "WorldFrame",
    "compute_normalization",
    "detect_format",
    "load_colmap",
    "load_photo_set",
    "load_transforms",
    "read_model",
    "write_transforms",
]
