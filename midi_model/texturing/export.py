"""Textured objects -> a trimesh Scene with one named node per object (base-colour texture or vertex colours)."""
from __future__ import annotations

import numpy as np

from ..scene import build_scene
from .photo import TexturedObject, vertex_colours


def textured_mesh(obj: TexturedObject, transform: np.ndarray | None = None, vertex_colors: bool = False):
    import trimesh
    from PIL import Image

    v = obj.mesh.vertices
    if transform is not None:
        v = v @ transform[:3, :3].T + transform[:3, 3]
    if vertex_colors:
        return trimesh.Trimesh(v, obj.mesh.faces, vertex_colors=vertex_colours(obj), process=False)
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(obj.texture), metallicFactor=0.0, roughnessFactor=1.0)
    # trimesh keeps uvs with v up (OBJ) and flips them on glTF export; ours are glTF (v down)
    uv = np.stack([obj.mesh.uvs[:, 0], 1.0 - obj.mesh.uvs[:, 1]], 1)
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(v, obj.mesh.faces, visual=visual, process=False)


def textured_scene(objects: list, names: list, transform: np.ndarray | None = None, vertex_colors: bool = False):
    return build_scene([textured_mesh(o, transform, vertex_colors) for o in objects], names)
