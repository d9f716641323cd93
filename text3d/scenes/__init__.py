"""Synthetic multi-view scenes rendered by Blender Cycles (an independent renderer) in the NeRF-synthetic layout.

:func:`render_dataset` renders a :class:`SceneSpec` in a subprocess and caches the result on disk; ``main(argv)``
is ``text3d render-dataset``. Load the result with :func:`text3d.data.load_photo_set`.
"""

from text3d.scenes.render import (
    RenderedDataset,
    SceneRenderError,
    blender_python,
    default_cache_dir,
    main,
    render_dataset,
    scene_key,
)
from text3d.scenes.spec import (
    PRIMITIVES,
    CameraRigSpec,
    MaterialSpec,
    MeshSpec,
    RenderSpec,
    SceneSpec,
    TextureSpec,
    WorldSpec,
    rig_cameras,
    suzanne_spec,
)

__all__ = [
    "PRIMITIVES",
    "CameraRigSpec",
    "MaterialSpec",
    "MeshSpec",
    "RenderSpec",
    "RenderedDataset",
    "SceneRenderError",
    "SceneSpec",
    "TextureSpec",
    "WorldSpec",
    "blender_python",
    "default_cache_dir",
    "main",
    "render_dataset",
    "rig_cameras",
    "scene_key",
    "suzanne_spec",
]
