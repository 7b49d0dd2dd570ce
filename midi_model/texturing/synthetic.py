"""A scene with a known camera and known surface colours, for tests and the bench.

Primitives placed in [-1, 1]^3, some occluding others from the camera. Each object's colour is a
smooth function of the surface point (so a baked texel can be checked against the exact value),
and the objects' colour families differ (warm / blue / green), so an occluder's colour on another
object is detectable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .camera import Camera, intrinsics, look_at
from .raster import rasterize

# per object: base colour and the amplitude of the smooth variation (all channels stay in 0..1)
PALETTE = np.array([[0.85, 0.35, 0.10], [0.10, 0.25, 0.85], [0.15, 0.80, 0.25]])
AMPLITUDE = 0.12


def surface_colour(points: np.ndarray, obj: int) -> np.ndarray:
    """Known colour (P, 3) in 0..1 of object ``obj`` at surface points (P, 3)."""
    p = np.asarray(points, np.float64)
    wave = np.stack([np.sin(2.1 * p[:, 0] + 1.3 * p[:, 1]), np.sin(1.7 * p[:, 1] - 0.9 * p[:, 2]),
                     np.sin(1.1 * p[:, 2] + 1.9 * p[:, 0])], 1)
    base = PALETTE[obj % len(PALETTE)]
    return np.clip(base + AMPLITUDE * wave, 0, 1)


@dataclass
class SyntheticScene:
    meshes: list          # trimesh.Trimesh per object, in MIDI's frame
    camera: Camera        # the true camera
    image: np.ndarray     # (H, W, 3) uint8, rendered with the true camera
    masks: np.ndarray     # (n, H, W) bool, visible part of each object
    background: tuple = (128, 128, 128)


def primitives(detail: int = 3):
    """Box (front-left), sphere (behind the box), cylinder (front-right)."""
    import trimesh

    box = trimesh.creation.box(extents=(1.2, 0.5, 0.8))
    box.apply_translation((-0.2, -0.45, 0.1))
    sphere = trimesh.creation.icosphere(subdivisions=detail, radius=0.45)
    sphere.apply_translation((0.3, 0.15, -0.35))
    cyl = trimesh.creation.cylinder(radius=0.25, height=0.9, sections=12 * detail + 12)
    cyl.apply_translation((0.6, -0.25, 0.55))
    return [box, sphere, cyl]


def make_scene(width: int = 320, height: int = 240, meshes=None, eye=(1.3, 1.0, 2.4), focal_ratio: float = 1.05):
    """Render the primitives through a known perspective camera with this module's rasteriser."""
    meshes = meshes if meshes is not None else primitives()
    cam = Camera(intrinsics(focal_ratio * width, width, height), look_at(eye), width, height)
    r = rasterize([m.vertices for m in meshes], [m.faces for m in meshes], cam.K, cam.world_to_camera,
                  height, width)
    image = shade(r, [m.vertices for m in meshes], [m.faces for m in meshes], cam)
    masks = np.stack([(r.obj == i).numpy() for i in range(len(meshes))])
    return SyntheticScene(meshes, cam, image, masks)


def shade(r, vertices: list, faces: list, cam: Camera, background=(128, 128, 128)) -> np.ndarray:
    """Exact surface colour at every pixel's surface point (unlit), background grey."""
    H, W = r.face.shape
    V = torch.cat([torch.as_tensor(np.asarray(v), dtype=torch.float32) for v in vertices])
    offs = np.cumsum([0] + [len(v) for v in vertices[:-1]])
    F = torch.cat([torch.as_tensor(np.asarray(f), dtype=torch.int64) + int(o) for f, o in zip(faces, offs)])
    pts = (V[F[r.face.clamp_min(0)]] * r.bary[..., None]).sum(-2).numpy()
    img = np.empty((H, W, 3), np.float64)
    img[:] = np.asarray(background) / 255.0
    obj = r.obj.numpy()
    for i in range(len(vertices)):
        sel = obj == i
        img[sel] = surface_colour(pts[sel], i)
    return (img * 255 + 0.5).astype(np.uint8)
