"""After the scene: camera from the masks, colours from the photo, control views and multi-view bake.

Data flows one way: meshes + masks (+ image) -> camera -> textured objects -> the scene export.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Camera
from .camera_fit import CameraFit, fit_camera, mask_iou
from .export import textured_scene
from .frames import FRAMES, frame_transform
from .overlay import camera_overlay
from .photo import TexturedObject, texture_from_image

__all__ = ["Camera", "CameraFit", "fit_camera", "mask_iou", "textured_scene", "FRAMES", "frame_transform",
           "camera_overlay", "TexturedObject", "texture_from_image", "TexturedScene", "texture_scene"]


@dataclass
class TexturedScene:
    objects: list            # TexturedObject per mesh
    fit: CameraFit


def texture_scene(meshes: list, image: np.ndarray, masks: np.ndarray, camera: Camera | None = None,
                  texture_size: int = 1024, edge_margin: int = 1, callback=None) -> TexturedScene:
    """trimesh meshes (scene frame) + photo + instance masks -> fitted camera and textured objects."""
    V = [np.asarray(m.vertices) for m in meshes]
    F = [np.asarray(m.faces) for m in meshes]
    if camera is None:
        fit = fit_camera(V, F, masks)
    else:
        H, W = np.asarray(masks).shape[1:]
        cam = camera if (camera.width, camera.height) == (W, H) else camera.scaled(W, H)
        fit = CameraFit(cam, mask_iou(cam, V, F, masks), float("nan"), 0)
    objects = texture_from_image(V, F, image, masks, fit.camera, texture_size, edge_margin, callback)
    return TexturedScene(objects, fit)
