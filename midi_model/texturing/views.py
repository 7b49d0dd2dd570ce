"""Control views for a multi-view generator, in the view set the official textured script uses.

Facts from the official ``scripts/image_to_textured_scene.py`` / ``mvadapter_ig2mv.py`` (MV-Adapter
image-to-multiview on SDXL):
- each object on its own, moved so its vertex mean (each distinct position once) is at the origin and scaled so its largest
  absolute coordinate is 0.5; MV-Adapter's frame is Z up: (x, y, z)_mv = (x, -z, y)_mesh;
- 6 orthographic views, 768 x 768, frustum [-0.55, 0.55]^2, camera distance 1.8, looking at the
  origin with +Z up; azimuths -90, 0, 90, 180, 90, 90 degrees (the script's ``x - 90`` of
  0, 90, 180, 270, 180, 180) and elevations 0, 0, 0, 0, 89.99, -89.99: front (+Z of the mesh),
  right (+X), back, left, top, bottom; camera position d (cos e cos a, cos e sin a, sin e);
- control images: position (p + 0.5) clamped to 0..1 and normal n / 2 + 0.5, both in that
  frame, 0.5 grey where no surface is (the rasteriser interpolates zeros there);
- reference image: the object's crop (mask bounding box, 1 pixel margin), longer side scaled to
  90 % of the view size, centred, composited over 0.5 grey with the mask as alpha.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .camera import Camera, look_at
from .raster import rasterize

AZIMUTHS = (-90.0, 0.0, 90.0, 180.0, 90.0, 90.0)
ELEVATIONS = (0.0, 0.0, 0.0, 0.0, 89.99, -89.99)
VIEW_NAMES = ("front", "right", "back", "left", "top", "bottom")
DISTANCE = 1.8
HALF_EXTENT = 0.55
RESOLUTION = 768
MESH_TO_MV = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])   # (x, y, z) -> (x, -z, y)


def normalisation(vertices: np.ndarray) -> np.ndarray:
    """4x4: object (scene frame) -> MV-Adapter's frame (centred, largest |coordinate| 0.5, Z up)."""
    v = np.unique(np.asarray(vertices, np.float64), axis=0)   # seam copies of a vertex count once
    centre = v.mean(0)
    scale = 0.5 / max(np.abs(v - centre).max(), 1e-12)
    m = np.eye(4)
    m[:3, :3] = scale * MESH_TO_MV
    m[:3, 3] = -scale * MESH_TO_MV @ centre
    return m


def view_cameras(vertices: np.ndarray, resolution: int = RESOLUTION) -> list[Camera]:
    """The 6 orthographic cameras of one object; world_to_camera includes the normalisation."""
    norm = normalisation(vertices)
    f = resolution / (2 * HALF_EXTENT)
    K = np.array([[f, 0, resolution / 2], [0, f, resolution / 2], [0, 0, 1]])
    cams = []
    for az, el in zip(AZIMUTHS, ELEVATIONS):
        a, e = math.radians(az), math.radians(el)
        eye = DISTANCE * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        cams.append(Camera(K, look_at(eye, up=(0.0, 0.0, 1.0)) @ norm, resolution, resolution, ortho=True))
    return cams


def render_control_views(vertices: np.ndarray, faces: np.ndarray, resolution: int = RESOLUTION):
    """-> (cameras, position (6, R, R, 3), normal (6, R, R, 3), mask (6, R, R)), images float 0..1."""
    import trimesh

    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    norm = normalisation(v)
    v_mv = v @ norm[:3, :3].T + norm[:3, 3]
    n_mv = trimesh.Trimesh(v_mv, f, process=False).vertex_normals          # smooth, as the official renders
    cams = view_cameras(v, resolution)
    pos, nrm, msk = [], [], []
    V = torch.tensor(v_mv, dtype=torch.float32)
    N = torch.tensor(np.asarray(n_mv), dtype=torch.float32)
    F = torch.tensor(f)
    for cam in cams:
        r = rasterize([v], [f], cam.K, cam.world_to_camera, resolution, resolution, ortho=True)
        p = r.interpolate(V, F)
        n = torch.nn.functional.normalize(r.interpolate(N, F), dim=-1) * r.mask[..., None]
        pos.append((p + 0.5).clamp(0, 1))
        nrm.append((n / 2 + 0.5).clamp(0, 1))
        msk.append(r.mask)
    return cams, torch.stack(pos), torch.stack(nrm), torch.stack(msk)


def reference_view(image: np.ndarray, mask: np.ndarray, size: int = RESOLUTION) -> np.ndarray:
    """The object's crop on grey, as the official script feeds MV-Adapter: (size, size, 3) uint8."""
    from PIL import Image

    img = np.asarray(image)[..., :3]
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    m = np.asarray(mask).astype(bool)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return np.full((size, size, 3), 128, np.uint8)
    H, W = m.shape
    y0, y1 = max(ys.min() - 1, 0), min(ys.max() + 2, H)
    x0, x1 = max(xs.min() - 1, 0), min(xs.max() + 2, W)
    rgba = np.concatenate([img[y0:y1, x0:x1], (m[y0:y1, x0:x1] * 255).astype(np.uint8)[..., None]], -1)
    h, w = rgba.shape[:2]
    if h > w:
        nh, nw = int(size * 0.9), max(1, int(w * size * 0.9 / h))
    else:
        nh, nw = max(1, int(h * size * 0.9 / w)), int(size * 0.9)
    rgba = np.asarray(Image.fromarray(rgba, "RGBA").resize((nw, nh), Image.BILINEAR)).astype(np.float32) / 255
    out = np.full((size, size, 3), 0.5, np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    a = rgba[..., 3:4]
    out[top:top + nh, left:left + nw] = rgba[..., :3] * a + 0.5 * (1 - a)
    return (out * 255 + 0.5).astype(np.uint8)
