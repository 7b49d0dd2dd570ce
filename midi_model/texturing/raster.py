"""Pure-PyTorch triangle rasteriser (CPU and CUDA): face id, barycentrics, depth and normals per pixel.

Coverage is tested at pixel centres (u + 0.5, v + 0.5), scanline by scanline for all triangles at
once (tensor ops, no per-triangle Python loop); the nearest surface wins through one
``scatter_reduce(amin)`` on an int64 key that packs (quantised depth, face id). Barycentrics and depth of the
winning face are then computed exactly per pixel (ray-triangle intersection, perspective-correct).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_FACE_BITS = 25                       # up to 33M faces in one raster call
_DEPTH_LEVELS = (1 << 37) - 1         # 37 bits of depth; 37 + 25 < 63
_EMPTY = torch.iinfo(torch.int64).max
_CHUNK = 1 << 21                      # (triangle, row) or (triangle, pixel) pairs per tensor op


@dataclass
class Raster:
    face: torch.Tensor      # (H, W) int64, index into the concatenated faces, -1 = background
    obj: torch.Tensor       # (H, W) int64, object index, -1 = background
    bary: torch.Tensor      # (H, W, 3) float32, perspective-correct barycentrics of the face
    depth: torch.Tensor     # (H, W) float32, camera z (OpenCV), inf = background
    normal: torch.Tensor    # (H, W, 3) float32, geometric face normal in camera axes, 0 = background
    face_offsets: list      # first global face index of each object

    @property
    def mask(self) -> torch.Tensor:
        return self.face >= 0

    def local_face(self) -> torch.Tensor:
        """Face index within its own object (-1 = background)."""
        off = torch.as_tensor(self.face_offsets, device=self.face.device)
        return torch.where(self.face >= 0, self.face - off[self.obj.clamp_min(0)], self.face)

    def interpolate(self, attr: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Per-vertex attribute (V, C) of the concatenated meshes -> (H, W, C), 0 on background."""
        f = faces[self.face.clamp_min(0)]                                   # (H, W, 3)
        out = (attr[f] * self.bary[..., None]).sum(-2)
        return out * self.mask[..., None]


def concat_meshes(vertices: list, faces: list, device=None, dtype=torch.float32):
    """Lists of (V_i, 3) / (F_i, 3) -> one vertex array, one face array, object id per face, offsets."""
    vs, fs, ids, offs = [], [], [], []
    nv = nf = 0
    for i, (v, f) in enumerate(zip(vertices, faces)):
        v = torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v, dtype=dtype, device=device)
        f = torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f, dtype=torch.int64, device=device)
        vs.append(v)
        fs.append(f + nv)
        ids.append(torch.full((len(f),), i, dtype=torch.int64, device=device))
        offs.append(nf)
        nv += len(v)
        nf += len(f)
    return torch.cat(vs), torch.cat(fs), torch.cat(ids), offs


def _groups(counts: torch.Tensor):
    """counts (N,) -> (owner index per item, position within its group) for sum(counts) items."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    start = torch.cumsum(counts, 0) - counts
    return owner, torch.arange(len(owner), device=counts.device) - start[owner]


def _chunks(counts: torch.Tensor, budget: int):
    """Split 0..N into consecutive ranges whose counts sum to about ``budget``."""
    csum = torch.cumsum(counts, 0)
    i, n = 0, len(counts)
    while i < n:
        base = int(csum[i - 1]) if i else 0
        j = int(torch.searchsorted(csum, base + budget, right=True))
        j = max(j, i + 1)
        yield i, min(j, n)
        i = j


def rasterize_screen(xy: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                     perspective: bool = True) -> torch.Tensor:
    """Screen-space rasterisation: vertex pixel coordinates (V, 2), depth (V,) > 0 -> (H, W) face id (-1 = none).

    Scanline form without a Python loop per triangle: every (triangle, pixel row) pair gets the span
    of pixel centres the triangle covers on that row, and spans are expanded to pixels, so the work
    follows the pixels covered (long thin triangles cost no more than small ones).
    Depth along a triangle is interpolated as 1/z (perspective) or z (orthographic / UV space)."""
    dev = xy.device
    if len(faces) >= (1 << _FACE_BITS):
        raise ValueError(f"{len(faces)} faces: at most {1 << _FACE_BITS} per raster call")
    xy = xy.double()                                                         # spans need exact edges
    tri = xy[faces]                                                          # (F, 3, 2)
    tz = z.double()[faces]                                                   # (F, 3)
    ok = (tz > 0).all(1) & torch.isfinite(tri).all(2).all(1)
    ylo = torch.ceil(tri[..., 1].amin(1) - 0.5).clamp(min=0)
    yhi = torch.floor(tri[..., 1].amax(1) - 0.5).clamp(max=height - 1)
    ok &= (yhi >= ylo) & (tri[..., 0].amax(1) >= 0.5) & (tri[..., 0].amin(1) <= width - 0.5)
    fid = torch.nonzero(ok).squeeze(1)
    zbuf = torch.full((height * width,), _EMPTY, dtype=torch.int64, device=dev)
    if len(fid) == 0:
        return torch.full((height, width), -1, dtype=torch.int64, device=dev)
    zv = tz[fid]
    zmin, zmax = float(zv.min()), float(zv.max())
    qscale = _DEPTH_LEVELS / max(zmax - zmin, 1e-12)
    nrows = (yhi[fid] - ylo[fid] + 1).long()
    for a, b in _chunks(nrows, _CHUNK):
        f_of_row, k = _groups(nrows[a:b])
        f = fid[a:b][f_of_row]                                               # one entry per (face, row)
        yc = ylo[f] + k + 0.5
        t = tri[f]
        x0, x1 = torch.full_like(yc, float("inf")), torch.full_like(yc, -float("inf"))
        for i, j in ((0, 1), (1, 2), (2, 0)):
            ya, yb, xa, xb = t[:, i, 1], t[:, j, 1], t[:, i, 0], t[:, j, 0]
            cross = ((ya - yc) * (yb - yc) <= 0) & (ya != yb)
            x = xa + (yc - ya) * (xb - xa) / torch.where(ya != yb, yb - ya, torch.ones_like(ya))
            x0 = torch.where(cross, torch.minimum(x0, x), x0)
            x1 = torch.where(cross, torch.maximum(x1, x), x1)
        plo = torch.ceil(x0 - 0.5).clamp(min=0)
        phi = torch.floor(x1 - 0.5).clamp(max=width - 1)
        npx = (phi - plo + 1).clamp(min=0).nan_to_num(0).long()
        npx = torch.where(torch.isfinite(x0) & torch.isfinite(x1), npx, torch.zeros_like(npx))
        for c, d in _chunks(npx, _CHUNK):
            row, kk = _groups(npx[c:d])
            row = row + c
            ff = f[row]
            px = (plo[row] + kk).long()
            py = (yc[row] - 0.5).long()
            tt = tri[ff]
            cx, cy = px.double() + 0.5, py.double() + 0.5
            x0_, y0_, x1_, y1_, x2_, y2_ = (tt[:, i, j] for i in range(3) for j in range(2))
            area = (x1_ - x0_) * (y2_ - y0_) - (x2_ - x0_) * (y1_ - y0_)
            area = torch.where(area.abs() < 1e-300, torch.full_like(area, 1e-300), area)
            b0 = ((x1_ - cx) * (y2_ - cy) - (x2_ - cx) * (y1_ - cy)) / area
            b1 = ((x2_ - cx) * (y0_ - cy) - (x0_ - cx) * (y2_ - cy)) / area
            b2 = 1 - b0 - b1
            fz = tz[ff]
            if perspective:
                depth = 1.0 / (b0 / fz[:, 0] + b1 / fz[:, 1] + b2 / fz[:, 2])
            else:
                depth = b0 * fz[:, 0] + b1 * fz[:, 1] + b2 * fz[:, 2]
            q = ((depth - zmin) * qscale).nan_to_num(0).clamp(0, _DEPTH_LEVELS).long()
            zbuf.scatter_reduce_(0, py * width + px, (q << _FACE_BITS) | ff, reduce="amin")
    face = torch.where(zbuf == _EMPTY, torch.full_like(zbuf, -1), zbuf & ((1 << _FACE_BITS) - 1))
    return face.view(height, width)


def pixel_rays(height: int, width: int, K: torch.Tensor, ortho: bool, device, dtype=torch.float32):
    """Per-pixel ray origin and direction in camera axes (direction has z = 1)."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                          torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    if ortho:
        return torch.stack([x, y, zero], -1), torch.stack([zero, zero, one], -1)
    return torch.zeros(height, width, 3, device=device, dtype=dtype), torch.stack([x, y, one], -1)


def rasterize(vertices: list, faces: list, K, world_to_camera, height: int, width: int,
              ortho: bool = False, device=None) -> Raster:
    """Render N meshes (world coordinates) through one camera: face id, barycentrics, depth, normals."""
    dev = torch.device(device) if device is not None else (
        vertices[0].device if torch.is_tensor(vertices[0]) else torch.device("cpu"))
    V, F, obj_of_face, offs = concat_meshes(vertices, faces, device=dev)
    K = torch.as_tensor(np.asarray(K) if not torch.is_tensor(K) else K, dtype=torch.float32, device=dev)
    w2c = torch.as_tensor(np.asarray(world_to_camera) if not torch.is_tensor(world_to_camera) else world_to_camera,
                          dtype=torch.float32, device=dev)
    Vc = V @ w2c[:3, :3].T + w2c[:3, 3]
    z = Vc[:, 2]
    if ortho:
        xy = Vc[:, :2] * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])
        z = z - z.min() + 1.0  # orthographic depth only orders surfaces; keep it positive
    else:
        xy = Vc[:, :2] / z.clamp_min(1e-8)[:, None] * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])
    face = rasterize_screen(xy, z, F, height, width, perspective=not ortho)
    return _shade(face, Vc, F, obj_of_face, offs, K, ortho)


def _shade(face, Vc, F, obj_of_face, offs, K, ortho) -> Raster:
    H, W = face.shape
    dev = face.device
    mask = face >= 0
    o, d = pixel_rays(H, W, K, ortho, dev)
    tri = Vc[F[face[mask]]]                                                  # (P, 3, 3)
    o, d = o[mask], d[mask]
    # Moller-Trumbore: hit = o + t d = (1-u-v) a + u b + v c
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = torch.cross(d, e2, dim=-1)
    det = (e1 * p).sum(-1)
    det = torch.where(det.abs() < 1e-20, torch.full_like(det, 1e-20), det)
    s = o - tri[:, 0]
    u = (s * p).sum(-1) / det
    q = torch.cross(s, e1, dim=-1)
    v = (d * q).sum(-1) / det
    t = (e2 * q).sum(-1) / det
    bary = torch.stack([1 - u - v, u, v], -1).clamp(0, 1)
    bary = bary / bary.sum(-1, keepdim=True).clamp_min(1e-12)
    hit = (tri * bary[..., None]).sum(1)
    n = torch.nn.functional.normalize(torch.cross(e1, e2, dim=-1), dim=-1)
    B = torch.zeros(H, W, 3, device=dev)
    B[mask] = bary
    depth = torch.full((H, W), float("inf"), device=dev)
    depth[mask] = hit[:, 2] if not ortho else (o[:, 2] + t)
    N = torch.zeros(H, W, 3, device=dev)
    N[mask] = n
    obj = torch.full((H, W), -1, dtype=torch.int64, device=dev)
    obj[mask] = obj_of_face[face[mask]]
    return Raster(face, obj, B, depth, N, offs)


def screen_barycentrics(xy: torch.Tensor, faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """Affine barycentrics at pixel centres for a face-id image from :func:`rasterize_screen` (UV space)."""
    H, W = face.shape
    v, u = torch.meshgrid(torch.arange(H, device=xy.device, dtype=xy.dtype) + 0.5,
                          torch.arange(W, device=xy.device, dtype=xy.dtype) + 0.5, indexing="ij")
    t = xy[faces[face.clamp_min(0)]]                                         # (H, W, 3, 2)
    e1, e2 = t[..., 1, :] - t[..., 0, :], t[..., 2, :] - t[..., 0, :]
    px, py = u - t[..., 0, 0], v - t[..., 0, 1]
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    det = torch.where(det.abs() < 1e-20, torch.full_like(det, 1e-20), det)
    b1 = (px * e2[..., 1] - py * e2[..., 0]) / det
    b2 = (e1[..., 0] * py - e1[..., 1] * px) / det
    b = torch.stack([1 - b1 - b2, b1, b2], -1).clamp(0, 1)
    b = b / b.sum(-1, keepdim=True).clamp_min(1e-12)
    return b * (face >= 0)[..., None]
