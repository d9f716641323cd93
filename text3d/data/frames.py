"""World frames: the input's (Z-up Blender, Y-up, a COLMAP reconstruction's) and text3d's (+Y up, glTF's).

Two rigid maps are recorded for every photo set, as plain 4x4 matrices:

- ``to_world``: input frame -> text3d's world (+Y up). Training, normalisation and the field live after it.
- ``to_file``: input frame -> the coordinates an exported glTF/OBJ file holds when the asset is placed "in the
  user's frame". For a Z-up input that is Blender's own glTF convention (glTF +Y = Blender +Z, glTF +Z = Blender
  -Y), so Blender's glTF importer puts the asset exactly back over the user's scene. For a Y-up or COLMAP input it is
  the identity: the file holds the input's coordinates.

For Z-up inputs both maps are :data:`Z_UP_TO_Y_UP`; they differ only when the loader re-orients an arbitrary frame
(COLMAP) so that text3d's normalised asset stands upright while exports still land in the input's coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z_UP_TO_Y_UP = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
"""Blender (Z up, front view from -Y) -> glTF / text3d (Y up, front from +Z): ``(x, y, z) -> (x, z, -y)``; the
map Blender's glTF exporter applies (its importer applies the inverse)."""


def _mat(m) -> tuple[tuple[float, ...], ...]:
    a = np.asarray(m, np.float64).reshape(4, 4)
    return tuple(tuple(float(x) for x in row) for row in a)


@dataclass(frozen=True)
class WorldFrame:
    """The input's world frame: a name and the two rigid maps described in the module docstring."""

    name: str
    to_world: tuple[tuple[float, ...], ...]
    to_file: tuple[tuple[float, ...], ...]

    @classmethod
    def make(cls, name: str, to_world, to_file=None) -> WorldFrame:
        return cls(name, _mat(to_world), _mat(to_world if to_file is None else to_file))

    @property
    def to_world_matrix(self) -> np.ndarray:
        """``float64 [4, 4]``: input -> text3d world."""
        return np.asarray(self.to_world, np.float64)

    @property
    def to_file_matrix(self) -> np.ndarray:
        """``float64 [4, 4]``: input -> exported-file coordinates ("input" placement)."""
        return np.asarray(self.to_file, np.float64)

    def world_to_file(self) -> np.ndarray:
        """``float64 [4, 4]``: text3d world -> exported-file coordinates (``to_file @ inv(to_world)``)."""
        return self.to_file_matrix @ np.linalg.inv(self.to_world_matrix)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "to_world": [list(r) for r in self.to_world],
            "to_file": [list(r) for r in self.to_file],
        }

    @classmethod
    def from_dict(cls, d: dict) -> WorldFrame:
        return cls.make(d["name"], d["to_world"], d["to_file"])


Z_UP = WorldFrame.make("z_up", Z_UP_TO_Y_UP)
"""Blender, NeRF-synthetic, instant-ngp (colmap2nerf) and nerfstudio transforms.json worlds."""
Y_UP = WorldFrame.make("y_up", np.eye(4))
"""Already text3d's frame."""


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``float64 [3, 3]``: the smallest rotation taking unit direction ``a`` to unit direction ``b`` (Rodrigues)."""
    a = np.asarray(a, np.float64) / np.linalg.norm(a)
    b = np.asarray(b, np.float64) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-12:  # opposite: half turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def up_aligned_frame(name: str, c2w_input: np.ndarray, to_file=None) -> WorldFrame:
    """A frame whose ``to_world`` turns the cameras' mean up direction (OpenGL +Y columns) to +Y.

    For captures with an arbitrary world (COLMAP, SfM) where people hold the camera upright: the normalised asset
    then stands upright. ``to_file`` stays the identity by default, so exports keep the input's coordinates.
    """
    up = np.asarray(c2w_input, np.float64)[:, :3, 1].mean(axis=0)
    rot = np.eye(4)
    if np.linalg.norm(up) > 1e-8:
        rot[:3, :3] = rotation_between(up, np.array([0.0, 1.0, 0.0]))
    return WorldFrame.make(name, rot, np.eye(4) if to_file is None else to_file)
