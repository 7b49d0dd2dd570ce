"""Colours from images into UV texels: the photo (through the fitted camera) and generated views.

A texel takes a pixel's colour only when the pixel shows that very surface point: the same object
wins the depth test across ALL objects at that pixel, the texel's depth agrees with the depth buffer
(not the back side of the object), the surface faces the camera, and (for the photo) the pixel is in
the object's instance mask. So an occluded part never takes the occluder's colour.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .camera import Camera
from .raster import Raster, rasterize, rasterize_screen, screen_barycentrics
from .unwrap import Unwrapped


@dataclass
class Texels:
    used: torch.Tensor       # (T, T) bool: texel centre lies on a triangle of the atlas
    position: torch.Tensor   # (T, T, 3) world position of the texel centre
    normal: torch.Tensor     # (T, T, 3) world face normal


def texels(u: Unwrapped, size: int) -> Texels:
    uv = torch.tensor(u.uvs * size, dtype=torch.float32)
    F = torch.tensor(u.faces)
    face = rasterize_screen(uv, torch.ones(len(uv)), F, size, size, perspective=False)
    bary = screen_barycentrics(uv, F, face)
    V = torch.tensor(u.vertices, dtype=torch.float32)
    tri = V[F[face.clamp_min(0)]]                                            # (T, T, 3, 3)
    pos = (tri * bary[..., None]).sum(-2)
    n = torch.nn.functional.normalize(torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :],
                                                  dim=-1), dim=-1)
    used = face >= 0
    return Texels(used, pos, n * used[..., None])


def _bilinear(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """image (H, W, C) float, pixel coordinates (P, 2) (centres at +0.5) -> (P, C)."""
    H, W = image.shape[:2]
    grid = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1)[None, None]
    out = torch.nn.functional.grid_sample(image.permute(2, 0, 1)[None], grid, mode="bilinear",
                                          padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def project_texels(tx: Texels, obj_index: int, camera: Camera, raster: Raster, image: torch.Tensor,
                   mask: torch.Tensor | None = None, min_cos: float = 0.05, depth_tol: float = 2.5):
    """-> colour (T, T, C), visible (T, T) bool, cos (T, T): the texels this view really sees.

    ``depth_tol`` is in pixel footprints at the texel's depth, plus a slope term, so grazing surfaces
    still pass and the back side of the object (at least its thickness away) does not."""
    T = tx.used.shape[0]
    R = torch.tensor(camera.R, dtype=torch.float32)
    t = torch.tensor(camera.t, dtype=torch.float32)
    K = torch.tensor(camera.K, dtype=torch.float32)
    idx = torch.nonzero(tx.used.reshape(-1)).squeeze(1)
    P = tx.position.reshape(-1, 3)[idx]
    N = tx.normal.reshape(-1, 3)[idx]
    pc = P @ R.T + t
    if camera.ortho:
        xy = pc[:, :2] * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2]
        view = torch.tensor([0.0, 0.0, 1.0]).expand_as(pc)
        foot = torch.full_like(pc[:, 2], 1.0 / float(K[0, 0]))
    else:
        xy = pc[:, :2] / pc[:, 2:3].clamp_min(1e-6) * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2]
        view = torch.nn.functional.normalize(pc, dim=-1)
        foot = pc[:, 2].clamp_min(1e-6) / float(K[0, 0])
    cos = -(N @ R.T * view).sum(-1)                                          # > 0: faces the camera
    H, W = raster.face.shape
    px = xy[:, 0].floor().long()
    py = xy[:, 1].floor().long()
    ok = (px >= 0) & (px < W) & (py >= 0) & (py < H) & (pc[:, 2] > 0) & (cos > min_cos)
    pxc, pyc = px.clamp(0, W - 1), py.clamp(0, H - 1)
    # bilinear sampling reads the 2x2 pixels around the point: all of them must show this object
    # (and lie in its mask), so no colour of an occluder or of the background leaks in
    bx, by = (xy[:, 0] - 0.5).floor().long(), (xy[:, 1] - 0.5).floor().long()
    for dx in (0, 1):
        for dy in (0, 1):
            qx, qy = (bx + dx).clamp(0, W - 1), (by + dy).clamp(0, H - 1)
            ok &= raster.obj[qy, qx] == obj_index
            if mask is not None:
                ok &= mask[qy, qx]
    tol = depth_tol * foot * (1.0 + 1.0 / cos.clamp_min(min_cos))
    ok &= (raster.depth[pyc, pxc] - pc[:, 2]).abs() <= tol
    C = image.shape[-1]
    colour = torch.zeros(T * T, C)
    vis = torch.zeros(T * T, dtype=torch.bool)
    cs = torch.zeros(T * T)
    sel = idx[ok]
    colour[sel] = _bilinear(image, xy[ok])
    vis[sel] = True
    cs[sel] = cos[ok]
    return colour.view(T, T, C), vis.view(T, T), cs.view(T, T)


def render_scene(camera: Camera, vertices: list, faces: list) -> Raster:
    return rasterize(vertices, faces, camera.K, camera.world_to_camera, camera.height, camera.width,
                     ortho=camera.ortho)


def erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink a mask: colours right at the segmentation edge mix object and background."""
    if pixels <= 0:
        return mask
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, iterations=int(pixels), border_value=1)
